"""Speech to text: English speech from an audio file, a video's soundtrack or the microphone becomes
text, timed segments, SRT and WebVTT subtitles, and a video with subtitles."""
from __future__ import annotations

from . import model

TITLE = "Speech to text"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
