"""Face swap in a video, as a resumable job (engine.media.video_job.process_video): the source
photo's identity is embedded once per attempt (ArcFace; the same photo gives the same embedding, so
a resumed job swaps to the same face), then the video is decoded a chunk of frames at a time; the one
face detector finds each frame's faces (one lease per chunk) and inswapper_128 swaps the chosen ones
(one lease per chunk: interactive calls get both models between chunks). The sound is kept.
One chosen face is one person: picked by its number in the first frame that shows that many faces,
then followed by its ArcFace embedding, as FaceFusion's reference mode does (a face's size rank
changes as people move).

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
from .manifest import ARCFACE, INSWAPPER

VIDEO_JOB = "swap_faces_video"
SOURCE = "source photo"


# FaceFusion's reference mode: a face is the reference person's when (1 - cosine) / 2 of their
# ArcFace embeddings is under its reference_face_distance, 0.3 by default: a cosine over 0.4.
SAME_PERSON = 0.4


def arcface_of(call, frames, faces_per_frame: list[list[dict]]) -> list[np.ndarray]:
    """Each frame's faces' unit ArcFace embeddings ((faces, 512) per frame), in one lease."""
    crops = [[fs.align(frame, face["landmarks"], fs.ARCFACE_112_V2, fs.EMBED_SIZE)[0] for face in faces]
             for frame, faces in zip(frames, faces_per_frame)]

    def embed_all(embedder) -> list[np.ndarray]:
        out = []
        for frame_crops in crops:
            vectors = np.array([embedder.embed(crop) for crop in frame_crops]).reshape(-1, 512)
            out.append(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))
        return out
    return call(ARCFACE.name, embed_all)


class Person:
    """The one person a video job follows: the face numbered `number` (1 = the largest) in the
    first frame that shows that many faces, known by its ArcFace embedding; kept in the job's
    checkpoint so that a resumed job follows the same person."""

    def __init__(self, ctx: JobContext, number: int):
        self.ctx, self.number = ctx, number
        known = ctx.checkpoint.get("person")
        self.embedding = None if known is None else np.asarray(known, np.float32)

    def pick(self, call, frames, found: list[list[dict]]) -> list[list[dict]]:
        """Each frame's faces that are this person (a cosine over SAME_PERSON to the reference)."""
        first = next((i for i, faces in enumerate(found) if len(faces) >= self.number), None)
        if not any(found) or (self.embedding is None and first is None):
            return [[] for _ in found]   # nobody to follow yet: the embedder stays unloaded
        vectors = arcface_of(call, frames, found)
        if self.embedding is None:
            self.embedding = vectors[first][self.number - 1]
            self.ctx.save_checkpoint(person=self.embedding.tolist())
        return [[face for face, v in zip(faces, vs) if float(v @ self.embedding) > SAME_PERSON]
                for faces, vs in zip(found, vectors)]


def swap_frames(call, frames: np.ndarray, embedding: np.ndarray, person: Person | None, colour_match: bool,
                max_pixels: int | None) -> np.ndarray:
    """(N, H, W, 3) frames with every face swapped, or only the person's (person: None for every
    face): the detector leased once for all of them, then the embedder (to know the person) and
    the swapper once each, and the swapper only when some frame has a face to swap."""
    found = call(FACE_DETECTOR, lambda detector: [fs.find_faces(detector, frame, max_pixels) for frame in frames])
    picked = found if person is None else person.pick(call, frames, found)
    if not any(picked):
        return frames

    def swap_all(swapper) -> np.ndarray:
        return np.stack([fs.swap(swapper, frame, faces, embedding, colour_match) if faces else frame
                         for frame, faces in zip(frames, picked)])
    return call(INSWAPPER.name, swap_all)


def video_job(ctx: JobContext) -> str:
    """Job kind swap_faces_video: params which ("every face", or a face's number in the first
    frame that shows that many faces, 1 = the largest: that person is followed through the video
    by identity), colour_match and chunk_frames; inputs 'source' (a photo) and 'video'. The result
    keeps the frame count, size, fps and sound."""
    # Checked again here: a file may have gone since the job was queued.
    missing = fs.problems(ctx.spec(INSWAPPER.name).loader.data_dir)
    if missing:
        raise UserFacingError(missing)
    max_pixels = ctx.spec(FACE_DETECTOR).max_pixels
    source = face_detector.as_rgb(read_image(ctx.input("source"), SOURCE))
    embedding = fs.source_embedding(ctx.call, source, max_pixels)
    which, colour_match = ctx.params.get("which", fs.EVERY), bool(ctx.params.get("colour_match", False))
    person = None if str(which).strip().lower() == fs.EVERY else Person(ctx, int(float(which)))

    def transform(frames: np.ndarray) -> np.ndarray:
        return swap_frames(ctx.call, frames, embedding, person, colour_match, max_pixels)

    return str(process_video(ctx, ctx.input("video"), transform))


def job_kind(check) -> JobKind:
    """check(params, inputs) refuses at submit."""
    return JobKind(VIDEO_JOB, INSWAPPER.name, video_job, check=check)
