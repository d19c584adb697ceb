"""Upscale: enlarge images x2 or x4 with Real-ESRGAN, and videos with its fast model (as a job)."""
from __future__ import annotations

from . import model

TITLE = "Upscale"
GROUP = None


def specs() -> list:
    return model.specs()


def job_kinds() -> list:
    return model.job_kinds()


def unavailable() -> str | None:
    return model.unavailable_reason()
