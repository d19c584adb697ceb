"""onnx-arena: ONNX Runtime's CPU arena kept, shrunk after each run, or off, and the memory pattern,
on two real networks.

Each mode (engine/runtimes/onnx_runtime.py: session(arena=...)) runs in a fresh child process:
the style preset network at five sizes (up to 1280x720) and the NSFW classifier at batches 1
and 4, REPEATS rounds, every other round in reverse order (so each size also runs after a larger
one). keep, shrink and off run without ONNX Runtime's memory pattern (the engine's choice on the
CPU); `pattern` is keep with it (ONNX Runtime's own default). glibc's mmap threshold is fixed
as the engine fixes it (4 MiB). Before each call the heap is
trimmed and the kernel's peak-RSS mark reset; after it the mark and RSS are read.

- `<mode>_ms`: median call time per workload over the rounds after the first.
- `<mode>_peak_mib`: the peaks of one workload, round by round (the first round is the first run
  at that size): what the engine would learn for that size, and whether the next run agrees.
- `<mode>_kept_mib`: RSS after the call above RSS before it (what stays outside any run).
- `<mode>_end_mib`: the child's RSS after all rounds, trimmed.
- `speed_vs_keep`: per workload, `<mode>_ms / keep_ms` (above 1: slower than the engine's default).
"""
from __future__ import annotations

import sys
import time

from .common import ROOT, child_json, median, save_series

MODES = ("keep", "shrink", "off", "pattern")
SIZES = [(576, 1024), (256, 256), (512, 512), (480, 640), (720, 1280)]
BATCHES = (1, 4)
REPEATS = 4
MiB = 1 << 20


def child(mode: str, repeats: str = str(REPEATS)) -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from analysers import nsfw
    from engine import procfs
    from engine.measure import fix_mmap_threshold, rss, trim_heap
    from engine.runtimes import onnx_runtime
    from tabs.style import model as style

    fix_mmap_threshold()   # the heap as in the app (engine.Engine fixes it at start)
    chosen = onnx_runtime.session
    onnx_runtime.session = lambda *a, **k: chosen(*a, **{**k, "arena": mode})
    net, classifier = style.load_presets("cpu"), nsfw.load("cpu")
    rng = np.random.default_rng(0)
    runs: dict[str, list] = {}

    def measure(key, fn):
        trim_heap()
        before = rss()
        procfs.reset_high_water()
        started = time.perf_counter()
        fn()
        seconds = time.perf_counter() - started
        peak = (procfs.rss_high_water() or rss()) - before
        runs.setdefault(key, []).append((seconds * 1000, peak / MiB, (rss() - before) / MiB))

    for round_ in range(int(repeats)):
        for h, w in SIZES if round_ % 2 == 0 else SIZES[::-1]:   # each size after a larger one, too
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            measure(f"style {w}x{h}", lambda: style.stylize_preset(net, image, 1))
        for n in BATCHES:
            batch = rng.normal(size=(n, 224, 224, 3)).astype(np.float32)
            measure(f"nsfw x{n}", lambda: nsfw.score_batch(classifier, batch))
    trim_heap()
    print(__import__("json").dumps({"end_mib": round(rss() / MiB, 1), "runs": runs}))


def run(verbose: bool = True, repeats: int = REPEATS) -> dict:
    out, series = {"scenario": "onnx-arena", "repeats": repeats}, {}
    for mode in MODES:
        got = child_json("bench.onnx_arena", mode, str(repeats))
        runs = got["runs"]
        out[f"{mode}_ms"] = {k: round(median([r[0] for r in v[1:]]), 1) for k, v in runs.items()}
        out[f"{mode}_peak_mib"] = {k: [round(r[1], 1) for r in v] for k, v in runs.items()}
        out[f"{mode}_kept_mib"] = {k: [round(r[2], 1) for r in v] for k, v in runs.items()}
        out[f"{mode}_end_mib"] = got["end_mib"]
        series[mode] = runs
        if verbose:
            print(f"{mode}: end {got['end_mib']} MiB, ms {out[f'{mode}_ms']}", flush=True)
    out["speed_vs_keep"] = {mode: {k: round(v / out["keep_ms"][k], 2) for k, v in out[f"{mode}_ms"].items()}
                            for mode in MODES if mode != "keep"}
    save_series("onnx-arena", series)
    return out


if __name__ == "__main__":
    child(*sys.argv[1:])
