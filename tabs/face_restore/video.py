"""Face restoration in a video, as a resumable job (engine.media.video_job.process_video): the video
is decoded a chunk of frames at a time; the one face detector finds each frame's faces (one lease
per chunk), then the chosen restorer, GFPGAN 1.4 or CodeFormer with its fidelity weight, restores
them and pastes them back (one lease per chunk: interactive calls get both models between chunks).
Each chunk becomes a segment on disk before the checkpoint counts it; the sound is put back at the end.

One job kind per restorer, its model the restorer's engine name, so the queue runs the jobs of one
restorer one after another while it is loaded (grouped by model), as it does for any kind.
"""
from __future__ import annotations

import functools

import numpy as np

from analysers.face_detector import FACE_DETECTOR
from engine import JobContext, JobKind, UserFacingError
from engine.media.video_job import process_video

from . import model as fr
from .manifest import ENTRIES

VIDEO_JOB_PREFIX = "restore_faces_video:"


def kind_name(model_name: str) -> str:
    """The job kind of a restorer, from the tab's choice ("CodeFormer") or its engine name."""
    return VIDEO_JOB_PREFIX + fr.entry_named(model_name).name


def label_of(model_name: str) -> str:
    """The name the tab shows ("GFPGAN 1.4") for a choice or an engine name ("gfpgan-1.4")."""
    entry = fr.entry_named(model_name)
    return next(label for label, e in ENTRIES.items() if e is entry)


def restore_frames(call, frames: np.ndarray, model_name: str, fidelity: float,
                   max_pixels: int | None) -> np.ndarray:
    """(N, H, W, 3) frames with every face restored: the detector leased once for all of them,
    then the restorer once, and only when some frame has a face (a chunk without faces does not
    load a 340 MB network)."""
    faces = call(FACE_DETECTOR, lambda detector: [fr.find_faces(detector, frame, max_pixels) for frame in frames])
    if not any(faces):
        return frames

    def restore_all(restorer) -> np.ndarray:
        return np.stack([fr.restore(restorer, frame, found, fidelity) if found else frame
                         for frame, found in zip(frames, faces)])
    return call(fr.entry_named(model_name).name, restore_all)


def video_job(model_name: str, ctx: JobContext) -> str:
    """Job kind restore_faces_video:<restorer>: params fidelity (CodeFormer's w, 0 to 1) and
    chunk_frames; input 'video'. The result keeps the frame count, size, fps and sound."""
    entry = fr.entry_named(model_name)
    # Checked again here: the file may have gone since the job was queued; said in a line, not
    # with the loader's whole how-to.
    missing = fr.problem(ctx.spec(entry.name).loader.data_dir, entry, label_of(entry.name))
    if missing:
        raise UserFacingError(missing)
    fidelity = float(ctx.params.get("fidelity", fr.DEFAULT_FIDELITY))
    max_pixels = ctx.spec(FACE_DETECTOR).max_pixels

    def transform(frames: np.ndarray) -> np.ndarray:
        return restore_frames(ctx.call, frames, entry.name, fidelity, max_pixels)

    return str(process_video(ctx, ctx.input("video"), transform))


def job_kinds(check) -> list[JobKind]:
    """One kind per restorer; check(model_name, params, inputs) refuses at submit."""
    return [JobKind(kind_name(label), entry.name, functools.partial(video_job, entry.name),
                    check=functools.partial(check, label)) for label, entry in ENTRIES.items()]
