"""30 jobs over 3 heavy models: first-in-first-out, the engine's grouped scheduler, and the seed
article's method, on the same jobs in the same seeded order.

Real torch models (256 MiB each in safetensors, loaded the engine's way: memory-mapped and
faulted in) and a budget that holds one of them (1.5 x a model), so every change of model is a
real eviction and load. A job is one input through its model (one forward pass).

- fifo / grouped: the engine's job queue (one worker) with policy 'fifo' or 'grouped'.
- seed: what the seed article does instead of a scheduler. Each job is its own task that loads
  its model, runs, and frees it; tasks start one after another with a random delay between
  starts, and a task whose load does not fit (out of memory) waits a random delay and retries.
  Delays are scaled by the same factor as job durations: with `job_s` the measured duration of
  one job here (its load plus its batch), the delay between starts is uniform in
  START_DELAY x job_s and the wait after an out-of-memory uniform in RETRY_DELAY x job_s. The
  memory that does not fit is the same budget, enforced as a device of that size would: a load
  that would go past it raises torch.OutOfMemoryError.

Fields: distinct_models, loads_fifo, loads_grouped, loads_seed, makespan_fifo_s,
makespan_grouped_s, makespan_seed_s, max_passed_over (medians over REPEATS; the order is the same
each time, the seed's random delays are seeded per repeat). Context: load_s and job_s (one load,
one job's batch, medians), oom_retries_seed, loads_grouped_unbounded (the grouped scheduler once
more with a fairness bound no job reaches).
"""
from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path

from .common import MiB, median, save_series, save_stack, stack_spec

SIZE_MIB = 256
MODELS = ("a", "b", "c")
START_DELAY = (0.0, 1.0)  # x job_s between task starts (seed)
RETRY_DELAY = (0.5, 2.0)  # x job_s after an out-of-memory (seed)
REPEATS = 3


def _batch(net) -> float:
    import torch

    with torch.inference_mode():
        return float(net(torch.ones(1, 1024)).sum())


def _job(model: str):
    from engine import JobKind

    def run(ctx):
        ctx.call(model, _batch)
        return ""

    return JobKind(f"use-{model}", model, run)


def _engine_run(policy: str, folder: Path, order: list[str], max_passed_over: int) -> dict:
    from engine import Engine

    loads: list[str] = []
    engine = Engine(tempfile.mkdtemp(prefix="wimmel-bench-"), budget=f"cpu={SIZE_MIB * 3 // 2}MiB",
                    reserve=0, specs=[stack_spec(folder / f"{m}.safetensors", m, SIZE_MIB, loads=loads)
                                      for m in MODELS],
                    job_options={"policy": policy, "max_passed_over": max_passed_over})
    for model in MODELS:
        engine.jobs.register(_job(model))
    ids = [engine.jobs.submit(f"use-{m}") for m in order]
    started = time.perf_counter()
    engine.jobs.start()
    jobs = [list(engine.jobs.follow(i))[-1] for i in ids]
    makespan = time.perf_counter() - started
    engine.jobs.stop()
    for model in MODELS:
        engine.pool.unload(model)
    if not all(j["state"] == "done" for j in jobs):
        raise RuntimeError(f"{policy}: jobs ended {[j['state'] for j in jobs]}")
    return {"loads": len(loads), "makespan_s": makespan, "max_passed_over": max(j["passed_over"] for j in jobs)}


