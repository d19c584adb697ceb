"""Faces through a run of video frames without scanning every frame.

MTCNN's pyramid scan (PNet over ~10 scales) is most of a frame's cost; confirming a face near
where it was (RNet and ONet on a few crops: face_detector.refine_faces) costs a few milliseconds.
So a chunk of frames is scanned fully every EVERY frames (and at its last frame); in between, each
face is followed forward from the scan before and backward from the scan after, and a frame gets
the union. A face that enters between two scans is found at the next scan and followed back to
where it appeared; only a face seen for fewer than EVERY frames in a row, between two scans, can
be missed (the anonymiser's test measures that against scanning every frame).
"""
from __future__ import annotations

import numpy as np

from engine.media.video import limit_pixels

from analysers import face_detector
from analysers.face_boxes import nms

from .people import scale_faces

EVERY = 4


def _boxes(faces: list[dict]) -> np.ndarray:
    return np.array([f["box"] for f in faces], np.float32).reshape(-1, 4)


def _follow(detector, frames: list[np.ndarray], start: list[dict], order) -> dict[int, list[dict]]:
    """Faces per frame index in `order`, each frame's faces refined from the previous one's."""
    out, faces = {}, start
    for t in order:
        faces = face_detector.refine_faces(detector, frames[t], _boxes(faces)) if faces else []
        out[t] = faces
    return out


def _union(a: list[dict], b: list[dict]) -> list[dict]:
    faces = a + b
    if len(faces) < 2:
        return faces
    keep = nms(_boxes(faces), np.array([f["score"] for f in faces], np.float32), 0.5, mode="min")
    return sorted((faces[i] for i in keep), key=lambda f: f["score"], reverse=True)


def faces_in_frames(detector, frames: np.ndarray, max_pixels: int | None, every: int = EVERY) -> list[list[dict]]:
    """Per frame of (N, H, W, 3) frames, its faces in the frame's pixels (as find_faces gives
    them), scanning fully only every `every` frames; every=1 scans them all."""
    n = len(frames)
    if n == 0:
        return []
    shrunk = [limit_pixels(f, max_pixels) if max_pixels else (f, 1.0) for f in frames]
    small, scale = [s for s, _ in shrunk], shrunk[0][1]
    scans = sorted(set(range(0, n, max(1, every))) | {n - 1})
    out: list[list[dict]] = [[] for _ in range(n)]
    for t in scans:
        out[t] = face_detector.detect_faces(detector, small[t])
    for a, b in zip(scans, scans[1:]):
        between = range(a + 1, b)
        forward = _follow(detector, small, out[a], between)
        backward = _follow(detector, small, out[b], reversed(between))
        for t in between:
            out[t] = _union(forward[t], backward[t])
    return [scale_faces(faces, 1.0 / scale) for faces in out]
