"""NSFW check: how likely an image is pornographic, per Yahoo's Open-NSFW classifier (the shared
analyser analysers.nsfw, which also gates images on public links)."""
from __future__ import annotations

import numpy as np

from analysers import nsfw
from engine import UserFacingError

TITLE = "NSFW check"
GROUP = "Images"  # shown as a sub-tab of Images


def specs() -> list:
    return []   # the classifier is a shared analyser: its spec is declared in analysers.nsfw


def job_kinds() -> list:
    return []


def unavailable() -> str | None:
    return nsfw.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """One NSFW check: inputs "image", a non-empty image array; no params."""
    image = inputs.get("image")
    if image is None:
        raise UserFacingError("Upload an image first.")
    if np.ndim(image) < 2 or 0 in np.shape(image)[:2]:
        raise UserFacingError("This image is empty.")
