"""Style: restyle a photo or a video with one of 26 preset painting styles, or a style taken from
any picture."""
from __future__ import annotations

import os
from pathlib import Path

from engine import JobKind
from engine.media.video_job import readable_video
from engine.requests import given

from . import model
from .model import DEFAULT_STYLE, StyleInputError

TITLE = "Style"
GROUP = "Images"  # shown as a sub-tab of Images


def check(params: dict, inputs: dict) -> None:
    """Refuse a restyling request that cannot run, in plain words (a StyleInputError, which is a
    UserFacingError).

    params: "style" (style 0 when absent). inputs: "image" (an array) or "video" (a file), and
    "style_image" for style "from image" (an array, or a file for a video). Files are read now, so
    a video job is refused at submit rather than after the queue.
    """
    for name, what in (("image", "an image"), ("video", "a video")):
        if name in inputs and not given(inputs[name]):
            raise StyleInputError(f"Upload {what} first.")
    style, style_image = params.get("style", DEFAULT_STYLE), inputs.get("style_image")
    model.check_style(style, given(style_image))
    if "image" in inputs:
        model.rgb_picture(inputs["image"])
    if model.is_from_image(style):
        if isinstance(style_image, (str, os.PathLike)):
            model.read_style_image(style_image)
        else:
            model.rgb_picture(style_image, "style image")
    if "video" in inputs:
        readable_video({"video": Path(inputs["video"])})


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    # The kind's model is the grouping key; "from image" jobs lease style-arbitrary per chunk.
    return [JobKind("stylize_video", model.STYLE_PRESETS, model.video_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()
