"""Upscale: enlarge images x2 or x4 with Real-ESRGAN, and videos with its fast model (as a job)."""
from __future__ import annotations

import numpy as np

from engine import JobKind, UserFacingError
from engine.media.video import probe
from engine.media.video_job import readable_video
from engine.requests import given

from . import model

TITLE = "Upscale"
GROUP = "Images"  # shown as a sub-tab of Images
VIDEO_JOB = "upscale_video"


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(VIDEO_JOB, model.UPSCALE_FAST, model.video_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def prepare() -> dict:
    """Set-up's hook (tabs.warmup): export both nets to ONNX now, or find them in the compile
    cache, so the first request does not pay it. See model.prepare."""
    return model.prepare()


def check(params: dict, inputs: dict) -> None:
    """One upscale request: params scale (2|4, default 2) and model ("fast" or "x4plus", default
    "fast"); inputs "image" (an RGB array) or "video" (a file, fast model only). Refuses what
    could not run: no input, another scale or model, a result too large."""
    video = "video" in inputs
    source = inputs.get("video" if video else "image")
    if not given(source):
        raise UserFacingError(f"Upload {'a video' if video else 'an image'} first.")
    try:
        scale = int(params.get("scale", 2))
    except (TypeError, ValueError):
        scale = None
    if scale not in model.SCALES:
        raise UserFacingError("Scale must be 2 or 4.")
    name = params.get("model", "fast")
    if video:
        if name != "fast":
            raise UserFacingError("Videos are upscaled with the fast model only; x4plus is for images "
                                  "(it takes seconds per small tile on the CPU).")
        readable_video(inputs)
        info = probe(inputs["video"])   # answered from memory: readable_video has just probed it
        _refuse_beyond_4k(info.width, info.height, scale)
        return
    if name not in model.MODELS:
        raise UserFacingError(f"Model must be one of {', '.join(model.MODELS)}.")
    height, width = np.asarray(source).shape[:2]
    if width * height * scale * scale > model.MAX_OUTPUT_PIXELS:
        # Larger outputs are refused, not shrunk: an upscaler that shrinks its input first is pointless.
        raise UserFacingError(f"This image is too large: the result would be {width * scale}x{height * scale} "
                              f"px; the limit is {model.MAX_OUTPUT_PIXELS // 10**6} megapixels: use a "
                              "smaller image or scale.")


def _refuse_beyond_4k(width: int, height: int, scale: int) -> None:
    """Upscaled frames may be at most 4K (3840x2160), in either orientation."""
    max_long, max_short = model.MAX_VIDEO_SIDES
    if max(width, height) * scale > max_long or min(width, height) * scale > max_short:
        raise UserFacingError(f"This video is too large: a {width}x{height} video upscaled x{scale} would be "
                              f"{width * scale}x{height * scale}; videos are capped at 4K "
                              f"({max_long}x{max_short}): use a smaller video or scale.")
