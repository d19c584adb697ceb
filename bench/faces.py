"""The face detector through the engine: load time, latency, engine overhead, launch time.

- load_s: median of 5 loads through the pool (unloaded in between).
- detect_p50_ms: detect_faces on a 512 px photo through engine.infer, median of 20.
- direct_p50_ms: the same call on the model directly, interleaved with the engine calls so that
  both see the same machine load; overhead_ms = engine - direct (medians).
- launch_to_page_s: launch.py start until the first page answers HTTP 200, median of 3.
"""
from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(values):
    return round(statistics.median(values) * 1000, 2)


def _launch_to_page(data_dir: str) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--port", str(port),
                             "--data-dir", data_dir], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 120:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("the app did not answer within 120 s")
    finally:
        proc.terminate()
        proc.wait(30)


def run(verbose: bool = True) -> dict:
    import skimage.data
    import torch

    from bench.common import reload_seconds
    from engine import pixel_bucket
    from analysers import face_detector
    from analysers.face_detector import FACE_DETECTOR
    from tabs.catalog import build_engine

    data = tempfile.mkdtemp(prefix="wimmel-bench-")
    engine = build_engine(data_dir=data, store=False)
    image = skimage.data.astronaut()
    bucket = pixel_bucket(*image.shape[:2])

    loads = reload_seconds(engine, FACE_DETECTOR, 5)

    model = face_detector.load_mtcnn(engine.devices.default)
    detect = lambda m: face_detector.detect_faces(m, image)
    for _ in range(3):  # warm both paths
        engine.infer("detect_faces", FACE_DETECTOR, detect, bucket=bucket)
        detect(model)
    via_engine, direct = [], []
    for _ in range(20):
        started = time.perf_counter()
        engine.infer("detect_faces", FACE_DETECTOR, detect, bucket=bucket)
        via_engine.append(time.perf_counter() - started)
        started = time.perf_counter()
        detect(model)
        direct.append(time.perf_counter() - started)
        if verbose:
            print(f"engine {via_engine[-1] * 1000:.1f} ms, direct {direct[-1] * 1000:.1f} ms", flush=True)

    try:
        import gradio  # noqa: F401  (a GPU box may hold torch but not the app's packages)
        launches = [_launch_to_page(tempfile.mkdtemp(prefix="wimmel-bench-")) for _ in range(3)]
    except ImportError:
        launches = None
    return {
        "scenario": "faces", "device": engine.devices.default, "torch_threads": torch.get_num_threads(),
        "load_s": round(statistics.median(loads), 4),
        "detect_p50_ms": _median_ms(via_engine), "direct_p50_ms": _median_ms(direct),
        "overhead_ms": round(_median_ms(via_engine) - _median_ms(direct), 2),
        "overhead_ratio": round(statistics.median(via_engine) / statistics.median(direct), 3),
        "launch_to_page_s": round(statistics.median(launches), 2) if launches else None,
    }
