"""Speech to text: English speech from an audio file, a video's soundtrack or the microphone becomes
text, timed segments, SRT and WebVTT subtitles, and a video with subtitles."""
from __future__ import annotations

from engine import JobKind, UserFacingError
from engine.media.audio import probe_audio

from . import long_input, model

TITLE = "Speech to text"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(model.LONG_JOB, model.WHISPER, long_input.long_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """A transcription request: params timestamps ('segment' or 'word', the default) and burn;
    input 'media', a file with an audio track. Raises UserFacingError saying what is wrong."""
    media = inputs.get("media")
    if not media:
        raise UserFacingError("Upload an audio or video file first.")
    timestamps = params.get("timestamps", "segment")
    if timestamps not in model.TIMESTAMPS:
        raise UserFacingError(f"Timestamps must be 'segment' or 'word', not {timestamps!r}.")
    probe_audio(media)  # a MediaError (a UserFacingError) says what is wrong with the file
