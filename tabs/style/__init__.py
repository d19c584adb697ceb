"""Style: restyle a photo or a video with one of 26 preset painting styles, or a style taken from
any picture."""
from __future__ import annotations

from . import model

TITLE = "Style"
GROUP = None


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
