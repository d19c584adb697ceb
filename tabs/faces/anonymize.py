"""Hide faces: blur or pixelate each detected face box (with a margin) in RGB images and videos.

Optionally one person stays visible: given the embedding of a reference face, every face whose
embedding lies within face_identity.THRESHOLD of it is left as it is; all others are hidden.
The request (the mode, the inputs) is checked once, by tabs.faces.check, before anything here runs.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from engine import JobContext
from engine.files import save_array
from engine.media.image import read_image
from engine.media.video_job import process_video

from analysers import face_identity
from analysers.face_detector import FACE_DETECTOR

from .people import REFERENCE, Call, reference_embedding
from .tracks import faces_in_frames

_MARGIN = 0.15  # of the box size: the detector's box is tight, hair and ears would show
# A face narrower than this (in the frame's pixels) is always hidden, even when keeping someone:
# with so few pixels different people come out close (25 px LFW faces: 7% of pairs below 0.6).
MIN_KEEP_WIDTH = 40


def _blur(patch: Image.Image) -> Image.Image:
    # Radius scales with the face so a large face is as unreadable as a small one.
    return patch.filter(ImageFilter.GaussianBlur(radius=max(2.0, max(patch.size) / 8)))


def _pixelate(patch: Image.Image) -> Image.Image:
    blocks = max(1, max(patch.size) // 10)  # about ten blocks across the face
    small = patch.resize((max(1, patch.width // blocks), max(1, patch.height // blocks)), Image.BOX)
    return small.resize(patch.size, Image.NEAREST)


HIDERS = {"blur": _blur, "pixelate": _pixelate}
MODES = tuple(HIDERS)


def _region(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * _MARGIN, (y2 - y1) * _MARGIN
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(width, int(np.ceil(x2 + mx))), min(height, int(np.ceil(y2 + my)))
    return (left, top, right, bottom) if right > left and bottom > top else None


def hide_faces(image: np.ndarray, faces: list[dict], mode: str = "blur") -> np.ndarray:
    """A copy of `image` with every face in `faces` (dicts with 'box') hidden the MODES way."""
    hide = HIDERS[mode]
    out = Image.fromarray(image)
    for face in faces:
        region = _region(face["box"], out.width, out.height)
        if region is not None:
            out.paste(hide(out.crop(region)), region[:2])
    return np.asarray(out)


def strangers(embedder, frames: np.ndarray, faces: list[list[dict]], reference: np.ndarray) -> list[list[dict]]:
    """Per frame, the faces that are not the reference person: those at or beyond the threshold,
    and those too small to tell."""
    out = []
    for frame, found in zip(frames, faces):
        big = [f for f in found if f["box"][2] - f["box"][0] >= MIN_KEEP_WIDTH]
        far = face_identity.distances(embedder.embed(frame, big), reference) >= face_identity.THRESHOLD
        known = {id(f) for f, hide in zip(big, far) if not hide}
        out.append([f for f in found if id(f) not in known])
    return out


def hide_in_frames(call: Call, frames: np.ndarray, mode: str, max_pixels: int | None,
                   keep: np.ndarray | None = None) -> np.ndarray:
    """Hide every face in (N, H, W, 3) frames, or, with `keep` (a reference embedding), every face
    but that person's. Each model is leased once for all the frames, and never while hiding."""
    faces = call(FACE_DETECTOR, lambda detector: faces_in_frames(detector, frames, max_pixels))
    if keep is not None and any(faces):
        faces = call(face_identity.FACE_EMBEDDER, lambda embedder: strangers(embedder, frames, faces, keep))
    out = np.empty_like(frames)
    for i, (frame, found) in enumerate(zip(frames, faces)):
        out[i] = hide_faces(frame, found, mode)
    return out


def _job_reference(ctx: JobContext, max_pixels: int | None) -> np.ndarray:
    """The reference person's embedding, computed at the job's first attempt and kept in its folder:
    a resumed job hides with exactly the same reference as the chunks it already wrote."""
    saved = ctx.work_dir / "reference_embedding.npy"
    if saved.exists():
        return np.load(saved)
    embedding = reference_embedding(ctx.call, read_image(ctx.input("reference"), REFERENCE), max_pixels)
    save_array(saved, embedding)
    return embedding


def video_job(ctx: JobContext) -> str:
    """Job kind blur_faces_video: params mode, chunk_frames; inputs 'video' and, to keep one
    person visible, 'reference' (a photo of that person)."""
    mode = ctx.params.get("mode", "blur")
    max_pixels = ctx.spec(FACE_DETECTOR).max_pixels
    keep = _job_reference(ctx, max_pixels) if "reference" in ctx.params.get("inputs", {}) else None

    def transform(frames: np.ndarray) -> np.ndarray:
        # Leases per chunk: interactive face calls get the models between chunks.
        return hide_in_frames(ctx.call, frames, mode, max_pixels, keep)

    return str(process_video(ctx, ctx.input("video"), transform))
