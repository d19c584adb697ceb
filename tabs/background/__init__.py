"""Background: find the person in a photo or a video and make the rest transparent, blurred, one
colour, or another picture (MediaPipe selfie segmentation)."""
from __future__ import annotations

import os
from pathlib import Path

from engine import JobKind
from engine.media.video_job import readable_video
from engine.requests import given

from . import model
from .model import BLUR, COLOR, IMAGE, BackgroundInputError

TITLE = "Background"
GROUP = "Images"  # shown as a sub-tab of Images


def check(params: dict, inputs: dict) -> None:
    """Refuse a background request that cannot run, in plain words (a BackgroundInputError, which
    is a UserFacingError).

    params: "mode" (blur when absent) and "color". inputs: "image" (an array) or "video" (a file),
    and "background" for mode image (an array, or a file for a video). Files are read now, so a
    video job is refused at submit rather than after the queue.
    """
    video = "video" in inputs
    if video and not inputs["video"]:
        raise BackgroundInputError("Upload a video first.")
    background = inputs.get("background")
    has_background = given(background)
    mode = model.check_mode(params.get("mode", BLUR), has_background, video=video)
    if "image" in inputs:
        model.split_alpha(inputs["image"])
    if mode == COLOR or video:   # a video job keeps its colour among its params, whatever the mode
        model.parse_color(params.get("color"))
    if mode == IMAGE:
        if isinstance(background, (str, os.PathLike)):
            model.read_background(background)
        else:
            model.split_alpha(background, "background image")
    if video:
        readable_video({"video": Path(inputs["video"])})


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind("remove_background_video", model.SEGMENTER, model.video_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def prepare() -> dict:
    """Set-up's hook (not part of the contract): export the segmenter to ONNX now, or find it in the
    compile cache, so the first request does not pay it. See model.prepare."""
    return model.prepare()
