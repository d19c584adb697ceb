"""Pitch: the F0 curve of a voice or an instrument (swift-f0), its median as a note, and the held
notes, from an audio file, a video's sound or the microphone."""
from __future__ import annotations

from . import model

TITLE = "Pitch"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
