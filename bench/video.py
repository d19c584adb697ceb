"""video-memory: the face anonymiser on a 10 s and a 120 s 720p video; memory must stay flat.

Each length runs in a fresh child process (the app's path: the job queue, the pool, the shared
detector, frames on disk in chunks), so its peak RSS is that job's alone: the larger of the
kernel's high-water mark (VmHWM, which the engine's probe resets at each run it measures) and
the RSS sampled every 0.1 s.

- rss_10s_mb, rss_120s_mb: the child's peak RSS; rss_ratio = 120 s / 10 s (flat: about 1).
- fps_10s, fps_120s: frames / wall time of the job (decode, detect, hide, encode, join).
- ceiling_fps: the same job path with no model (frames decoded and encoded unchanged), on the
  10 s video: what decode + encode alone allow on this machine.

The videos are 1280x720 at FPS frames per second (10 by default, so that the 120 s video's 1,200
frames fit a benchmark run on two cores; WIMMEL_BENCH_VIDEO_FPS=25 for the full rate). The
child's RSS over time is kept for the memory plot. `python -m bench video-memory`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1280, 720
FPS = int(os.environ.get("WIMMEL_BENCH_VIDEO_FPS", "10"))


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


def child(video: str, mode: str = "blur") -> None:
    """Run one job in this process ('blur': the anonymiser; 'copy': no model); print JSON."""
    sys.path.insert(0, str(ROOT))
    import psutil

    from engine import JobKind
    from engine.measure import _read_hwm
    from engine.media.video import probe
    from engine.media.video_job import process_video
    from analysers.face_detector import FACE_DETECTOR
    from tabs.catalog import build_engine

    engine = build_engine(data_dir=tempfile.mkdtemp(prefix="wimmel-bench-"), store=False)
    engine.jobs.register(JobKind("copy_video", FACE_DETECTOR,
                                 lambda ctx: str(process_video(ctx, ctx.input("video"), lambda f: f))))
    samples, stop, me, t0 = [], threading.Event(), psutil.Process(), time.monotonic()

    def sample():
        while not stop.wait(0.1):
            samples.append((round(time.monotonic() - t0, 2), round(me.memory_info().rss / 2**20, 1)))

    threading.Thread(target=sample, daemon=True).start()
    engine.jobs.start()
    started = time.perf_counter()
    capability, params = ("blur_faces_video", {"mode": "blur"}) if mode == "blur" else ("copy_video", {})
    job = list(engine.jobs.follow(engine.jobs.submit(capability, params, inputs={"video": video})))[-1]
    elapsed = time.perf_counter() - started
    stop.set()
    engine.jobs.stop()
    assert job["state"] == "done", job["error"]
    frames = probe(job["result"]).frames
    # The engine's memory probe resets the kernel's high-water mark at each run it measures, so
    # VmHWM covers only the stretch since the last reset; the 0.1 s samples cover the rest.
    peak = max(_read_hwm() / 2**20, max((m for _, m in samples), default=0))
    print(json.dumps({"frames": frames, "seconds": round(elapsed, 1), "fps": round(frames / elapsed, 2),
                      "peak_rss_mb": round(peak, 1), "rss_over_time": samples[::2]}))


def _child(path: Path, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.video", str(path), mode], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench.video {mode} {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(verbose: bool = True, lengths=(10, 120)) -> dict:
    from tests.video_helpers import make_test_video

    from .common import save_series

    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-video-"))
    draw = _draw_720p()
    numbers, series = {}, {}
    for seconds in lengths:
        path = make_test_video(folder / f"{seconds}s.mp4", frames=seconds * FPS, width=WIDTH, height=HEIGHT,
                               fps=FPS, draw=draw)
        one = _child(path, "blur")
        series[f"{seconds}s"] = one.pop("rss_over_time")
        numbers[seconds] = one
        if verbose:
            print(f"{seconds} s: {one}", flush=True)
    ceiling = _child(folder / f"{lengths[0]}s.mp4", "copy")
    series["ceiling"] = ceiling.pop("rss_over_time")
    if verbose:
        print(f"decode + encode alone: {ceiling}", flush=True)
    for path in folder.glob("*.mp4"):
        path.unlink()
    save_series("video-memory", {"rss_over_time": series})
    short, long = numbers[lengths[0]], numbers[lengths[-1]]
    return {"scenario": "video-memory", "rss_10s_mb": short["peak_rss_mb"], "rss_120s_mb": long["peak_rss_mb"],
            "rss_ratio": round(long["peak_rss_mb"] / short["peak_rss_mb"], 3),
            "fps_10s": short["fps"], "fps_120s": long["fps"], "ceiling_fps": ceiling["fps"],
            "resolution": f"{WIDTH}x{HEIGHT}", "fps_in": FPS,
            "frames_10s": short["frames"], "frames_120s": long["frames"]}


if __name__ == "__main__":
    child(*sys.argv[1:])
