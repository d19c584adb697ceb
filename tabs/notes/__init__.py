"""Notes: music to MIDI with Spotify's Basic Pitch: the notes played (polyphonic: chords too) in
an audio file or a video's sound, as a list, a MIDI file and a piano roll."""
from __future__ import annotations

import os

from engine import JobKind, ModelSpec, UserFacingError
from engine.media.audio import probe_audio
from engine.requests import given

from . import model

TITLE = "Notes (audio to MIDI)"
GROUP = "Audio"  # shown as a sub-tab of Audio

MAX_NOTE_MS = 2000.0


def specs() -> list[ModelSpec]:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(model.NOTES_LONG, model.NOTES_MODEL, model.notes_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def _number(params: dict, name: str) -> float | None:
    """params[name] as a number; None when absent (the package's default applies)."""
    if params.get(name) is None:
        return None
    try:
        return float(params[name])
    except (TypeError, ValueError):
        return float("nan")


def check(params: dict, inputs: dict) -> None:
    """A request to transcribe notes, refused with a plain UserFacingError when it could not run.

    params: onset_threshold and frame_threshold (between 0 and 1, not 0 or 1; defaults 0.5 and
    0.3, the package's), min_note_ms (0 to 2000; default 127.7). inputs: audio, a file that holds
    audio (an audio file or a video with sound).
    """
    audio = inputs.get("audio")
    if not given(audio):
        raise UserFacingError("Upload an audio or video file first.")
    for name, label in (("onset_threshold", "onset threshold"), ("frame_threshold", "frame threshold")):
        value = _number(params, name)
        if value is not None and not 0.0 < value < 1.0:
            raise UserFacingError(f"The {label} must be between 0 and 1, not {params[name]}.")
    length = _number(params, "min_note_ms")
    if length is not None and not 0.0 <= length <= MAX_NOTE_MS:
        raise UserFacingError(f"The minimum note length must be between 0 and {MAX_NOTE_MS:g} ms, "
                              f"not {params['min_note_ms']}.")
    if not isinstance(audio, (str, os.PathLike)):
        raise UserFacingError("Give the audio as a file (an audio file, or a video with sound).")
    probe_audio(audio)   # a MediaError is a UserFacingError: its message is for the user
