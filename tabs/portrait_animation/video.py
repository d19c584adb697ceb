"""Portrait animation driven by a video, as a resumable job (engine.media.video_job.process_video):
the driving video is decoded a chunk of frames at a time, and each frame gives one frame of the
portrait, at the portrait's size, moved as the driving face moved since the video's first frame
(LivePortrait's relative motion, motion.relative). The driving video's sound is kept.

Per job, once: the portrait's face, feature volume and motion, and the first driving frame's
motion (the neutral every later frame is measured against). They are kept in the job's folder
(portrait.npz) so that a resumed job, which starts at a later chunk and never sees frame 0 again,
uses exactly the numbers the first attempt used; were the file gone, the same inputs through the
same graphs give the same numbers again.
Per chunk: the face detector (one lease) finds the driving faces, the motion extractor (one
lease) reads them, then the stitcher and the generator (one lease each) draw the portrait. A
driving frame with no face found keeps the neutral: the portrait as it is.

One job kind, its model the generator: the queue runs portrait jobs one after another while the
222 MB network is loaded (grouped by model), as it does for any kind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from analysers import face_align
from analysers.face_detector import FACE_DETECTOR
from engine import JobContext, JobKind, UserFacingError
from engine.files import atomic_write
from engine.media.image import read_image
from engine.media.video import read_chunks
from engine.media.video_job import process_video

from . import model, motion
from .manifest import GENERATOR

VIDEO_JOB = "animate_portrait_video"
CACHE = "portrait.npz"


def read_portrait(path: str | Path) -> np.ndarray:
    """The portrait file as uint8 RGB, upright as shot; a file that is no picture, or one over the
    pixel limit, gets the plain error every image input gives (engine.media.image)."""
    return read_image(path, "portrait")


def first_frame(video: Path) -> np.ndarray:
    for _, frames in read_chunks(video, 1):
        return frames[0]
    raise UserFacingError("The driving video has no frame.")


def prepare(call, portrait_file: Path, video: Path, max_pixels: int | None) -> tuple[model.Portrait, motion.Motion]:
    """The portrait (face, volume, motion) and the driving video's neutral (frame 0's motion)."""
    image = read_portrait(portrait_file)
    start = first_frame(video)
    found = call(FACE_DETECTOR, lambda d: (face_align.find_faces(d, image, max_pixels),
                                            face_align.find_faces(d, start, max_pixels)))
    if not found[0]:
        raise UserFacingError(f"No face was found in the portrait. {model.NOT_FOUND}")
    if not found[1]:
        raise UserFacingError("No face was found in the driving video's first frame. The first frame sets the "
                              "neutral pose every later frame is measured against: trim the video so that it "
                              f"starts on a face. {model.NOT_FOUND}")
    portrait = model.prepare_portrait(call, image, found[0][0]["landmarks"])
    crop, _ = model.face_crop(start, found[1][0]["landmarks"])
    neutral = call(model.MOTION_EXTRACTOR.name, lambda g: model.extract_motion(g, crop))
    return portrait, neutral


def save(path: Path, portrait: model.Portrait, neutral: motion.Motion) -> None:
    with atomic_write(path, suffix=".npz") as tmp:
        np.savez(tmp, volume=portrait.volume, matrix=portrait.matrix,
                 **portrait.motion.to_arrays("portrait"), **neutral.to_arrays("neutral"))


def load(path: Path, image: np.ndarray) -> tuple[model.Portrait, motion.Motion]:
    with np.load(path) as arrays:
        portrait = model.Portrait(image, np.array(arrays["matrix"]), np.array(arrays["volume"]),
                                  motion.Motion.from_arrays(arrays, "portrait"))
        return portrait, motion.Motion.from_arrays(arrays, "neutral")


def portrait_of(ctx: JobContext, max_pixels: int | None) -> tuple[model.Portrait, motion.Motion]:
    """prepare() once per job: computed at its first attempt and kept in its folder."""
    cached = ctx.work_dir / CACHE
    if cached.is_file():
        return load(cached, read_portrait(ctx.input("portrait")))
    portrait, neutral = prepare(ctx.call, ctx.input("portrait"), ctx.input("video"), max_pixels)
    save(cached, portrait, neutral)
    return portrait, neutral


def drive(call, portrait: model.Portrait, neutral: motion.Motion, frames: np.ndarray,
          max_pixels: int | None) -> np.ndarray:
    """(N, H, W, 3) driving frames -> (N, h, w, 3) frames of the portrait (h x w its size)."""
    faces = call(FACE_DETECTOR, lambda d: [face_align.find_faces(d, frame, max_pixels) for frame in frames])
    crops = [model.face_crop(frame, found[0]["landmarks"])[0] if found else None
             for frame, found in zip(frames, faces)]
    motions = call(model.MOTION_EXTRACTOR.name,
                   lambda g: [model.extract_motion(g, crop) if crop is not None else None for crop in crops])
    driven = [motion.relative(portrait.motion, found, neutral) if found is not None else portrait.keypoints
              for found in motions]
    return model.render(call, portrait, driven)


def video_job(ctx: JobContext) -> str:
    """Job kind animate_portrait_video: inputs 'portrait' (a picture) and 'video' (the driving
    video); param chunk_frames. The result has the driving video's frames, fps and sound, at the
    portrait's size."""
    # Checked again here: a file may have gone since the job was queued.
    missing = model.problems(ctx.spec(GENERATOR.name).loader.data_dir)
    if missing:
        raise UserFacingError(missing)
    max_pixels = ctx.spec(FACE_DETECTOR).max_pixels
    portrait, neutral = portrait_of(ctx, max_pixels)

    def transform(frames: np.ndarray) -> np.ndarray:
        return drive(ctx.call, portrait, neutral, frames, max_pixels)

    return str(process_video(ctx, ctx.input("video"), transform))


def job_kind(check) -> JobKind:
    """check(params, inputs) refuses at submit."""
    return JobKind(VIDEO_JOB, GENERATOR.name, video_job, check=check)
