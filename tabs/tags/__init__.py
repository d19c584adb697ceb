"""Music tags: genres, eras, moods and voices of a piece of music (musicnn, trained on the Million
Song Dataset's 50 most used tags), for the whole piece and every 3 s, from an audio file or a
video's sound."""
from __future__ import annotations

import os

from engine import JobKind, ModelSpec, UserFacingError
from engine.media.audio import probe_audio
from engine.requests import given

from . import model

TITLE = "Music tags"
GROUP = "Audio"  # shown as a sub-tab of Audio

MAX_TOP = 50


def specs() -> list[ModelSpec]:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(model.TAGS_LONG, model.TAGS_MODEL, model.tag_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def prepare() -> dict:
    """Set-up's hook: export the network to ONNX now (or find it in the compile cache)."""
    return model.prepare()


def check(params: dict, inputs: dict) -> None:
    """A tagging request, refused with a plain UserFacingError when it could not run.

    params: top (how many tags to list, a whole number from 1 to 50, default 10).
    inputs: audio, a file that holds audio (an audio file or a video with sound), at least 1 s.
    """
    audio = inputs.get("audio")
    if not given(audio):
        raise UserFacingError("Upload an audio or video file first.")
    top = params.get("top", model.TOP)
    if isinstance(top, float) and top.is_integer():
        top = int(top)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise UserFacingError(f"The number of tags must be a whole number from 1 to {MAX_TOP}, not {top}.")
    if isinstance(audio, (str, os.PathLike)):
        info = probe_audio(audio)  # a MediaError (a UserFacingError) says what is wrong with the file
        if info.duration_s is not None and info.duration_s < model.MIN_SECONDS:
            raise UserFacingError(f"The audio is {info.duration_s:.2f} s long: give at least "
                                  f"{model.MIN_SECONDS:g} s of music to tag.")
