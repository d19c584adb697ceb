"""Hands: every hand in a photo or a video, 21 landmarks each, its side (left/right) and a named
gesture, by MediaPipe's palm detector and hand landmarker."""
from __future__ import annotations

from pathlib import Path

from engine import JobKind
from engine.media.video_job import readable_video

from . import model
from .model import HandsInputError
from .video import video_job

TITLE = "Hands"
GROUP = "People"  # shown as a sub-tab of People
VIDEO_JOB = "hands_video"


def check(params: dict, inputs: dict) -> None:
    """Refuse a hands request that cannot run, in plain words (a HandsInputError, which is a
    UserFacingError). params: "min_score" (the palm detector's threshold, 0.05 to 0.95; 0.5 when
    absent). inputs: "image" (an array) or "video" (a file, read now so that a job is refused at
    submit)."""
    model.check_threshold(params.get("min_score"))
    if "video" in inputs:
        if not inputs["video"]:
            raise HandsInputError("Upload a video first.")
        readable_video({"video": Path(inputs["video"])})
    if "image" in inputs:
        model.check_image(inputs["image"])


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(VIDEO_JOB, model.HANDS_MODEL, video_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def prepare() -> dict:
    """Set-up's hook: export both nets to ONNX now, or find them in the compile cache, so that
    the first request does not pay it (model.prepare)."""
    return model.prepare()