class _Device:
    """A device of `capacity` bytes: taking more than is free raises torch's out-of-memory."""

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> None:
        import torch

        with self._lock:
            if self.used + nbytes > self.capacity:
                raise torch.OutOfMemoryError(f"out of memory: tried to allocate {nbytes >> 20} MiB with "
                                             f"{(self.capacity - self.used) >> 20} MiB free")
            self.used += nbytes

    def give(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


def _seed_run(folder: Path, order: list[str], job_s: float, rng: random.Random) -> dict:
    import torch

    from .common import stack_loader

    device = _Device(SIZE_MIB * 3 // 2 * MiB)
    loaders = {m: stack_loader(folder / f"{m}.safetensors", SIZE_MIB) for m in MODELS}
    counts = {"loads": 0, "ooms": 0}
    lock = threading.Lock()
    starts = []
    at = 0.0
    for _ in order:
        starts.append(at)
        at += rng.uniform(*START_DELAY) * job_s
    retry_waits = [[rng.uniform(*RETRY_DELAY) * job_s for _ in range(200)] for _ in order]
    errors: list[BaseException] = []

    def task(i: int, model: str) -> None:
        try:
            time.sleep(max(0.0, t0 + starts[i] - time.perf_counter()))
            for wait in retry_waits[i]:
                try:
                    device.take(SIZE_MIB * MiB)
                except torch.OutOfMemoryError:
                    with lock:
                        counts["ooms"] += 1
                    time.sleep(wait)
                    continue
                try:
                    net = loaders[model]("cpu")
                    with lock:
                        counts["loads"] += 1
                    _batch(net)
                    del net
                finally:
                    device.give(SIZE_MIB * MiB)
                return
            raise RuntimeError(f"task {i} never fitted")
        except BaseException as exc:  # noqa: BLE001 - reported after the join
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=task, args=(i, m), daemon=True) for i, m in enumerate(order)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    makespan = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return {"loads": counts["loads"], "makespan_s": makespan, "ooms": counts["ooms"]}


def _one_job_s(folder: Path) -> tuple[float, float]:
    """Medians of one load and of one job's batch, the way the seed's tasks do them."""
    from .common import stack_loader

    loads, batches = [], []
    for model in MODELS * 2:
        started = time.perf_counter()
        net = stack_loader(folder / f"{model}.safetensors", SIZE_MIB)("cpu")
        from engine.runtimes.torch_runtime import fault_in

        fault_in(net)
        loads.append(time.perf_counter() - started)
        started = time.perf_counter()
        _batch(net)
        batches.append(time.perf_counter() - started)
        del net
    return median(loads), median(batches)


def run(verbose: bool = True, jobs: int = 30, max_passed_over: int = 10, repeats: int = REPEATS) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-models-"))
    for model in MODELS:
        save_stack(folder / f"{model}.safetensors", SIZE_MIB)
    rng = random.Random(7)
    order = [rng.choice(MODELS) for _ in range(jobs)]
    load_s, batch_s = _one_job_s(folder)
    job_s = load_s + batch_s
    results = {"fifo": [], "grouped": [], "seed": []}
    for r in range(repeats):
        results["fifo"].append(_engine_run("fifo", folder, order, max_passed_over))
        results["grouped"].append(_engine_run("grouped", folder, order, max_passed_over))
        results["seed"].append(_seed_run(folder, order, job_s, random.Random(100 + r)))
        if verbose:
            print(f"repeat {r + 1}: " + ", ".join(
                f"{k} {v[-1]['loads']} loads {v[-1]['makespan_s']:.2f} s" for k, v in results.items()), flush=True)
    # The fairness bound can cost a load: the same jobs once more with a bound no job reaches.
    loose = _engine_run("grouped", folder, order, jobs)
    for path in folder.glob("*.safetensors"):
        path.unlink()

    def med(policy: str, key: str):
        return median([one[key] for one in results[policy]])

    save_series("grouping", {k: [one["makespan_s"] for one in v] for k, v in results.items()})
    return {"scenario": "grouping", "jobs": jobs, "distinct_models": len(set(order)),
            "loads_fifo": med("fifo", "loads"), "loads_grouped": med("grouped", "loads"),
            "loads_seed": med("seed", "loads"),
            "makespan_fifo_s": round(med("fifo", "makespan_s"), 2),
            "makespan_grouped_s": round(med("grouped", "makespan_s"), 2),
            "makespan_seed_s": round(med("seed", "makespan_s"), 2),
            "max_passed_over": max(one["max_passed_over"] for one in results["grouped"]),
            "max_passed_over_bound": max_passed_over, "loads_grouped_unbounded": loose["loads"],
            "model_mib": SIZE_MIB,
            "load_s": round(load_s, 3), "job_s": round(batch_s, 3),
            "oom_retries_seed": med("seed", "ooms"), "repeats": repeats}
