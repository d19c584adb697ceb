"""Denoise: take background noise out of speech (DeepFilterNet3, or RNNoise as the light option),
in an audio file or the sound of a video."""
from __future__ import annotations

from . import model

TITLE = "Denoise"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.tab_unavailable_reason()
