"""Voices: how alike two voices are, and who speaks when in a recording (resemblyzer)."""
from __future__ import annotations

from . import model

TITLE = "Voices"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
