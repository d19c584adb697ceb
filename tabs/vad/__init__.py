"""Voice activity: where speech is in an audio file or a video's sound (silero-vad), drawn on the
waveform and given as JSON; and the same file with its silences cut out, picture and sound in sync."""
from __future__ import annotations

import os

from engine import JobKind, UserFacingError
from engine.media.audio import probe_audio
from engine.requests import given

from . import cut, model

TITLE = "Voice activity"
GROUP = "Audio"  # shown as a sub-tab of Audio

DETECT_LONG, CUT_LONG = "detect_speech_long", "cut_silence_long"


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(DETECT_LONG, model.VAD_MODEL, model.detect_speech_job, check=check),
            JobKind(CUT_LONG, model.VAD_MODEL, cut.cut_silence_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def _seconds(params: dict, name: str, low: float, high: float) -> None:
    if name not in params:
        return
    try:
        value = float(params[name])
    except (TypeError, ValueError):
        raise UserFacingError(f"{name} must be a number of seconds, not {params[name]!r}.") from None
    if not low <= value <= high:
        raise UserFacingError(f"{name} must be between {low:g} and {high:g} seconds, not {params[name]}.")


def check(params: dict, inputs: dict) -> None:
    """A request to find speech (input 'audio') or to cut the silence out (input 'media'): a file
    with an audio track (or 16 kHz samples), and the settings given in params: threshold (between
    0 and 1), min_speech_s, min_silence_s and pad_s in seconds. Cutting needs min_silence_s of
    0.1 s or more and pad_s of at most 2 s; finding speech splits at pauses from 0.03 s.
    Raises UserFacingError saying what is wrong."""
    cutting = "media" in inputs
    source = inputs.get("media") if cutting else inputs.get("audio")
    if not given(source):
        raise UserFacingError("Upload an audio or video file first.")
    if "threshold" in params:
        try:
            threshold = float(params["threshold"])
        except (TypeError, ValueError):
            threshold = float("nan")
        if not 0.0 < threshold < 1.0:
            raise UserFacingError(f"The threshold must be between 0 and 1, not {params['threshold']}.")
    _seconds(params, "min_speech_s", 0.0, 600)
    _seconds(params, "min_silence_s", 0.1 if cutting else 0.03, 600)
    _seconds(params, "pad_s", 0.0, 2.0 if cutting else 600)
    if isinstance(source, (str, os.PathLike)):
        probe_audio(source)  # a MediaError (a UserFacingError) says what is wrong with the file
