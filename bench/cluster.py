"""Issue 17: 24 jobs over 3 models on a local Ray cluster (engine.cluster), side by side in one run:
one worker against two, routing by model (affinity) against round-robin, and a worker killed
mid-way through the jobs.

Real torch models (SIZE_MIB each in safetensors, loaded the engine's way) and a worker budget
that holds one of them (1.5 x a model), so every change of model on a worker is a real eviction
and load. A job is CHUNKS checkpointed chunks, each a batch through its model. The jobs are
queued in interleaved order (a, b, c, a, ...) before the workers start.

Fields: jobs, distinct_models, loads_affinity and loads_round_robin (two workers), makespan_1_s
(one worker, affinity) and makespan_2_s (two workers, affinity), lost (jobs not done after a
worker was killed mid-job; goal 0), resumed_after_kill (jobs that moved to a worker and resumed
from a checkpointed chunk), resumed_from (where they picked up). Context: loads_1, cluster_start_s
(Ray and the workers up), cluster_rss_mib (Ray's processes and the workers, engines built, no
model loaded).
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import psutil

from .common import MiB, stack_spec

SIZE_MIB = 128
MODELS = ("a", "b", "c")
JOBS = 24
CHUNKS = 4
BATCH = 512


def _batch(net) -> float:
    import torch

    with torch.inference_mode():
        return float(net(torch.ones(BATCH, 1024)).sum())


def _job(model: str):
    from engine import JobKind

    def run(ctx):
        done = ctx.checkpoint.get("chunks_done", 0)
        if done:
            ctx.resumed_from(done, "chunk")
        for chunk in range(done, CHUNKS):
            ctx.check_cancelled()
            ctx.call(model, _batch)
            ctx.save_checkpoint(chunks_done=chunk + 1)
            ctx.progress((chunk + 1) / CHUNKS)
        out = ctx.work_dir / "result.txt"
        out.write_text(model)
        return str(out)

    return JobKind(f"use-{model}", model, run)


def worker_engine(data_dir: str, device: str = "cpu", budget: str | None = None, folder: str = ""):
    """Each worker's engine (engine_factory "bench.cluster:worker_engine") and the head's."""
    from engine import Engine

    engine = Engine(data_dir, budget=budget, device=device, reserve=0,
                    specs=[stack_spec(Path(folder) / f"{m}.safetensors", m, SIZE_MIB) for m in MODELS])
    for model in MODELS:
        engine.jobs.register(_job(model))
    return engine


def _round_robin():
    from engine.cluster import Cluster

    class RoundRobin(Cluster):
        """The baseline: job n goes to worker n mod workers, whatever models it holds."""

        def route(self, worker, waiting, free, policy, max_passed_over):
            if worker is None:
                return None, []
            ids = self.worker_ids()
            return next((j for j in waiting if j["seq"] % len(ids) == ids.index(worker)), None), []

    return RoundRobin


def _cluster_rss() -> int:
    return sum(p.memory_info().rss for p in psutil.Process().children(recursive=True) if p.is_running())


def _run(workers: int, folder: Path, *, round_robin: bool = False, kill: bool = False) -> dict:
    from engine.cluster import Cluster

    scratch = Path(tempfile.mkdtemp(prefix="wimmel-bench-cluster-"))
    kwargs = {"budget": f"cpu={SIZE_MIB * 3 // 2}MiB", "folder": str(folder)}
    started = time.perf_counter()
    cluster = (_round_robin() if round_robin else Cluster).start(
        "local", cpu_workers=workers, engine_factory="bench.cluster:worker_engine", engine_kwargs=kwargs,
        data_dir=scratch / "workers")
    start_s, rss = time.perf_counter() - started, _cluster_rss()
    head = worker_engine(str(scratch / "head"), **kwargs)
    head.jobs.attach(cluster)
    try:
        ids = [head.jobs.submit(f"use-{MODELS[i % len(MODELS)]}") for i in range(JOBS)]
        started = time.perf_counter()
        head.jobs.start()
        if kill:
            # Mid-way: the worker running the 10th job, once that job has a checkpointed chunk.
            for job in head.jobs.follow(ids[JOBS // 2 - 2], timeout_s=5):
                if job["state"] == "running" and job["checkpoint"].get("chunks_done", 0) >= 1:
                    break
            victim = next(w for w in cluster.workers() if w["job"] == job["id"])
            os.kill(victim["pid"], signal.SIGKILL)
        jobs = [list(head.jobs.follow(i, timeout_s=5))[-1] for i in ids]
        makespan = time.perf_counter() - started
    finally:
        head.jobs.stop()
        cluster.shutdown()
    moved = [j for j in jobs if j["moves"]]
    return {"loads": sum(len(r["loads"]) for j in jobs for r in j["runs"]), "makespan_s": makespan,
            "lost": sum(j["state"] != "done" for j in jobs), "moved": len(moved),
            "resumed_from": [j["resumed_from"] for j in moved], "start_s": start_s, "rss": rss,
            "workers_used": sorted({j["worker"] for j in jobs if j["worker"]})}


def run(verbose: bool = True) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-models-"))
    one = _run(1, folder)
    two = _run(2, folder)
    rr = _run(2, folder, round_robin=True)
    killed = _run(2, folder, kill=True)
    result = {"jobs": JOBS, "lost": killed["lost"], "loads_affinity": two["loads"], "loads_round_robin": rr["loads"],
              "distinct_models": len(MODELS), "makespan_1_s": round(one["makespan_s"], 2),
              "makespan_2_s": round(two["makespan_s"], 2), "resumed_after_kill": killed["moved"],
              "resumed_from": killed["resumed_from"], "loads_1": one["loads"],
              "makespan_round_robin_s": round(rr["makespan_s"], 2), "makespan_kill_s": round(killed["makespan_s"], 2),
              "cluster_start_s": round(two["start_s"], 1), "cluster_rss_mib": round(two["rss"] / MiB)}
    if verbose:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return result
