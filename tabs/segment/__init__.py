"""Segment: click on a picture (or draw a box with two clicks) and get the object's mask with SAM,
ready to download and use as the inpaint mask in the Generate tab."""
from __future__ import annotations

TITLE = "Segment"
GROUP = None


def specs() -> list:
    return []


def job_kinds() -> list:
    return []


def unavailable() -> str | None:
    try:
        import transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed: run ./setup.sh."
    return None
