"""Search: find, by meaning, what the app has transcribed or read (finished speech-to-text and
read-text jobs, recent transcriptions) and texts the user adds; a hit names its source and time."""
from __future__ import annotations

from pathlib import Path

from engine import JobKind, UserFacingError
from engine.requests import given

from . import model
from .passages import TEXT_SUFFIXES

TITLE = "Search"
GROUP = "Text"  # shown as a sub-tab of Text

MAX_TOP_K = 50
MAX_TEXT_BYTES = 5 * 1024**2   # a book is ~1 MB of text; more is not what this tab is for


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return []


def unavailable() -> str | None:
    return model.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """A search (params "query", "top_k": 1 to 50) or an addition (inputs "text", pasted, and/or
    "file", a .txt, .md or .srt path). Raises UserFacingError saying what is wrong."""
    if "query" in params:
        query = params.get("query")
        if query is not None and not isinstance(query, str):
            raise UserFacingError(f"The query must be text, not {type(query).__name__}.")
        if not (query or "").strip():
            raise UserFacingError("Type what you are looking for first.")
        try:
            top_k = int(params.get("top_k", 5))
        except (TypeError, ValueError):
            raise UserFacingError("The number of results must be a whole number.") from None
        if not 1 <= top_k <= MAX_TOP_K:
            raise UserFacingError(f"The number of results must be between 1 and {MAX_TOP_K}.")
        return
    text, file = inputs.get("text"), inputs.get("file")
    if text is not None and not isinstance(text, str):
        raise UserFacingError(f"The text must be text, not {type(text).__name__}.")
    if not (text or "").strip() and not given(file):
        raise UserFacingError("Paste a text or upload a .txt, .md or .srt file first.")
    if text and len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise UserFacingError("The pasted text is over 5 MB: split it into smaller parts.")
    if given(file):
        path = Path(file)
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise UserFacingError(f"{path.name} is not a .txt, .md or .srt file.")
        if not path.is_file():
            raise UserFacingError("The uploaded file is gone: upload it again.")
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise UserFacingError(f"{path.name} is over 5 MB: split it into smaller files.")
        try:
            path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UserFacingError(f"{path.name} is not UTF-8 text.") from None
