"""Hide faces: blur or pixelate each detected face box (with a margin) in an RGB image."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from engine import JobContext
from engine.media.video import limit_pixels
from engine.media.video_job import process_video

from . import face_detector

MODES = ("blur", "pixelate")
_MARGIN = 0.15  # of the box size: the detector's box is tight, hair and ears would show


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


def find_and_hide(detector, frames: np.ndarray, mode: str, max_pixels: int | None) -> np.ndarray:
    """Detect on frames shrunk to the detector's limit, hide on the full-size frames."""
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        small, scale = limit_pixels(frame, max_pixels) if max_pixels else (frame, 1.0)
        faces = scale_faces(face_detector.detect_faces(detector, small), 1.0 / scale)
        out[i] = hide_faces(frame, faces, mode)
    return out


def video_job(ctx: JobContext) -> str:
    """Job kind blur_faces_video: params mode, chunk_frames; input 'video'."""
    from .catalog import FACE_DETECTOR  # the catalog imports this module

    mode = ctx.params.get("mode", "blur")
    max_pixels = ctx.queue.engine.registry.get(FACE_DETECTOR).max_pixels

    def transform(frames: np.ndarray) -> np.ndarray:
        # One lease per chunk: interactive face calls get the detector between chunks.
        return ctx.call(FACE_DETECTOR, lambda detector: find_and_hide(detector, frames, mode, max_pixels))

    return str(process_video(ctx, ctx.input("video"), transform, chunk_frames=ctx.params.get("chunk_frames")))
