"""estimate: the memory the engine predicts for a run, before it, against the peak measured.

A fresh child process loads the app's vision models through the engine (faces, style, OCR, NSFW,
background, upscale) and runs each on photos of several sizes, in a seeded random order, half of
the runs with the model resident and half with it unloaded first (so the load is part of it).

- predicted: what admission reserves for the run from the learned footprints, read just before
  it: the run peak for the input's size bucket (FootprintStore.run_bytes), plus the model's load
  bytes when it is not resident. The reserve (a fixed margin) is not counted.
- measured: the process's peak RSS during the call (load included) above its RSS just before,
  with the heap trimmed (gc + malloc_trim) before each run. Peaks come from a 5 ms sampler and
  the kernel's high-water mark after the call. On the CPU this is what the run takes from the
  rest of the machine; memory an allocator keeps from earlier runs (ONNX Runtime's arena, glibc)
  is not taken again, so a warm run can measure far below its first.

Each model runs once first (at its smallest size) so that its load has been measured: the
footprint file persists, so this is the state of every start after the first. Those first runs
are reported apart (first_runs, first_median_abs_err): there the estimate is the spec's guess.

Fields: runs, median_abs_err (median of |predicted - measured| / measured), underestimate_rate
(share of runs whose measured peak went past the prediction).
"""
from __future__ import annotations

import json
import random
import sys
import tempfile
import threading

import numpy as np

from .common import ROOT, child_json, median, save_series

SIZES = {  # (width, height) per capability
    "faces": [(256, 256), (512, 512), (1280, 720), (1920, 1080)],
    "style": [(256, 256), (512, 512), (1024, 576)],
    "ocr": [(384, 256), (512, 512), (1280, 720)],
    "nsfw": [(256, 256), (1280, 720)],
    "background": [(256, 256), (512, 512), (1920, 1080)],
    "upscale-fast-x2": [(64, 64), (192, 128)],
    "upscale-x4plus": [(48, 48), (64, 64)],
}


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


def child(seed: str = "11") -> None:
    sys.path.insert(0, str(ROOT))
    from bench.capabilities import _capabilities
    from engine import pixel_bucket
    from engine.measure import _read_hwm, rss
    from engine.runtimes.torch_runtime import release_cached_memory
    from tabs.catalog import build_engine

    caps = {name: c for name, c in _capabilities().items() if name in SIZES}
    engine = build_engine(data_dir=tempfile.mkdtemp(prefix="wimmel-bench-"), store=False)

    def one(name: str, size, cold: bool) -> dict:
        model, call, make_image, *_ = caps[name]
        image = _image(make_image, size)
        bucket = pixel_bucket(*size)
        if cold:
            engine.pool.unload(model)
        spec, device = engine.registry.get(model), engine.devices.place(engine.registry.get(model).device)
        resident = model in engine.pool.loaded_models()
        seen = bucket in engine.footprints.get(model, device).run_peak_bytes
        predicted = engine.footprints.run_bytes(spec, device, bucket)
        if not resident:
            predicted += engine.footprints.load_bytes(spec, device)
        release_cached_memory()  # each run starts from a trimmed heap, as after an eviction
        before = rss()
        with _PeakSampler() as sampler:
            engine.infer(f"estimate {name}", model, lambda m: call(m, image), bucket=bucket)
        # The engine's probe reset the high-water mark when the call began (after any load):
        # the HWM covers the call, the sampler the load before it.
        peak = max(sampler.peak, _read_hwm() or 0)
        measured = max(peak - before, 1)
        return {"model": name, "size": f"{size[0]}x{size[1]}", "cold": not resident,
                "predicted_mb": round(predicted / 2**20, 1), "measured_mb": round(measured / 2**20, 1),
                "err": round(abs(predicted - measured) / measured, 3), "under": measured > predicted,
                "bucket": bucket, "bucket_seen": seen}

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
    out = child_json("bench.estimate", "11")
    rows, first = out["rows"], out["first"]
    if verbose:
        for row in rows:
            print(row, flush=True)
    save_series("estimate", {"rows": rows, "first": first})
    return {"scenario": "estimate", "runs": len(rows),
            "median_abs_err": round(median([r["err"] for r in rows]), 3),
            "underestimate_rate": round(sum(r["under"] for r in rows) / len(rows), 3),
            "first_runs": len(first), "first_median_abs_err": round(median([r["err"] for r in first]), 3),
            "models": sorted({r["model"] for r in rows})}


if __name__ == "__main__":
    child(*sys.argv[1:])
