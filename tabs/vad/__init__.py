"""Voice activity: where speech is in an audio file or a video's sound (silero-vad), drawn on the
waveform and given as JSON; and the same file with its silences cut out, picture and sound in sync."""
from __future__ import annotations

from . import model

TITLE = "Voice activity"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
