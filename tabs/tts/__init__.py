"""Text to speech: a natural US English voice (Piper en_US-joe-medium), speed control; long text
runs as a job on the queue."""
from __future__ import annotations

from engine import JobKind

from . import model

TITLE = "Text to speech"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(model.SPEAK_LONG, model.TTS_PIPER, model.speak_long_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """A speech request: params speed (0.5 to 2, default 1) and text (up to 200,000 characters
    with something in it to speak; espeak-ng decides that). Raises model.TTSInputError (a
    UserFacingError) saying what is wrong."""
    speed = params.get("speed", 1.0)
    try:
        speed = float(speed)
    except (TypeError, ValueError):
        raise model.TTSInputError(f"Speed must be a number from {model.MIN_SPEED:g} to {model.MAX_SPEED:g}.") from None
    if not model.MIN_SPEED <= speed <= model.MAX_SPEED:
        raise model.TTSInputError(f"Speed must be from {model.MIN_SPEED:g} to {model.MAX_SPEED:g}, not {speed:g}.")
    model.plan(params.get("text"))
