"""Document layout: which way up a photographed or scanned page is (turned upright when it is not),
and its layout regions: text, title, figure, table, captions, header, footer, reference, equation."""
from __future__ import annotations

from engine import JobKind

from . import model, page

TITLE = "Document layout"
GROUP = "Text"  # shown as a sub-tab of Text


def specs() -> list:
    return model.specs()


def job_kinds() -> list[JobKind]:
    return []   # one page takes well under a second: no job, no video


def unavailable() -> str | None:
    return model.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """One page request: inputs "image" (a gray, RGB or RGBA uint8 array, both sides at least
    16 px); params "min_score" (0.05 to 0.95, default 0.5). Raises DocumentInputError (a
    UserFacingError) in plain words."""
    model.page_rgb(inputs.get("image"))
    page.check_min_score(params.get("min_score", model.DEFAULT_MIN_SCORE))
