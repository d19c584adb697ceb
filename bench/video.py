"""The video face anonymiser on 720p: frames per second, and peak RSS as the video grows.

Each length runs in a fresh child process (same code path as the app's job: the queue, the
pool, the shared detector, frames on disk), so its peak RSS (VmHWM) is that job's alone.
Flat memory means the 120 s peak is about the 10 s peak, not twelve times it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 1280, 720, 25


def _draw_720p():
    import skimage.data
    from PIL import Image

    face = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((400, 400)))
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None]
    background = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    background[..., 0], background[..., 1], background[..., 2] = 60 + 120 * x, 60 + 120 * y, 120

    def draw(i: int) -> np.ndarray:
        frame = background.copy()
        left = 40 + (3 * i) % (WIDTH - 480)
        frame[160:560, left:left + 400] = face
        return frame

    return draw


def child(video: str) -> None:
    """Run one anonymiser job in this process; print its numbers as JSON."""
    sys.path.insert(0, str(ROOT))
    from engine import Engine
    from engine.measure import _read_hwm
    from engine.media.video import probe
    from zoo.catalog import default_job_kinds, default_specs

    engine = Engine(tempfile.mkdtemp(prefix="wimmel-bench-"), specs=default_specs())
    for kind in default_job_kinds():
        engine.jobs.register(kind)
    engine.jobs.start()
    started = time.perf_counter()
    job = list(engine.jobs.follow(engine.jobs.submit("blur_faces_video", {"mode": "blur"},
                                                     inputs={"video": video})))[-1]
    elapsed = time.perf_counter() - started
    engine.jobs.stop()
    assert job["state"] == "done", job["error"]
    frames = probe(job["result"]).frames
    print(json.dumps({"frames": frames, "seconds": round(elapsed, 1), "fps": round(frames / elapsed, 2),
                      "peak_rss_mib": round(_read_hwm() / 2**20, 1)}))


def run(verbose: bool = True, lengths=(10, 120)) -> dict:
    from engine.media.video import make_test_video

    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-video-"))
    draw = _draw_720p()
    result = {"scenario": "video", "resolution": f"{WIDTH}x{HEIGHT}", "fps_in": FPS}
    for seconds in lengths:
        path = make_test_video(folder / f"{seconds}s.mp4", frames=seconds * FPS, width=WIDTH, height=HEIGHT,
                               fps=FPS, draw=draw)
        out = subprocess.run([sys.executable, "-m", "bench.video", str(path)], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        numbers = json.loads(out)
        if verbose:
            print(f"{seconds} s: {numbers}", flush=True)
        result[f"fps_{seconds}s"] = numbers["fps"]
        result[f"peak_rss_mib_{seconds}s"] = numbers["peak_rss_mib"]
    return result


if __name__ == "__main__":
    child(sys.argv[1])
