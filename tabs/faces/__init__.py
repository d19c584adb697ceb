"""Faces: detect faces, compare two faces, and hide faces in images and videos (optionally all but
one person's), all with the one shared detector; identity comes from the one face embedder."""
from __future__ import annotations

import os
from pathlib import Path

from analysers import face_detector, face_identity
from engine import JobKind, UserFacingError
from engine.media.image import read_image
from engine.media.video_job import readable_video
from engine.requests import given

from . import anonymize
from .anonymize import MODES
from .people import REFERENCE

TITLE = "Faces"
GROUP = "People"  # shown as a sub-tab of People

# The inputs a request names must be there; how the message names each one.
_REQUIRED = {"image": "an image", "image_1": "photo 1", "image_2": "photo 2", "video": "a video"}


def check(params: dict, inputs: dict) -> None:
    """Refuse a face request that cannot run, in plain words (a UserFacingError).

    params: "mode" when hiding (blur or pixelate). inputs: "image", "image_1" and "image_2"
    (compare), or "video" (a file); to keep one person visible, "reference" (their photo, an array
    or a file). An input named here must be given; a file is read now, not after the queue.
    """
    for name, what in _REQUIRED.items():
        if name in inputs and not given(inputs[name]):
            raise UserFacingError(f"Upload {what} first.")
    if "mode" in params and params["mode"] not in MODES:
        raise UserFacingError(f"Mode must be one of {', '.join(MODES)}, not {params['mode']!r}.")
    reference = inputs.get("reference")
    if reference is not None or "image_1" in inputs:
        reason = face_identity.unavailable_reason()
        if reason:
            raise UserFacingError(f"Face identity is unavailable here. {reason}")
    if isinstance(reference, (str, os.PathLike)):
        read_image(reference, REFERENCE)
    if isinstance(inputs.get("video"), (str, os.PathLike)):
        readable_video({"video": Path(inputs["video"])})


def specs() -> list:
    return []


def job_kinds() -> list[JobKind]:
    return [JobKind("blur_faces_video", face_detector.FACE_DETECTOR, anonymize.video_job, check=check)]


def unavailable() -> str | None:
    return face_detector.unavailable_reason()
