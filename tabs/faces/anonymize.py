"""Hide faces: blur or pixelate each detected face box (with a margin) in an RGB image.

Optionally one person stays visible: given the embedding of a reference face, every face whose
embedding lies within face_identity.THRESHOLD of it is left as it is; all others are hidden.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageFilter

from engine import JobContext, UserFacingError
from engine.files import save_array
from engine.media.image import read_image
from engine.media.video import limit_pixels
from engine.media.video_job import process_video

from analysers import face_detector
from analysers.face_detector import FACE_DETECTOR
from analysers import face_identity

MODES = ("blur", "pixelate")
_MARGIN = 0.15  # of the box size: the detector's box is tight, hair and ears would show
# A face narrower than this (in the frame's pixels) is always hidden, even when keeping someone:
# with so few pixels different people come out close (25 px LFW faces: 7% of pairs below 0.6).
MIN_KEEP_WIDTH = 40

# run.call (Run) or ctx.call (JobContext): lease a model by name for one step.
Call = Callable[[str, Callable[[Any], Any]], Any]


def _region(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * _MARGIN, (y2 - y1) * _MARGIN
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(width, int(np.ceil(x2 + mx))), min(height, int(np.ceil(y2 + my)))
    return (left, top, right, bottom) if right > left and bottom > top else None


def hide_faces(image: np.ndarray, faces: list[dict], mode: str = "blur") -> np.ndarray:
    """A copy of `image` with every face in `faces` (dicts with 'box') blurred or pixelated."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    out = Image.fromarray(image)
    for face in faces:
        region = _region(face["box"], out.width, out.height)
        if region is None:
            continue
        patch = out.crop(region)
        size = max(patch.width, patch.height)
        if mode == "blur":
            # Radius scales with the face so a large face is as unreadable as a small one.
            patch = patch.filter(ImageFilter.GaussianBlur(radius=max(2.0, size / 8)))
        else:
            blocks = max(1, size // 10)  # about ten blocks across the face
            small = patch.resize((max(1, patch.width // blocks), max(1, patch.height // blocks)), Image.BOX)
            patch = small.resize(patch.size, Image.NEAREST)
        out.paste(patch, region[:2])
    return np.asarray(out)


def scale_faces(faces: list[dict], factor: float) -> list[dict]:
    """Faces found on a shrunk frame, in the original frame's pixels."""
    if factor == 1.0:
        return faces
    return [{**f, "box": [v * factor for v in f["box"]],
             "landmarks": [[x * factor, y * factor] for x, y in f["landmarks"]]} for f in faces]


def find_faces(detector, image: np.ndarray, max_pixels: int | None) -> list[dict]:
    """Faces of one image, detected on a copy shrunk to the detector's limit, in the image's pixels."""
    small, scale = limit_pixels(image, max_pixels) if max_pixels else (image, 1.0)
    return scale_faces(face_detector.detect_faces(detector, small), 1.0 / scale)


def find_and_hide(detector, frames: np.ndarray, mode: str, max_pixels: int | None) -> np.ndarray:
    """Detect on frames shrunk to the detector's limit, hide on the full-size frames."""
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        out[i] = hide_faces(frame, find_faces(detector, frame, max_pixels), mode)
    return out


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

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    faces = call(FACE_DETECTOR, lambda detector: [find_faces(detector, f, max_pixels) for f in frames])
    if keep is not None and any(faces):
        faces = call(face_identity.FACE_EMBEDDER, lambda embedder: strangers(embedder, frames, faces, keep))
    out = np.empty_like(frames)
    for i, (frame, found) in enumerate(zip(frames, faces)):
        out[i] = hide_faces(frame, found, mode)
    return out


def person(call: Call, image: np.ndarray, max_pixels: int | None) -> dict | None:
    """The largest face in a photo, as {"embedding", "face", "faces_in_photo"}; None with no face."""

    faces = call(FACE_DETECTOR, lambda detector: find_faces(detector, image, max_pixels))
    face = face_identity.largest(faces)
    if face is None:
        return None
    embedding = call(face_identity.FACE_EMBEDDER, lambda embedder: embedder.embed(image, [face])[0])
    return {"embedding": embedding, "face": face, "faces_in_photo": len(faces)}


def read_photo(path: str | os.PathLike, what: str) -> np.ndarray:
    """An RGB uint8 array of an image file, turned upright as its EXIF says (phone photos);
    a UserFacingError (ImageError) with a plain message when it is not a usable image."""
    return read_image(path, what)


def _reference(ctx: JobContext, max_pixels: int | None) -> np.ndarray:
    """The reference person's embedding, computed at the job's first attempt and kept in its folder:
    a resumed job hides with exactly the same reference as the chunks it already wrote."""
    saved = ctx.work_dir / "reference_embedding.npy"
    if saved.exists():
        return np.load(saved)
    found = person(ctx.call, read_photo(ctx.input("reference"), "photo of the person to keep"), max_pixels)
    if found is None:
        raise UserFacingError("The photo of the person to keep shows no face.")
    save_array(saved, found["embedding"])
    return found["embedding"]


def video_job(ctx: JobContext) -> str:
    """Job kind blur_faces_video: params mode, chunk_frames; inputs 'video' and, to keep one
    person visible, 'reference' (a photo of that person)."""

    mode = ctx.params.get("mode", "blur")
    if mode not in MODES:
        raise UserFacingError(f"Mode must be one of {', '.join(MODES)}, not {mode!r}.")
    max_pixels = ctx.queue.engine.registry.get(FACE_DETECTOR).max_pixels
    keep = _reference(ctx, max_pixels) if "reference" in ctx.params.get("inputs", {}) else None

    def transform(frames: np.ndarray) -> np.ndarray:
        # Leases per chunk: interactive face calls get the models between chunks.
        return hide_in_frames(ctx.call, frames, mode, max_pixels, keep)

    return str(process_video(ctx, ctx.input("video"), transform, chunk_frames=ctx.params.get("chunk_frames")))
