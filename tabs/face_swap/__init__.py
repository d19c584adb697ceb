"""Face swap: the largest face of a source photo put onto every face, or one chosen face, of a
target photo or of every frame of a video (a job), with InsightFace's inswapper_128 fed by its
ArcFace w600k_r50 embedder; faces found by the one face detector, aligned to arcface_128 and pasted
back, optionally colour-matched. Both networks are hub files users
download (tabs/face_swap/manifest.py), non-commercial; without them the tab says which file to
fetch and where to put it."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from analysers import face_detector
from engine import JobKind, UserFacingError
from engine.media.image import read_image
from engine.media.video_job import readable_video
from engine.requests import given

from . import model, video

TITLE = "Swap faces"
GROUP = "People"  # shown as a sub-tab of People, after Restore faces


def specs(data_dir="data") -> list:
    """The swapper and its embedder, their files looked for in data_dir (tabs.catalog passes the engine's)."""
    return model.specs(data_dir)


def hub_files() -> list:
    """The files no package ships (store/manifest.py): the store downloads or takes them."""
    return list(model.ENTRIES.values())


def job_kinds(data_dir: str | os.PathLike | None = None) -> list[JobKind]:
    """swap_faces_video, grouped by the swapper. With data_dir (where the engine's specs look for
    the files), a missing or unusable file refuses the job at submit; without it, the tab's handler
    says so and the job itself at its start."""
    return [video.job_kind(functools.partial(_check_job, data_dir))]


def _check_job(data_dir, params: dict, inputs: dict) -> None:
    check(params, {"source": inputs.get("source"), "video": inputs.get("video")})
    if data_dir is not None and (missing := model.problems(data_dir)):
        raise UserFacingError(missing)


def unavailable() -> str | None:
    """Only what the code needs (the detector's weights): missing hub files are said in the tab,
    which stays usable so that they can be brought while the app runs."""
    return face_detector.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """One swap: params which ("every face", or the number of one target face, 1 = the largest;
    default "every face"); inputs "source" and "target", RGB arrays, or for a video job "source"
    and "video", files (read now: a file that is not a picture or a video is refused before it
    queues)."""
    targets = (("video", "a video"),) if "video" in inputs else (("target", "a target photo"),)
    for key, what in (("source", "a source photo (the face to put in)"),) + targets:
        image = inputs.get(key)
        if not given(image):
            raise UserFacingError(f"Upload {what} first.")
        if key == "video":
            readable_video({"video": Path(image)})
        elif isinstance(image, (str, Path)):
            read_image(image, video.SOURCE)
        elif np.ndim(image) < 2 or 0 in np.shape(image)[:2]:
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
