"""Read text: find and read printed text in images, and turn the text shown in a video into subtitles."""
from __future__ import annotations

import numpy as np

from engine import JobKind, UserFacingError
from engine.media.video_job import readable_video

from . import model

TITLE = "Read text"
GROUP = "Text"  # shown as a sub-tab of Text


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(model.VIDEO_JOB, model.OCR, model.video_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """One OCR request: inputs "image" (an array of at least 2x2 px), or "video" (a file) with
    params samples_per_second (0.25 to 10, default 2)."""
    if "video" not in inputs:
        image = inputs.get("image")
        if image is None:
            raise UserFacingError("Upload an image first.")
        if np.ndim(image) < 2 or min(np.shape(image)[:2]) < 2:
            raise UserFacingError("The image is too small to read.")
        return
    if not inputs["video"]:
        raise UserFacingError("Upload a video first.")
    rate = params.get("samples_per_second")
    try:
        rate = model.DEFAULT_SAMPLES_PER_SECOND if rate is None else float(rate)
    except (TypeError, ValueError):
        raise UserFacingError("Samples per second must be a number.") from None
    if not model.MIN_SAMPLES_PER_SECOND <= rate <= model.MAX_SAMPLES_PER_SECOND:
        raise UserFacingError(f"Samples per second must be between {model.MIN_SAMPLES_PER_SECOND:g} "
                              f"and {model.MAX_SAMPLES_PER_SECOND:g}.")
    readable_video(inputs)
