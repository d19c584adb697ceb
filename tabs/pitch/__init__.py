"""Pitch: the F0 curve of a voice or an instrument (swift-f0), its median as a note, and the held
notes, from an audio file, a video's sound or the microphone."""
from __future__ import annotations

import os

import numpy as np

from engine import JobKind, ModelSpec, UserFacingError
from engine.media.audio import probe_audio
from engine.requests import given

from .model import PITCH_LONG, PITCH_MODEL, VOICED, pitch_job, unavailable_reason
from .model import specs as _specs

TITLE = "Pitch"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list[ModelSpec]:
    return _specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(PITCH_LONG, PITCH_MODEL, pitch_job, check=check)]


def unavailable() -> str | None:
    return unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """A pitch request, refused with a plain UserFacingError when it could not run.

    params: voicing (between 0 and 1, default 0.5), sr (the sample rate of samples given as an
    array: a positive whole number). inputs: audio, a file that holds audio (an audio file or a
    video with sound), or samples (mono, or stereo as (n, channels)).
    """
    audio = inputs.get("audio")
    if not given(audio):
        raise UserFacingError("Upload an audio or video file first.")
    voicing = params.get("voicing", VOICED)
    try:
        in_range = 0.0 < float(voicing) < 1.0
    except (TypeError, ValueError):
        in_range = False
    if not in_range:
        raise UserFacingError(f"The voicing threshold must be between 0 and 1, not {voicing}.")
    if isinstance(audio, (str, os.PathLike)):
        probe_audio(audio)   # a MediaError is a UserFacingError: its message is for the user
        return
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim not in (1, 2) or samples.size == 0:
        raise UserFacingError("The audio is empty.")
    if not np.isfinite(samples).all():
        raise UserFacingError("The audio holds invalid (non-finite) samples.")
    sr = params.get("sr")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise UserFacingError(f"The sample rate must be a positive whole number, not {sr}.")
