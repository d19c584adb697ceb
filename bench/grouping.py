"""Model loads for 30 interleaved jobs over 3 heavy models: grouped scheduler vs first-in-first-out.

Real torch models (~96 MiB each in safetensors) and a budget that holds one of them, so every
change of model is a real eviction and load. Same jobs, same seeded order, one run each policy.
"""
from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine import Engine, JobKind, ModelSpec

MiB = 1024**2
SIZE_MIB = 96


def _net() -> torch.nn.Sequential:
    return torch.nn.Sequential(*[torch.nn.Linear(1024, 1024, bias=False) for _ in range(SIZE_MIB // 4)])


def _spec(folder: Path, name: str, loads: list) -> ModelSpec:
    path = folder / f"{name}.safetensors"
    if not path.exists():
        save_file(_net().state_dict(), str(path))

    def load(device: str):
        with torch.device("meta"):
            net = _net()
        net.load_state_dict(load_file(str(path), device=device), assign=True)
        loads.append(name)
        return net

    return ModelSpec(name=name, role="heavy", runtime="torch", loader=load, source=str(path),
                     estimate_bytes=SIZE_MIB * MiB, device="cpu")


def _job(model: str) -> JobKind:
    def run(ctx):
        with torch.inference_mode():
            ctx.call(model, lambda net: net(torch.ones(64, 1024)).sum())
        return ""

    return JobKind(f"use-{model}", model, run)


def _one(policy: str, folder: Path, order: list[str], max_passed_over: int) -> dict:
    loads: list[str] = []
    models = sorted(set(order))
    engine = Engine(tempfile.mkdtemp(prefix="wimmel-bench-"), budget=f"cpu={SIZE_MIB * 3 // 2}MiB",
                    reserve=0, specs=[_spec(folder, m, loads) for m in models],
                    job_options={"policy": policy, "max_passed_over": max_passed_over})
    for model in models:
        engine.jobs.register(_job(model))
    ids = [engine.jobs.submit(f"use-{m}") for m in order]
    started = time.perf_counter()
    engine.jobs.start()
    jobs = [list(engine.jobs.follow(i))[-1] for i in ids]
    makespan = time.perf_counter() - started
    engine.jobs.stop()
    assert all(j["state"] == "done" for j in jobs)
    return {"loads": len(loads), "makespan_s": round(makespan, 2),
            "max_passed_over": max(j["passed_over"] for j in jobs)}


def run(verbose: bool = True, jobs: int = 30, max_passed_over: int = 10) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-models-"))
    rng = random.Random(7)
    order = [rng.choice(["a", "b", "c"]) for _ in range(jobs)]
    fifo = _one("fifo", folder, order, max_passed_over)
    grouped = _one("grouped", folder, order, max_passed_over)
    if verbose:
        print(f"fifo {fifo}\ngrouped {grouped}", flush=True)
    return {"scenario": "grouping", "jobs": jobs, "distinct_models": 3, "model_mib": SIZE_MIB,
            "max_passed_over_bound": max_passed_over,
            "loads_fifo": fifo["loads"], "loads_grouped": grouped["loads"],
            "makespan_fifo_s": fifo["makespan_s"], "makespan_grouped_s": grouped["makespan_s"],
            "max_passed_over": grouped["max_passed_over"]}
