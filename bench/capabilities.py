"""Per vision capability: load time, footprint, 512 px latency, 720p video fps.

Each capability runs in a fresh child process, so its footprint and peak RSS are its own.
- load_s: median of 3 loads through the pool (unloaded in between); the first load is timed
  too (cold_load_s: file reads, session build).
- footprint_mib: the load bytes the engine measured (what admission reserves for the model).
- latency_512_ms: the capability's call on a 512x512 photo through engine.infer, median of 5
  after one warm-up call.
- video_fps_720p: frames / wall time of the capability's video job on a 1280x720 clip, queue
  and all (decode, model, encode, concat); slow models get fewer frames.
- peak_rss_mib: the child's peak RSS over all of the above.

`python -m bench capabilities [--json]`; `WIMMEL_BENCH_ONLY=faces,ocr` limits the set.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 1280, 720, 25


def _photo() -> np.ndarray:
    import skimage.data
    return skimage.data.astronaut()   # 512x512, a face, text-free


def _text_photo() -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont
    image = Image.new("RGB", (512, 512), "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(["Many neural networks", "side by side on one", "machine: Wimmel."]):
        draw.text((20, 60 + row * 120), line, fill="black", font=ImageFont.load_default(size=40))
    return np.asarray(image)


def _capabilities() -> dict:
    """name -> (model, image function(model, image), image maker, video job kind, params, frames)."""
    from analysers import face_detector
    from analysers import nsfw
    from tabs.ocr import model as ocr
    from tabs.style import model as style
    from tabs.upscale import model as upscale
    from analysers.face_detector import FACE_DETECTOR

    caps = {
        "faces": (FACE_DETECTOR, face_detector.detect_faces, _photo, "blur_faces_video", {"mode": "blur"}, 50),
        "style": (style.STYLE_PRESETS, lambda net, im: style.stylize_preset(net, im, 3), _photo,
                  "stylize_video", {"style": style.PRESETS[3]}, 25),
        "ocr": (ocr.OCR, ocr.read_text, _text_photo, ocr.VIDEO_JOB, {"samples_per_second": 2}, 50),
        "upscale-fast-x2": (upscale.UPSCALE_FAST, lambda m, im: upscale.upscale(m, im, 2), _photo,
                            "upscale_video", {"scale": 2, "model": "fast"}, 4),
        "upscale-x4plus": (upscale.UPSCALE_X4PLUS, lambda m, im: upscale.upscale(m, im[:128, :128], 4),
                           _photo, None, None, 0),
        "nsfw": (nsfw.NSFW_CLASSIFIER, lambda s, im: nsfw.score_batch(s, nsfw.preprocess(im)[None]), _photo,
                 None, None, 0),
    }
    caps.update(_optional_capabilities())
    return caps


def _optional_capabilities() -> dict:
    """Capabilities whose modules may be absent on an older checkout or a trimmed install."""
    caps = {}
    try:
        from tabs.background import model as background
        caps["background"] = (background.SEGMENTER, lambda m, im: background.person_mask(m, im), _photo,
                              "remove_background_video", {"mode": "blur"}, 50)
    except (ImportError, AttributeError):
        pass
    try:
        from analysers import face_identity
        # The astronaut's face as the shared detector boxes it; embedding only (align + ResNet).
        caps["face-identity"] = (face_identity.FACE_EMBEDDER,
                                 lambda m, im: m.embed(im, [{"box": [181.05, 62.16, 267.75, 172.05]}]),
                                 _photo, None, None, 0)
    except (ImportError, AttributeError):
        pass
    return caps


def _video(path: Path, frames: int) -> str:
    from bench.video import _draw_720p
    from tests.video_helpers import make_test_video

    return str(make_test_video(path, frames=frames, width=WIDTH, height=HEIGHT, fps=FPS, draw=_draw_720p()))


def child(name: str) -> None:
    """Measure one capability in this process; print its numbers as JSON."""
    sys.path.insert(0, str(ROOT))
    from bench.common import reload_seconds
    from engine import pixel_bucket
    from engine.measure import _read_hwm
    from tabs.catalog import build_engine

    model, call, make_image, job_kind, params, frames = _capabilities()[name]
    data = Path(tempfile.mkdtemp(prefix="wimmel-bench-"))
    engine = build_engine(data_dir=data, store=False)
    image = make_image()
    bucket = pixel_bucket(image.shape[1], image.shape[0])

    started = time.perf_counter()
    engine.preload(model)
    cold = time.perf_counter() - started
    footprint = next(row["bytes"] for row in engine.pool.snapshot() if row["name"] == model)
    loads = reload_seconds(engine, model, 3)

    engine.infer(f"bench_{name}", model, lambda m: call(m, image), bucket=bucket)
    latencies = []
    for _ in range(5):
        started = time.perf_counter()
        engine.infer(f"bench_{name}", model, lambda m: call(m, image), bucket=bucket)
        latencies.append(time.perf_counter() - started)

    fps = None
    if job_kind:
        engine.jobs.start()
        video = _video(data / "in.mp4", frames)
        started = time.perf_counter()
        job = list(engine.jobs.follow(engine.jobs.submit(job_kind, params, inputs={"video": video})))[-1]
        elapsed = time.perf_counter() - started
        engine.jobs.stop()
        if job["state"] != "done":
            raise RuntimeError(f"{job_kind} ended {job['state']}: {job['error']}")
        fps = round(frames / elapsed, 2)
    print(json.dumps({"cold_load_s": round(cold, 3), "load_s": round(statistics.median(loads), 3),
                      "footprint_mib": round(footprint / 2**20, 1),
                      "latency_512_ms": round(statistics.median(latencies) * 1000, 1),
                      "video_fps_720p": fps, "video_frames": frames or None,
                      "peak_rss_mib": round(_read_hwm() / 2**20, 1)}))


def run(verbose: bool = True) -> dict:
    names = list(_capabilities())
    if only := os.environ.get("WIMMEL_BENCH_ONLY"):
        names = [n for n in names if n in only.split(",")]
    result = {"scenario": "capabilities", "resolution_video": f"{WIDTH}x{HEIGHT}", "cpus": os.cpu_count()}
    for name in names:
        done = subprocess.run([sys.executable, "-m", "bench.capabilities", name], cwd=ROOT,
                              capture_output=True, text=True)
        if done.returncode != 0:
            result[name] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        else:
            result[name] = json.loads(done.stdout.strip().splitlines()[-1])
        if verbose:
            print(f"{name}: {result[name]}", flush=True)
    return result


if __name__ == "__main__":
    child(sys.argv[1])
