"""Text to speech: a natural US English voice (Piper en_US-joe-medium), speed control; long text
runs as a job on the queue."""
from __future__ import annotations

from . import model

TITLE = "Text to speech"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
