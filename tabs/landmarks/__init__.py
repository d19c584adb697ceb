"""Face landmarks: MediaPipe's 468-point face mesh and iris landmarks on every face the shared
detector finds, with head pose, eye openness and gaze; in photos and, as a job, in videos."""
from __future__ import annotations

from pathlib import Path

from analysers import face_detector
from engine import JobKind, UserFacingError
from engine.media.video_job import readable_video

from . import model
from .faces import check_image
from .model import FACE_MESH
from .video import video_job

TITLE = "Face landmarks"
GROUP = "People"  # shown as a sub-tab of People
VIDEO_JOB = "face_landmarks_video"


def check(params: dict, inputs: dict) -> None:
    """Refuse a landmarks request that cannot run, in plain words (a UserFacingError).
    inputs: "image" (an array) or "video" (a file, read now so that a job is refused at submit)."""
    if "video" in inputs:
        if not inputs["video"]:
            raise UserFacingError("Upload a video first.")
        readable_video({"video": Path(inputs["video"])})
    if "image" in inputs:
        check_image(inputs["image"])


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    # The job leases the detector and the mesh; it is grouped with other mesh jobs.
    return [JobKind(VIDEO_JOB, FACE_MESH, video_job, check=check)]


def unavailable() -> str | None:
    return face_detector.unavailable_reason() or model.unavailable_reason()


def prepare() -> dict:
    """Set-up's hook (not part of the contract): export both nets to ONNX now, or find them in
    the compile cache, so that the first request does not pay it (model.prepare)."""
    return model.prepare()
