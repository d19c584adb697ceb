"""Read text: find and read printed text in images, and turn the text shown in a video into subtitles."""
from __future__ import annotations

from . import model

TITLE = "Read text"
GROUP = None


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
