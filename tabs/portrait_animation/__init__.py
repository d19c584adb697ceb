"""Portrait animation: a portrait photo takes the head pose and expression of a driving photo, or
moves as the face in a driving video moves (a job), with LivePortrait's four networks (FaceFusion's
ONNX exports: feature extractor, motion extractor, stitcher, generator; MIT), faces found by the
one face detector. The networks are hub files users download (tabs/portrait_animation/manifest.py);
without them the tab says which files to fetch and where to put them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from analysers import face_detector
from engine import JobKind, UserFacingError
from engine.media.video_job import readable_video
from engine.requests import given

from . import model, video

TITLE = "Animate portrait"
GROUP = "People"  # shown as a sub-tab of People, after Lip sync


def specs(data_dir="data") -> list:
    """The four networks, their files looked for in data_dir (tabs.catalog passes the engine's)."""
    return model.specs(data_dir)


def hub_files() -> list:
    """The files no package ships (store/manifest.py): the store downloads or takes them."""
    return list(model.ENTRIES.values())


def job_kinds(data_dir: str | os.PathLike | None = None) -> list[JobKind]:
    """animate_portrait_video, its model the generator. With data_dir (where the engine's specs
    look for the files), a missing or unusable file refuses the job at submit; without it, the
    tab's handler says so and the job itself at its start."""
    def check_job(params: dict, inputs: dict) -> None:
        check(params, inputs)
        if data_dir is not None:
            missing = model.problems(data_dir)
            if missing:
                raise UserFacingError(missing)
    return [video.job_kind(check_job)]


def unavailable() -> str | None:
    """Only what the code needs (the detector's weights): missing hub files are said in the tab,
    which stays usable so that they can be brought while the app runs."""
    return face_detector.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """One animation: inputs "image" (the portrait, an RGB array) and "driving" (a photo, an RGB
    array); or, for a video job, "portrait" (a picture file) and "video" (the driving video, read
    now: a file that is not a video is refused before it queues). No params."""
    if "video" in inputs:
        portrait = inputs.get("portrait")
        if not given(portrait):
            raise UserFacingError("Upload a portrait photo first.")
        if isinstance(portrait, (str, os.PathLike)):
            video.read_portrait(Path(portrait))
        if not given(inputs["video"]):
            raise UserFacingError("Upload a driving video first.")
        readable_video({"video": Path(inputs["video"])})
        return
    for key, what in (("image", "a portrait photo"), ("driving", "a driving photo (the face whose pose and "
                                                                 "expression the portrait takes)")):
        image = inputs.get(key)
        if not given(image):
            raise UserFacingError(f"Upload {what} first.")
        if np.ndim(image) < 2 or 0 in np.shape(image)[:2]:
            raise UserFacingError(f"The {'portrait' if key == 'image' else 'driving'} photo is empty.")
