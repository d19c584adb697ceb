"""Keywords: where chosen words are spoken in an audio file or a video's sound (efficientword-net's
few-shot ResNet-50): the wheel's words (alexa, computer, lights on...) or one the user records."""
from __future__ import annotations

import os

from engine import JobKind, UserFacingError
from engine.media.audio import probe_audio
from engine.requests import given

from . import model

TITLE = "Keywords"
GROUP = "Audio"  # shown as a sub-tab of Audio

MAX_SAMPLE_S = 10.0


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(model.KEYWORDS_LONG, model.KEYWORD_MODEL, model.spot_job, check=check)]


def unavailable() -> str | None:
    return model.unavailable_reason()


def keyword_names(value) -> list[str]:
    """Keywords as a list, from a list or from text separated by commas ('computer, lights on')."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [" ".join(str(item).replace("_", " ").split()).lower() for item in items if str(item).strip()]


def check(params: dict, inputs: dict) -> None:
    """A request to spot keywords, refused with a plain UserFacingError when it could not run.

    params: keywords (names of the bundled words: alexa, balloon, computer, lights off, lights on,
    mobile, mycroft; a list or comma-separated text), threshold (between 0 and 1), step_s
    (0.25-0.75 s), custom_name (the recorded keyword's name). inputs: audio (a file with sound),
    sample_1 .. sample_6 (recordings of the user's own keyword, each at most 10 s).
    At least one keyword: a bundled one or a recorded one.
    """
    if not given(inputs.get("audio")):
        raise UserFacingError("Upload an audio or video file first.")
    names = keyword_names(params.get("keywords"))
    unknown = [n for n in names if n not in model.bundled_names()]
    if unknown:
        raise UserFacingError(f"Unknown keyword {unknown[0]!r}: choose from {', '.join(model.bundled_names())}, "
                              "or record your own.")
    samples = [v for k, v in inputs.items() if k.startswith("sample_") and given(v)]
    if len(samples) > model.MAX_SAMPLES:
        raise UserFacingError(f"Give at most {model.MAX_SAMPLES} recordings of your keyword, not {len(samples)}.")
    if not names and not samples:
        raise UserFacingError("Choose a keyword, or record your own (1 to 6 short recordings of it).")
    for name, low, high in (("threshold", 0.0, 1.0), ("step_s", 0.25, 0.75)):
        if name in params:
            try:
                value = float(params[name])
            except (TypeError, ValueError):
                value = float("nan")
            if not low <= value <= high or (name == "threshold" and value in (low, high)):
                raise UserFacingError(f"{name} must be between {low:g} and {high:g}, not {params[name]}.")
    for path in [inputs["audio"], *samples]:
        if isinstance(path, (str, os.PathLike)):
            info = probe_audio(path)  # a MediaError (a UserFacingError) says what is wrong with the file
            if path is not inputs["audio"] and info.duration_s and info.duration_s > MAX_SAMPLE_S:
                raise UserFacingError(f"A keyword recording must be at most {MAX_SAMPLE_S:g} s long: "
                                      "record the word alone.")
