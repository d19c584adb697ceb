"""Face restoration: GFPGAN v1.4 or CodeFormer (with its fidelity weight) on every face of a photo,
found by the one face detector, aligned to the ffhq_512 template and pasted back. The networks are
hub files users download (tabs/face_restore/manifest.py); without them the tab says which file to
fetch and where to put it."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from analysers import face_detector
from engine import JobKind, UserFacingError
from engine.media.video_job import readable_video
from engine.requests import given

from . import model, video

TITLE = "Restore faces"
GROUP = "People"  # shown as a sub-tab of People, after Faces


def specs(data_dir="data") -> list:
    """The restorers, their files looked for in data_dir (tabs.catalog passes the engine's)."""
    return model.specs(data_dir)


def hub_files() -> list:
    """The files no package ships (store/manifest.py): the store downloads or takes them."""
    return list(model.ENTRIES.values())


def job_kinds(data_dir: str | os.PathLike | None = None) -> list[JobKind]:
    """restore_faces_video:gfpgan-1.4 and restore_faces_video:codeformer, one per restorer so the
    queue groups the jobs by it. With data_dir (where the engine's specs look for the files), a
    missing or unusable file refuses the job at submit; without it, the tab's handler says so
    and the job itself at its start."""
    return video.job_kinds(functools.partial(_check_job, data_dir))


def _check_job(data_dir, model_name: str, params: dict, inputs: dict) -> None:
    check({**params, "model": model_name}, {"video": inputs.get("video")})
    if data_dir is not None:
        missing = model.problem(data_dir, model.entry_named(model_name), video.label_of(model_name))
        if missing:
            raise UserFacingError(missing)


def unavailable() -> str | None:
    """Only what the code needs (the detector's weights): a missing hub file is said in the tab,
    which stays usable so that the file can be brought while the app runs."""
    return face_detector.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """One restoration: params model ("GFPGAN 1.4" or "CodeFormer", default "GFPGAN 1.4") and
    fidelity (0 to 1, CodeFormer only, default 0.5); inputs "image", an RGB array, or "video", a
    file (read now: a file that is not a video is refused before it queues)."""
    if "video" in inputs:
        if not given(inputs["video"]):
            raise UserFacingError("Upload a video first.")
        readable_video({"video": Path(inputs["video"])})
    else:
        image = inputs.get("image")
        if not given(image):
            raise UserFacingError("Upload a photo first.")
        if np.ndim(image) < 2 or 0 in np.shape(image)[:2]:
            raise UserFacingError("This image is empty.")
    model.entry_named(params.get("model", "GFPGAN 1.4"))
    try:
        fidelity = float(params.get("fidelity", model.DEFAULT_FIDELITY))
    except (TypeError, ValueError):
        fidelity = float("nan")
    if not 0.0 <= fidelity <= 1.0:
        raise UserFacingError("Fidelity must be a number from 0 to 1.")
