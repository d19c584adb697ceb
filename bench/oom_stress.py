"""oom-stress: 100 jobs over every model with a standard input in bench/networks (all networks the
engine serves) under a budget of 60 % of their footprints,
with real out-of-memory errors injected at random points in 10 % of the runs.

1. A first child process runs each model once through the engine, so its footprint (load bytes
   and run peak) is measured and saved (footprints.json), as any first start does.
2. A second, fresh child reads those footprints, sets the budget to 60 % of their sum (load +
   largest run peak, over all models) and runs JOBS jobs in a seeded random order, THREADS at a
   time, each one standard call (a run on the engine, leasing its model). In 10 % of the runs an out-of-memory is raised
   for real (torch's CPU allocator refusing 1 PiB) at a random point: while the model loads,
   before the model's call, or after it (the work done is lost).

- jobs, completed: runs started and runs that returned a result.
- user_visible_oom: runs whose caller got an out-of-memory (OutOfMemory, NotEnoughMemory or a
  raw allocation failure): 0 means the engine absorbed every one.
- retries: recovery retries recorded in the run records (each injected OOM costs at least one).
- peak_mb: peak RSS of the process above its RSS before the first model loaded (sampled every
  10 ms): what the models and their runs really took. budget_mb: the budget.
Context: injected (OOMs raised), errors (other failures), models, engine_peak_mb (the pool's own
accounting: resident models plus run reservations, sampled), jobs_per_s.
Where a peak past the budget would come from: at_peak (at the process's RSS peak: its growth, the
ledger, the overhang (what the process held beyond the ledger) and the busy instances as
bytes+run reservation+load transient reserved, MiB), load_transients_mb (per model, how far its
load went above what it kept, learned in step 1 and reserved while it loads: engine/load_peaks.py),
ledger_only_admissions (admissions the pool made on its ledger alone, past the process's ceiling).

`run(device="cuda:0")` (bench/gpu.py) runs it on a GPU: the models that go there ('auto' specs) are
budgeted on it, each injected failure is a real CUDA allocation failure (torch's allocator refusing
1 PiB) for them, and device_peak_mb is the GPU's used memory above its level at the start.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from .common import ROOT, child_json, rss_parts, save_series

JOBS = 100
THREADS = 3
INJECT_SHARE = 0.10
POINTS = ("load", "before", "after")
BUDGET_SHARE = 0.60
SENTENCE = "Many neural networks side by side on one machine, and none of them runs out of memory."


def _workloads(models: list[str] | None = None) -> dict:
    """spec name -> (fn(call, input), input): every model with a standard input in bench/networks,
    or `models`."""
    from .networks import standard_workloads
    return standard_workloads(models)


def learn(folder: str, device: str = "cpu", models: str = "") -> None:
    """Run every workload (or the comma-separated `models`') once, alone, learning footprints into
    folder/data. bench drift learns its footprints here too."""
    sys.path.insert(0, str(ROOT))
    from tabs.catalog import build_engine

    folder = Path(folder)
    engine = build_engine(data_dir=folder / "data", store=False, device=device)
    work = _workloads(models.split(",") if models else None)
    for name, (fn, value) in work.items():
        with engine.run(f"learn {name}") as run:
            fn(run.call, value)
        for model in engine.pool.loaded_models():
            engine.pool.unload(model)
    print(json.dumps({"models": sorted(work)}))


def stress(folder: str, seed: str = "5", device: str = "cpu") -> None:
    sys.path.insert(0, str(ROOT))
    import psutil
    import torch

    from engine import NotEnoughMemory, OutOfMemory, is_oom
    from engine.models import FootprintStore
    from tabs.catalog import build_engine, default_specs

    folder = Path(folder)
    work = _workloads()
    specs = {s.name: s for s in default_specs()}
    store = FootprintStore(folder / "data" / "footprints.json")
    # On a GPU only the models placed there share its budget (the CPU-pinned ones keep the RAM's).
    home = {m: device if specs[m].device == "auto" else "cpu" for m in specs}
    used = sorted(m for m in work if home[m] == device)
    footprints = {m: store.load_bytes(specs[m], device) + max(store.get(m, device).run_peak_bytes.values(), default=0)
                  for m in used}
    budget = int(BUDGET_SHARE * sum(footprints.values()))

    rng = random.Random(int(seed))
    names = sorted(work)
    order = [rng.choice(names) for _ in range(JOBS)]
    inject = dict.fromkeys(rng.sample(range(JOBS), round(JOBS * INJECT_SHARE)))
    for i in inject:
        inject[i] = rng.choice(POINTS)
    injected, lock = {"count": 0, "at": []}, threading.Lock()
    fail_next_load: set[str] = set()

    def allocation_failure(where: str, model: str):
        with lock:
            injected["count"] += 1
            injected["at"].append(where)
        torch.empty(2**48, dtype=torch.uint8, device=home[model])  # 1 PiB: a real allocator error

    def loader(spec):
        def load(device):
            with lock:
                fail = spec.name in fail_next_load
                fail_next_load.discard(spec.name)
            if fail:
                allocation_failure("load", spec.name)
            return spec.loader(device)
        return load

    engine = build_engine(data_dir=folder / "data", budget=f"{device}={budget}", store=False, device=device,
                          specs=[dataclasses.replace(s, loader=loader(s)) for s in specs.values()])
    ledger_only = _Count("admitted on the ledger alone")
    logging.getLogger("engine.pool").addHandler(ledger_only)
    process = psutil.Process()
    baseline = process.memory_info().rss
    device_base = engine.devices.memory(device).used
    peaks = {"rss": 0, "engine": 0, "device": 0}
    over: list = []  # the pool's instances the first time its own accounting passed the budget
    at_peak: dict = {}  # what the pool held when the process's RSS peaked
    samples, stop, t0 = [], threading.Event(), time.monotonic()

    def sample():
        while not stop.wait(0.01):
            now = process.memory_info().rss - baseline
            held = engine.pool.engine_bytes(device)
            if now > peaks["rss"]:
                at_peak.clear()
                at_peak.update(_state(engine.pool, device, process, baseline))
            peaks["rss"], peaks["engine"] = max(peaks["rss"], now), max(peaks["engine"], held)
            if device != "cpu":
                peaks["device"] = max(peaks["device"], engine.devices.memory(device).used - device_base)
            if held > budget and not over:
                with engine.pool._cond:
                    over.extend(f"{i.spec.name} {i.state} {i.bytes >> 20}+{i.run_reserved >> 20} MiB "
                                f"(footprint {footprints.get(i.spec.name, 0) >> 20} MiB)" for i in engine.pool._instances)
            if not samples or time.monotonic() - t0 - samples[-1][0] >= 0.1:
                samples.append((round(time.monotonic() - t0, 2), round(now / 2**20, 1), round(held / 2**20, 1)))

    threading.Thread(target=sample, daemon=True).start()
    outcomes = [None] * JOBS
    records = [None] * JOBS
    queue = list(range(JOBS))

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop(0)
            name = order[i]
            fn, value = work[name]
            point = inject.get(i)
            if point == "load":
                if name in engine.pool.loaded_models():
                    point = "before"
                else:
                    with lock:
                        fail_next_load.add(name)
            calls = []

            def failing(call, point=point, calls=calls):
                """run.call, failing once for real at `point` inside the first lease."""
                def wrapped(model, use):
                    def inside(m):
                        calls.append(1)
                        first = len(calls) == 1
                        if point == "before" and first:
                            allocation_failure("before", model)
                        out = use(m)
                        if point == "after" and first:
                            allocation_failure("after", model)
                        return out
                    return call(model, inside)
                return wrapped

            try:
                with engine.run(f"stress {name}") as run:
                    records[i] = run.record
                    fn(failing(run.call), value)
                outcomes[i] = "ok"
            except (OutOfMemory, NotEnoughMemory) as exc:
                outcomes[i] = f"oom: {exc}"
            except Exception as exc:  # noqa: BLE001 - counted and reported
                outcomes[i] = f"oom: {exc}" if is_oom(exc) else f"error: {type(exc).__name__}: {exc}"

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    stop.set()
    print(json.dumps({
        "jobs": JOBS, "completed": sum(o == "ok" for o in outcomes),
        "user_visible_oom": sum(o.startswith("oom") for o in outcomes),
        "retries": sum(r.retries for r in records if r is not None),
        "peak_mb": round(peaks["rss"] / 2**20, 1), "budget_mb": round(budget / 2**20, 1), "device": device,
        **({"device_peak_mb": round(peaks["device"] / 2**20, 1)} if device != "cpu" else {}),
        "injected": injected["count"], "injected_at": {p: injected["at"].count(p) for p in POINTS},
        "errors": [o for o in outcomes if o != "ok"][:5],
        "engine_peak_mb": round(peaks["engine"] / 2**20, 1), "over_budget_pool": over, "seconds": round(elapsed, 1),
        "jobs_per_s": round(JOBS / elapsed, 3), "ledger_only_admissions": ledger_only.count, "at_peak": at_peak,
        "load_transients_mb": {k: round(v / 2**20, 1) for k, v in (
            engine.pool.load_peaks.items() if hasattr(engine.pool, "load_peaks") else {}).items()},
        "models": len(used), "footprints_mb": {m: round(v / 2**20, 1) for m, v in footprints.items()},
        "memory": samples}))


class _Count(logging.Handler):
    """Counts the log records that say `text` (the pool's admissions past its own ceiling)."""

    def __init__(self, text: str):
        super().__init__(logging.WARNING)
        self.text, self.count = text, 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += self.text in record.getMessage()


def _state(pool, device: str, process, baseline: int) -> dict:
    """The process against the ledger at one moment (read together, under the pool's lock):
    where a peak past the budget comes from."""
    with pool._cond:
        instances = [f"{i.spec.name} {i.state} {i.bytes >> 20}+{i.run_reserved >> 20}+{getattr(i, 'load_extra', 0) >> 20}"
                     for i in pool._instances if i.state != "idle"]
        overhang, held = pool.overhang(device), pool.engine_bytes(device)
        grown = process.memory_info().rss - baseline
    from engine.measure import heap_free, heap_in_use

    anon, file = rss_parts()
    return {"rss_mb": round(grown / 2**20, 1), "ledger_mb": round(held / 2**20, 1),
            "overhang_mb": round(overhang / 2**20, 1), "busy": instances,
            # What the process's RSS is made of then: anonymous pages (malloc's heap, ONNX Runtime's
            # and torch's buffers, Python's arenas) and file pages (memory-mapped weights, libraries).
            "rss_anon_mb": None if anon is None else round(anon / 2**20, 1),
            "rss_file_mb": None if file is None else round(file / 2**20, 1),
            "heap_in_use_mb": round((heap_in_use() or 0) / 2**20, 1), "heap_free_mb": round((heap_free() or 0) / 2**20, 1)}


def run(verbose: bool = True, device: str = "cpu") -> dict:
    folder = tempfile.mkdtemp(prefix="wimmel-bench-oom-")
    learned = child_json("bench.oom_stress", "learn", folder, device)
    if verbose:
        print(f"footprints learned for {learned['models']}", flush=True)
    result = child_json("bench.oom_stress", "stress", folder, "5", device)
    series = "oom-stress" if device == "cpu" else "oom-stress-gpu"
    save_series(series, {"memory": result.pop("memory"), "budget_mb": result["budget_mb"]})
    if verbose:
        print(result, flush=True)
    return {"scenario": "oom-stress", **result}


if __name__ == "__main__":
    {"learn": learn, "stress": stress}[sys.argv[1]](*sys.argv[2:])
