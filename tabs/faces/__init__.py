"""Faces: detect faces, compare two faces, and hide faces in images and videos (optionally all but
one person's), all with the one shared detector; identity comes from the one face embedder."""
from __future__ import annotations

from analysers import face_detector
from engine import JobKind
from engine.media.video_job import readable_video

from . import anonymize

TITLE = "Faces"
GROUP = None


def specs() -> list:
    return []


def job_kinds() -> list[JobKind]:
    return [JobKind("blur_faces_video", face_detector.FACE_DETECTOR, anonymize.video_job, check=lambda params, inputs: readable_video(inputs))]


def unavailable() -> str | None:
    return face_detector.unavailable_reason()
