"""Face swap in a video, as a resumable job (engine.media.video_job.process_video): the source
photo's identity is embedded once per attempt (ArcFace; the same photo gives the same embedding, so
a resumed job swaps to the same face), then the video is decoded a chunk of frames at a time; the one
face detector finds each frame's faces (one lease per chunk) and inswapper_128 swaps the chosen ones
(one lease per chunk: interactive calls get both models between chunks). The sound is kept.

The job's model is the swapper, so the queue runs face swap jobs one after another while it is
loaded (grouped by model), as it does for any kind.
"""
from __future__ import annotations

import numpy as np

from analysers import face_detector
from analysers.face_detector import FACE_DETECTOR
from engine import JobContext, JobKind, UserFacingError
from engine.media.image import read_image
from engine.media.video_job import process_video

from . import model as fs
from .manifest import INSWAPPER

VIDEO_JOB = "swap_faces_video"
SOURCE = "source photo"


def swap_frames(call, frames: np.ndarray, embedding: np.ndarray, which, colour_match: bool,
                max_pixels: int | None) -> np.ndarray:
    """(N, H, W, 3) frames with the chosen faces of each swapped: the detector leased once for all
    of them, then the swapper once, and only when some frame has a face to swap. A frame with fewer faces
    than the chosen number keeps its faces."""
    found = call(FACE_DETECTOR, lambda detector: [fs.find_faces(detector, frame, max_pixels) for frame in frames])
    if str(which).strip().lower() == fs.EVERY:
        picked = found
    else:
        number = int(float(which))
        picked = [faces[number - 1:number] for faces in found]
    if not any(picked):
        return frames

    def swap_all(swapper) -> np.ndarray:
        return np.stack([fs.swap(swapper, frame, faces, embedding, colour_match) if faces else frame
                         for frame, faces in zip(frames, picked)])
    return call(INSWAPPER.name, swap_all)


def video_job(ctx: JobContext) -> str:
    """Job kind swap_faces_video: params which ("every face" or a face's number, 1 = the largest
    in each frame), colour_match and chunk_frames; inputs 'source' (a photo) and 'video'. The result
    keeps the frame count, size, fps and sound."""
    # Checked again here: a file may have gone since the job was queued.
    missing = fs.problems(ctx.spec(INSWAPPER.name).loader.data_dir)
    if missing:
        raise UserFacingError(missing)
    max_pixels = ctx.spec(FACE_DETECTOR).max_pixels
    source = face_detector.as_rgb(read_image(ctx.input("source"), SOURCE))
    embedding = fs.source_embedding(ctx.call, source, max_pixels)
    which, colour_match = ctx.params.get("which", fs.EVERY), bool(ctx.params.get("colour_match", False))

    def transform(frames: np.ndarray) -> np.ndarray:
        return swap_frames(ctx.call, frames, embedding, which, colour_match, max_pixels)

    return str(process_video(ctx, ctx.input("video"), transform))


def job_kind(check) -> JobKind:
    """check(params, inputs) refuses at submit."""
    return JobKind(VIDEO_JOB, INSWAPPER.name, video_job, check=check)
