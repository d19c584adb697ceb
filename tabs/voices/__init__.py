"""Voices: how alike two voices are, and who speaks when in a recording (resemblyzer)."""
from __future__ import annotations

import os

import numpy as np

from engine import JobKind, ModelSpec, UserFacingError
from engine.media.audio import MediaError, probe_audio
from engine.requests import given, positive

from .model import CHUNK_GRID, DIARIZE_LONG, MAX_SPEAKERS, RATE, VOICE_ENCODER, diarize_job, unavailable_reason
from .model import specs as _specs

TITLE = "Voices"
GROUP = "Audio"  # shown as a sub-tab of Audio

# The recordings a request may name, as a message calls them (None: by no name).
RECORDINGS = {"first": "the first recording", "second": "the second recording", "media": None}


def specs() -> list[ModelSpec]:
    return _specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(DIARIZE_LONG, VOICE_ENCODER, diarize_job, check=check)]


def unavailable() -> str | None:
    return unavailable_reason()


def about(recording: str | None, message: str) -> str:
    """A message about one of two recordings says which: 'The first recording: this file ...'."""
    return f"{recording[0].upper()}{recording[1:]}: {message[:1].lower()}{message[1:]}" if recording else message


def check(params: dict, inputs: dict) -> None:
    """A compare or diarize request, refused with a plain UserFacingError when it could not run.

    params: speakers (diarize: a whole number from 1 to MAX_SPEAKERS), chunk_s (a diarize_long
    job's chunk: a multiple of 0.75 s), sr (the sample rate of samples given as arrays).
    inputs: first and second (compare) or media (diarize), each a file that holds audio (an
    audio file or a video with sound) or samples (mono, or stereo as (n, channels)); an input
    named with None was not given.
    """
    named = [(inputs[name], recording) for name, recording in RECORDINGS.items() if name in inputs]
    for media, recording in named:
        if not given(media):
            raise UserFacingError(f"Upload {recording or 'a recording'} first.")
    if "speakers" in params:
        speakers = params["speakers"]
        try:
            whole = 1 <= int(speakers) <= MAX_SPEAKERS and int(speakers) == float(speakers)
        except (TypeError, ValueError):
            whole = False
        if not whole:
            raise UserFacingError(f"The number of speakers must be a whole number from 1 to {MAX_SPEAKERS}, "
                                  f"not {speakers!r}.")
    if "chunk_s" in params and round(float(params["chunk_s"]) * RATE) % CHUNK_GRID:
        raise UserFacingError(f"chunk_s must be a multiple of 0.75 s, not {params['chunk_s']}.")
    for media, recording in named:
        _check_recording(media, recording, params)


def _check_recording(media, recording: str | None, params: dict) -> None:
    if isinstance(media, (str, os.PathLike)):
        try:
            probe_audio(media)
        except MediaError as exc:
            raise UserFacingError(about(recording, str(exc))) from exc
        return
    samples = np.asarray(media)
    if samples.ndim not in (1, 2):
        raise UserFacingError(f"Expected mono samples, got an array of shape {samples.shape}.")
    if samples.size == 0:
        raise UserFacingError("There is no audio in this recording.")
    if not positive(params.get("sr", RATE)):
        raise UserFacingError(f"The sample rate must be positive, not {params['sr']}.")
