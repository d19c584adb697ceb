"""Synthetic test videos (a moving gradient, or a real face moving across), and ways to measure
the result. The benchmarks make their videos here too."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import skimage.data
from PIL import Image

from engine.files import atomic_write
from engine.media.ffmpeg import TO_YUV, X264, command
from engine.media.video import encode_frames, frame_rate, raw_video_input, read_chunks


def moving_gradient(width: int, height: int) -> Callable[[int], np.ndarray]:
    x = np.arange(width, dtype=np.float32) / width
    green = (255 * np.arange(height, dtype=np.float32) / height).astype(np.uint8)[:, None]

    def draw(i: int) -> np.ndarray:
        # Smooth (no wrap-around edge) and moving, so each frame differs from its neighbours;
        # rows and columns broadcast, so a 720p frame takes about a millisecond.
        frame = np.empty((height, width, 3), np.uint8)
        frame[..., 0] = (127.5 + 127 * np.cos(2 * np.pi * (x - i / 50))).astype(np.uint8)
        frame[..., 1] = green
        frame[..., 2] = int(127.5 + 100 * np.sin(2 * np.pi * i / 80))
        return frame
    return draw


def make_test_video(path, *, frames: int, width: int, height: int, fps=25, audio: bool = True,
                    draw: Callable[[int], np.ndarray] | None = None) -> Path:
    """Write a synthetic H.264 MP4: frames from draw(i) (default a moving gradient), and a
    440 Hz sine as AAC audio lasting frames / fps."""
    fps = frame_rate(fps)
    draw = draw or moving_gradient(width, height)
    path = Path(path)
    args = ["-v", "error", *raw_video_input(width, height, fps)]
    if audio:
        seconds = float(frames / fps)
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                 "-map", "0:v", "-map", "1:a", "-c:a", "aac"]
    # ultrafast: test sources only need to be quick to make.
    args += ["-vf", TO_YUV, *X264, "-preset", "ultrafast", "-movflags", "+faststart", "-f", "mp4"]

    def rendered():
        for i in range(frames):
            frame = draw(i)
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise ValueError(f"draw({i}) gave {frame.dtype} {frame.shape}, "
                                 f"want uint8 {(height, width, 3)}")
            yield frame
    with atomic_write(path) as tmp:
        encode_frames(command(*args, str(tmp)), rendered())
    return path

FACE_SIZE = 200  # the astronaut photo scaled to this: her face is ~35x45 px
_ASTRONAUT = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((FACE_SIZE, FACE_SIZE), Image.LANCZOS))


def smooth_background(width: int = 480, height: int = 360) -> np.ndarray:
    """A still, smooth background with no one in front of it: red grows to the right, green
    downwards, blue is even."""
    x = np.linspace(0, 1, width, dtype=np.float32)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = 60 + 120 * x
    frame[..., 1] = 60 + 120 * y
    frame[..., 2] = 120
    return frame


def face_frame(i: int, width: int = 480, height: int = 360) -> np.ndarray:
    """A smooth background with the astronaut moving 4 px per frame, back and forth."""
    frame = smooth_background(width, height)
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
