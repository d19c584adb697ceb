"""A synthetic video with a real face moving across it, and ways to measure the result."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from engine.media.video import make_test_video, read_chunks

FACE_SIZE = 200  # the astronaut photo scaled to this: her face is ~35x45 px
_ASTRONAUT = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((FACE_SIZE, FACE_SIZE), Image.LANCZOS))


def face_frame(i: int, width: int = 480, height: int = 360) -> np.ndarray:
    """A smooth background with the astronaut moving 4 px per frame, back and forth."""
    x = np.linspace(0, 1, width, dtype=np.float32)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = 60 + 120 * x
    frame[..., 1] = 60 + 120 * y
    frame[..., 2] = 120
    travel = width - FACE_SIZE - 40
    step = (4 * i) % (2 * travel)
    left = 20 + (step if step <= travel else 2 * travel - step)
    frame[60:60 + FACE_SIZE, left:left + FACE_SIZE] = _ASTRONAUT
    return frame


def face_video(path: Path, frames: int = 48, fps: int = 24) -> Path:
    return make_test_video(path, frames=frames, width=480, height=360, fps=fps, audio=True, draw=face_frame)


def decode_all(path: Path) -> np.ndarray:
    return np.concatenate([chunk for _, chunk in read_chunks(path, 64)])


def sharpness(region: np.ndarray) -> float:
    """Mean absolute Laplacian of the gray image: high for detail, near zero when blurred."""
    gray = region.astype(np.float32).mean(axis=2)
    lap = 4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    return float(np.abs(lap).mean())
