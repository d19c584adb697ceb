"""estimate: the memory the engine predicts for a run, before it, against the peak measured.

A fresh child process loads models through the engine (vision: faces, style, OCR, NSFW,
background, upscale; audio: pitch, voice activity on real speech; text: language) and runs each
on inputs of several sizes (pixels, seconds, characters), in a seeded random order, half of the
runs with the model resident and half with it unloaded first (so the load is part of it).

- predicted: the memory the run needs by the learned footprints, read just before it: the run
  peak predicted for the input's size (FootprintStore.predict: a fit over the sizes measured so
  far, engine/predict.py); when the model is not resident, the peak of a first call after a load
  (predict(..., first_call=True): lazy set-up included) plus the model's load bytes and the part
  of its learned load transient beyond that peak (engine/load_peaks.py), as admission reserves
  it. The reserve (a fixed margin) is not counted.
- measured: the process's peak RSS during the call (load included) above its RSS just before,
  with the heap trimmed (gc + malloc_trim) before each run. Peaks come from a 5 ms sampler and
  the kernel's high-water mark after the call. On the CPU this is what the run takes from the
  rest of the machine. The engine learns the same quantity: its probe trims freed heap before a
  call (engine/measure.py). ONNX Runtime's CPU arena (kept by default,
  engine/runtimes/onnx_runtime.py) holds a session's largest run, so its later runs grow RSS by
  little: the first call after a load is learned apart for that reason.

Each model runs once first (at its smallest size) so that its load has been measured: the
footprint file persists, so this is the state of every start after the first. Those first runs
are reported apart (first_runs, first_median_abs_err): there the estimate is the spec's guess.
`restart`: the same plan in another order in a second process, on the footprints the first one
learned (as the app after a restart; every size was measured before, by the first process).
`repeat`: the first process's plan again, in a third process on a store of its own: run by run,
how far the measured peaks of the same runs after the same history differ (median_rel_diff), the
floor under any predictor's error that the measurement itself sets.

Fields: runs, median_abs_err (median of |predicted - measured| / measured), underestimate_rate
(share of runs whose measured peak went past the prediction), and the same split by cold / warm
runs and by the prediction's basis ('fit' of 2+ sizes, 'one size', 'largest' legacy fallback;
'first ...' for the first call after a load,
'repeat ...', 'within ...', 'reach ...' for a later call of that kind, engine/models.py);
old_*: what the store's earlier rule (the largest peak per factor-of-two size bucket, else the
largest of any bucket) would have predicted from the same measurements, side by side.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import sys
import tempfile
import threading

import numpy as np

from .common import ROOT, child_json, median, save_series

SIZES = {  # (width, height) per vision capability; seconds of speech or characters of text after
    "faces": [(256, 256), (512, 512), (1280, 720), (1920, 1080)],
    "style": [(256, 256), (512, 512), (640, 480), (1024, 576)],
    "ocr": [(384, 256), (512, 512), (1280, 720)],
    "nsfw": [(256, 256), (1280, 720)],
    "background": [(256, 256), (512, 512), (1920, 1080)],
    "upscale-fast-x2": [(64, 64), (128, 96), (192, 128)],
    "upscale-x4plus": [(48, 48), (64, 64)],
    "pitch": [2.0, 5.0, 9.5, 20.0],
    "vad": [2.0, 5.0, 9.5, 20.0],
    "language": [300, 1200, 5000],
}
SPEECH = ("cate_blanch.mp3", "heath_ledger.mp3", "cate_blanch_2.mp3")  # gradio's media_assets


class _PeakSampler:
    def __init__(self):
        from engine.measure import rss

        self.rss = rss
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())


def _image(make_image, size) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(make_image()).resize(size, Image.BILINEAR))


def _speech():
    """16 kHz real speech (gradio's media_assets clips, one after another), 20 s or more."""
    from pathlib import Path

    import gradio

    from engine.media.audio import read_audio

    folder = Path(gradio.__file__).parent / "media_assets" / "audio"
    return np.concatenate([read_audio(folder / name, 16000) for name in SPEECH])


def _inputs() -> dict:
    """name -> (model, fn(call, input), make(size), bucket(size)) for every model measured."""
    from bench.capabilities import _capabilities
    from engine import pixel_bucket
    from tabs.language import model as lid
    from tabs.pitch import model as pz
    from tabs.vad import model as vad

    table = {}
    for name, (model, call_image, make_image, *_) in _capabilities().items():
        if name in SIZES:
            table[name] = (model, lambda call, x, model=model, f=call_image: call(model, lambda m: f(m, x)),
                           lambda size, make=make_image: _image(make, size), lambda size: pixel_bucket(*size))
    speech = _speech()
    text = (ROOT / "docs" / "architecture.md").read_text()
    table["pitch"] = (pz.PITCH_MODEL, lambda call, x: pz.pitch(call, x, 16000),
                      lambda sec: speech[: int(sec * 16000)], pz.seconds_bucket)
    table["vad"] = (vad.VAD_MODEL, vad.detect_speech, lambda sec: speech[: int(sec * 16000)],
                    vad.seconds_bucket)
    table["language"] = (lid.LANGUAGE_MODEL, lambda call, x: lid.detect(call, x),
                         lambda chars: (text * (1 + chars // len(text)))[:chars], lid.chars_bucket)
    return table


def _old_bucket(key: str) -> str:
    """The factor-of-two bucket the store used before exact sizes ('0.25MP', '16s', '2k chars')."""
    from engine.predict import parse_key

    if parse_key(key) is None:
        return key   # 'any': a run without a size (a preload)
    unit, size = parse_key(key)
    if unit == "px":
        return f"{2.0 ** math.ceil(math.log2(max(size, 1) / 1e6)):g}MP"
    if unit == "chars":
        return f"{2 ** max(0, math.ceil(math.log2(max(size, 1) / 1000)))}k chars"
    return f"{2 ** max(0, math.ceil(math.log2(max(size, 1.0))))}{unit}"


def _old_prediction(peaks: dict[str, int], bucket: str, estimate: int) -> int:
    """What the old store would reserve from the same measurements: the largest peak in the
    input's bucket, else the largest peak of any bucket, else the spec's estimate."""
    old = {}
    for key, peak in peaks.items():
        old[_old_bucket(key)] = max(old.get(_old_bucket(key), 0), peak)
    return old.get(_old_bucket(bucket), max(old.values(), default=estimate))


def _size(size) -> str:
    return f"{size[0]}x{size[1]}" if isinstance(size, tuple) else f"{size:g}"


def child(seed: str = "11", data_dir: str = "") -> None:
    sys.path.insert(0, str(ROOT))
    from engine.measure import _read_hwm, rss
    from engine.runtimes.torch_runtime import release_cached_memory
    from tabs.catalog import build_engine

    caps = _inputs()
    engine = build_engine(data_dir=data_dir or tempfile.mkdtemp(prefix="wimmel-bench-"), store=False)
    caps = {name: c for name, c in caps.items() if name in SIZES and c[0] in engine.registry}

    def one(name: str, size, cold: bool) -> dict:
        model, fn, make, bucket_of = caps[name]
        data, bucket = make(size), bucket_of(size)
        if cold:
            engine.pool.unload(model)
        spec, device = engine.registry.get(model), engine.devices.place(engine.registry.get(model).device)
        resident = model in engine.pool.loaded_models()
        seen = bucket in engine.footprints.get(model, device).run_peak_bytes
        # The endpoint the engine predicts for (its runs' capability): each model has one here.
        guess = engine.footprints.predict(spec, device, bucket, first_call=not resident, endpoint=f"estimate {name}")
        load = 0 if resident else engine.footprints.load_bytes(spec, device)
        # What admission reserves (Pool._take): a load's learned transient beyond the run peak too.
        extra = 0 if resident else engine.pool.load_reserve(spec, device, guess.bytes)
        predicted = guess.bytes + load + extra
        old = _old_prediction(engine.footprints.get(model, device).run_peak_bytes, bucket,
                              spec.run_estimate_bytes) + load
        release_cached_memory()  # each run starts from a trimmed heap, as after an eviction
        before = rss()
        with _PeakSampler() as sampler:
            with engine.run(f"estimate {name}", bucket=bucket) as run:
                fn(run.call, data)
        # The engine's probe reset the high-water mark when the call began (after any load):
        # the HWM covers the call, the sampler the load before it.
        peak = max(sampler.peak, _read_hwm() or 0)
        measured = max(peak - before, 1)
        return {"model": name, "size": _size(size), "cold": not resident,
                "predicted_mb": round(predicted / 2**20, 1), "measured_mb": round(measured / 2**20, 1),
                "err": round(abs(predicted - measured) / measured, 3), "under": measured > predicted,
                "bucket": bucket, "bucket_seen": seen, "basis": guess.basis,
                "margin": guess.margin, "points": guess.points,
                "load_mb": round(load / 2**20, 1), "run_mb": round(guess.bytes / 2**20, 1),
                "old_predicted_mb": round(old / 2**20, 1), "old_err": round(abs(old - measured) / measured, 3),
                "old_under": measured > old}

    first = [one(name, sizes[0], True) for name, sizes in SIZES.items() if name in caps]
    plan = [(name, size, cold) for name, sizes in SIZES.items() if name in caps
            for size in sizes for cold in (False, True)]
    random.Random(int(seed)).shuffle(plan)
    rows = []
    for name, size, cold in plan:
        rows.append(one(name, size, cold))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"first": first, "rows": rows}))


def run(verbose: bool = True) -> dict:
    folder = tempfile.mkdtemp(prefix="wimmel-bench-estimate-")
    try:
        out = child_json("bench.estimate", "11", folder)
        # A restart: a second process on the footprints the first one learned, in another order.
        again = child_json("bench.estimate", "12", folder)["rows"]
        twin = child_json("bench.estimate", "11", tempfile.mkdtemp(dir=folder))["rows"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows, first = out["rows"], out["first"]
    if verbose:
        for row in rows:
            print(row, flush=True)
    save_series("estimate", {"rows": rows, "first": first, "restart": again, "repeat": twin})
    return {"scenario": "estimate", **_summary(rows),
            "first_runs": len(first), "first_median_abs_err": round(median([r["err"] for r in first]), 3),
            **_cold_and_warm(rows),
            "by_basis": {b: _summary([r for r in rows if r.get("basis") == b])
                         for b in sorted({r.get("basis") for r in rows})},
            "restart": {**_summary(again), **_cold_and_warm(again)},
            "repeat": _repeatability(rows, twin),
            "models": sorted({r["model"] for r in rows})}


def _repeatability(rows: list[dict], twin: list[dict]) -> dict:
    """The same runs in the same order, measured twice: |a - b| / b per run (b at least 0.1 MiB)."""
    diffs = [abs(a["measured_mb"] - b["measured_mb"]) / max(b["measured_mb"], 0.1)
             for a, b in zip(rows, twin) if (a["model"], a["size"], a["cold"]) == (b["model"], b["size"], b["cold"])]
    return {"runs": len(diffs), "median_rel_diff": round(median(diffs), 3),
            "over_10_percent": round(sum(d > 0.10 for d in diffs) / len(diffs), 3)}


def _cold_and_warm(rows: list[dict]) -> dict:
    return {"cold": _summary([r for r in rows if r["cold"]]), "warm": _summary([r for r in rows if not r["cold"]])}


def _summary(rows: list[dict]) -> dict:
    if not rows:
        return {"runs": 0}
    out = {"runs": len(rows), "median_abs_err": round(median([r["err"] for r in rows]), 3),
           "underestimate_rate": round(sum(r["under"] for r in rows) / len(rows), 3)}
    if all("old_err" in r for r in rows):   # the per-bucket rule of before, on the same runs
        out["old_median_abs_err"] = round(median([r["old_err"] for r in rows]), 3)
        out["old_underestimate_rate"] = round(sum(r["old_under"] for r in rows) / len(rows), 3)
    return out


if __name__ == "__main__":
    child(*sys.argv[1:])
