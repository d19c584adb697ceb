"""NSFW check: how likely an image is pornographic, per Yahoo's Open-NSFW classifier."""
from __future__ import annotations

from analysers import nsfw

TITLE = "NSFW check"
GROUP = None


def specs() -> list:
    return []


def job_kinds() -> list:
    return []


def unavailable() -> str | None:
    return nsfw.unavailable_reason()
