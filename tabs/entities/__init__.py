"""Entities: names, places, dates, amounts (named entities), parts of speech and sentence
structure (dependency parse) in English text, with spaCy's en_core_web_sm. For typed text,
transcripts and OCR output alike."""
from __future__ import annotations

from engine import ModelSpec, UserFacingError

from .model import MAX_CHARS, unavailable_reason
from .model import specs as _specs

TITLE = "Entities"
GROUP = "Text"  # shown as a sub-tab of Text


def specs() -> list[ModelSpec]:
    return _specs()


def job_kinds() -> list:
    return []   # the longest text allowed takes seconds: no job needed


def unavailable() -> str | None:
    return unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """An entities request, refused with a plain UserFacingError when it could not run.

    params: text (a string with at least one letter or digit, up to 200,000 characters),
    parse (bool: parts of speech and sentence structure too). No inputs.
    """
    text = params.get("text")
    if text is not None and not isinstance(text, str):
        raise UserFacingError(f"The text must be text, not {type(text).__name__}.")
    if not text or not text.strip():
        raise UserFacingError("Type or paste some English text first.")
    if len(text) > MAX_CHARS:
        raise UserFacingError(f"The text has {len(text):,} characters; at most {MAX_CHARS:,} are read "
                              "at once. Split it into parts.")
    if not any(ch.isalnum() for ch in text):
        raise UserFacingError("The text has no letters or digits: there are no names, places or "
                              "dates to find.")
    parse = params.get("parse", True)
    if not isinstance(parse, bool):
        raise UserFacingError(f"parse must be true or false, not {parse!r}.")
