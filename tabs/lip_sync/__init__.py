"""Lip sync: a face's lips moved to any audio (a recording, any audio file, or the sound of a
video) with Wav2Lip GAN, on a video or a still portrait; the result is a video as long as the
audio, carrying it. The face is the one face detector's largest; the network is a hub file users
download (tabs/lip_sync/manifest.py), non-commercial; without it the tab says which file to fetch
and where to put it. Both inputs run as jobs (tabs/lip_sync/video.py)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

from analysers import face_detector
from engine import JobKind, UserFacingError
from engine.media.image import open_image
from engine.media.video_job import readable_video
from engine.requests import given

from . import mel, model, video

TITLE = "Lip sync"
GROUP = "People"  # shown as a sub-tab of People, after Swap faces


def specs(data_dir="data") -> list:
    """Wav2Lip GAN, its file looked for in data_dir (tabs.catalog passes the engine's)."""
    return model.specs(data_dir)


def hub_files() -> list:
    """The file no package ships (store/manifest.py): the store downloads or takes it."""
    return list(model.ENTRIES.values())


def job_kinds(data_dir: str | os.PathLike | None = None) -> list[JobKind]:
    """lip_sync_video:wav2lip-gan-96 and lip_sync_photo:wav2lip-gan-96, both on Wav2Lip's model so
    the queue groups them. With data_dir, a missing or unusable file refuses the job at submit."""
    return video.job_kinds(functools.partial(_check_job, data_dir, "video"),
                           functools.partial(_check_job, data_dir, "photo"))


def _check_job(data_dir, what: str, params: dict, inputs: dict) -> None:
    check(params, {what: inputs.get(what), "audio": inputs.get("audio")})
    if data_dir is not None:
        missing = model.problem(data_dir)
        if missing:
            raise UserFacingError(missing)


def unavailable() -> str | None:
    """Only what the code needs (the detector's weights): a missing hub file is said in the tab,
    which stays usable so that the file can be brought while the app runs."""
    return face_detector.unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """One lip sync: inputs "video" (a video file) or "photo" (a still portrait, an image file),
    and "audio" (any audio file, or a video whose sound is used). Each is read now, so a file that
    is not what it should be, or audio that is silent or too short, is refused before it queues."""
    if "video" in inputs:
        if not given(inputs["video"]):
            raise UserFacingError("Upload a video first.")
        readable_video({"video": Path(inputs["video"])})
    else:
        if not given(inputs.get("photo")):
            raise UserFacingError("Upload a portrait photo first.")
        open_image(inputs["photo"], "photo")
    if not given(inputs.get("audio")):
        raise UserFacingError("Upload the audio the lips should follow first (any audio file, or a video "
                              "whose sound is used).")
    mel.read_speech(inputs["audio"])
