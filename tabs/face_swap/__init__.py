"""Face swap: the largest face of a source photo put onto every face, or one chosen face, of a
target photo, with InsightFace's inswapper_128 fed by its ArcFace w600k_r50 embedder; faces found by
the one face detector, aligned to arcface_128 and pasted back. Both networks are hub files users
download (tabs/face_swap/manifest.py), non-commercial; without them the tab says which file to
fetch and where to put it."""
from __future__ import annotations

import numpy as np

from analysers import face_detector
from engine import UserFacingError
from engine.requests import given

from . import model

TITLE = "Swap faces"
GROUP = "People"  # shown as a sub-tab of People, after Restore faces


def specs(data_dir="data") -> list:
    """The swapper and its embedder, their files looked for in data_dir (tabs.catalog passes the engine's)."""
    return model.specs(data_dir)


def hub_files() -> list:
    """The files no package ships (store/manifest.py): the store downloads or takes them."""
    return list(model.ENTRIES.values())


def job_kinds(data_dir=None) -> list:
    return []   # photos only for now (data_dir: as tabs.catalog passes it to capabilities with hub files)


def unavailable() -> str | None:
    """Only what the code needs (the detector's weights): missing hub files are said in the tab,
    which stays usable so that they can be brought while the app runs."""
    return face_detector.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """One swap: params which ("every face", or the number of one target face, 1 = the largest;
    default "every face"); inputs "source" and "target", RGB arrays."""
    for key, what in (("source", "a source photo (the face to put in)"), ("target", "a target photo")):
        image = inputs.get(key)
        if not given(image):
            raise UserFacingError(f"Upload {what} first.")
        if np.ndim(image) < 2 or 0 in np.shape(image)[:2]:
            raise UserFacingError(f"The {key} image is empty.")
    which = params.get("which", model.EVERY)
    if str(which).strip().lower() == model.EVERY:
        return
    try:
        number = float(which)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number >= 1 and number == int(number)):
        raise UserFacingError(f"Which face must be \"{model.EVERY}\" or a face's number: 1 (the largest), 2, ...")
