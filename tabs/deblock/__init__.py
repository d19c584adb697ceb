"""Clean up: remove JPEG artefacts and noise from photos (and videos, as a job) with waifu2x's CUNet."""
from __future__ import annotations

import numpy as np

from engine import JobKind, UserFacingError
from engine.media.video import probe
from engine.media.video_job import readable_video
from engine.requests import given

from . import model

TITLE = "Clean up (JPEG, noise)"
GROUP = "Images"  # shown as a sub-tab of Images
VIDEO_JOB = "clean_up_video"
DEFAULT_LEVEL = model.DEFAULT_LEVEL


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(VIDEO_JOB, model.DEBLOCK, model.video_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def prepare() -> dict:
    """Set-up's hook (tabs.warmup): export the four levels' nets to ONNX now, or find them in the
    compile cache, so the first request does not pay it. See model.prepare."""
    return model.prepare()


def level_of(params: dict) -> int:
    """The request's noise level (0-3, default DEFAULT_LEVEL), or a UserFacingError."""
    value = params.get("level", DEFAULT_LEVEL)
    try:
        level = int(value)
    except (TypeError, ValueError):
        level = None
    if level not in model.LEVELS or (isinstance(value, float) and value != level):
        raise UserFacingError("Strength must be 0, 1, 2 or 3 (0: light, 3: strong).")
    return level


def check(params: dict, inputs: dict) -> None:
    """One clean-up request: param level (0-3); input "image" (an RGB array) or "video" (a file).
    Refuses what could not run: no input, another level, a photo over MAX_PIXELS, a video over 4K."""
    video = "video" in inputs
    source = inputs.get("video" if video else "image")
    if not given(source):
        raise UserFacingError(f"Upload {'a video' if video else 'an image'} first.")
    level_of(params)
    if video:
        readable_video(inputs)
        info = probe(inputs["video"])   # answered from memory: readable_video has just probed it
        max_long, max_short = model.MAX_VIDEO_SIDES
        if max(info.width, info.height) > max_long or min(info.width, info.height) > max_short:
            raise UserFacingError(f"This video is {info.width}x{info.height}; videos are capped at 4K "
                                  f"({max_long}x{max_short}): use a smaller video.")
        return
    height, width = np.asarray(source).shape[:2]
    if width * height > model.MAX_PIXELS:
        raise UserFacingError(f"This image is too large ({width}x{height} px); the limit is "
                              f"{model.MAX_PIXELS // 10**6} megapixels: use a smaller image.")
