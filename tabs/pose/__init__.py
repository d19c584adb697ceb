"""Body pose: every person in a photo or a video, 33 body landmarks each, by MediaPipe's pose
detector and pose landmarker (BlazePose full)."""
from __future__ import annotations

from pathlib import Path

from engine import JobKind
from engine.media.video_job import readable_video

from . import model
from .model import PoseInputError
from .video import video_job

TITLE = "Body pose"
GROUP = "People"  # shown as a sub-tab of People
VIDEO_JOB = "body_pose_video"


def check(params: dict, inputs: dict) -> None:
    """Refuse a pose request that cannot run, in plain words (a PoseInputError, which is a
    UserFacingError). params: "min_score" (the detector's threshold, 0.05 to 0.95; 0.5 when
    absent). inputs: "image" (an array) or "video" (a file, read now so that a job is refused at
    submit)."""
    model.check_threshold(params.get("min_score"))
    if "video" in inputs:
        if not inputs["video"]:
            raise PoseInputError("Upload a video first.")
        readable_video({"video": Path(inputs["video"])})
    if "image" in inputs:
        model.check_image(inputs["image"])


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(VIDEO_JOB, model.POSE_MODEL, video_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def prepare() -> dict:
    """Set-up's hook (not part of the contract): export both nets to ONNX now, or find them in
    the compile cache, so that the first request does not pay it (model.prepare)."""
    return model.prepare()
