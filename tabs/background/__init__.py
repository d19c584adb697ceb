"""Background: find the person in a photo or a video and make the rest transparent, blurred, one
colour, or another picture (MediaPipe selfie segmentation)."""
from __future__ import annotations

from . import model

TITLE = "Background"
GROUP = None


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
