"""Swap cost: bringing a 256 MiB torch model into memory, against the floor of reading its bytes.

- bytes: the safetensors file's size.
- raw_read_s: reading the file's bytes into a fresh buffer (readinto), the floor.
- engine_load_s: from the pool's load request (engine.infer on an unloaded model) until the model
  has produced its first output, minus the time of that same forward on the resident model.
- naive_load_s: what most apps do: build the module (default initialisation of every weight),
  load_state_dict from the file, first output; minus the same forward.
- ratio: engine_load_s / raw_read_s.
- restore_s: bringing an evicted model back where the engine parks models in RAM. The pool parks
  no model (on a CPU-only machine RAM is the device itself), so this is null here; an evicted
  model comes back from the file, which is engine_load_s.

Warm page cache (the file is read once first); median of REPEATS, the three ways interleaved in
rotating order so that all see the same machine load.
"""
from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

from .common import median, save_series, save_stack, stack, stack_spec

SIZE_MIB = 256
REPEATS = 5


def _forward(net):
    import torch

    with torch.inference_mode():
        return net(torch.ones(1, 1024)).sum().item()


def _raw_read(path: Path) -> float:
    size = path.stat().st_size
    started = time.perf_counter()
    buffer = bytearray(size)
    with open(path, "rb", buffering=0) as f:
        view, done = memoryview(buffer), 0
        while done < size:
            got = f.readinto(view[done:])
            if not got:
                break
            done += got
    elapsed = time.perf_counter() - started
    assert done == size
    del view, buffer
    return elapsed


def _naive(path: Path) -> tuple[float, float]:
    """(seconds to first output, seconds of that forward on the resident module)."""
    from safetensors.torch import load_file

    started = time.perf_counter()
    net = stack(SIZE_MIB)
    net.load_state_dict(load_file(str(path)))
    net.eval()
    _forward(net)
    total = time.perf_counter() - started
    started = time.perf_counter()
    _forward(net)
    forward = time.perf_counter() - started
    del net
    return total, forward


def _engine_load(engine) -> tuple[float, float]:
    engine.pool.unload("swap-model")
    started = time.perf_counter()
    engine.infer("swap", "swap-model", _forward)
    total = time.perf_counter() - started
    model = engine.pool._instances[0].model
    started = time.perf_counter()
    _forward(model)
    forward = time.perf_counter() - started
    del model
    return total, forward


def _settle() -> None:
    from engine.runtimes.torch_runtime import release_cached_memory

    gc.collect()
    release_cached_memory()


def run(verbose: bool = True, repeats: int = REPEATS) -> dict:
    from engine import Engine

    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-swap-"))
    path = save_stack(folder / "swap-model.safetensors", SIZE_MIB)
    size = path.stat().st_size
    engine = Engine(folder / "data", reserve=0, specs=[stack_spec(path, "swap-model", SIZE_MIB)])
    _raw_read(path)  # warm the page cache
    engine.infer("swap", "swap-model", _forward)  # and the engine's own first-call costs

    ways = {"raw": lambda: (_raw_read(path), 0.0), "engine": lambda: _engine_load(engine),
            "naive": lambda: _naive(path)}
    times = {name: [] for name in ways}
    forwards = {"engine": [], "naive": []}
    order = list(ways)
    for r in range(repeats):
        for name in order[r % 3:] + order[:r % 3]:
            _settle()
            total, forward = ways[name]()
            times[name].append(total)
            if name in forwards:
                forwards[name].append(forward)
        if verbose:
            print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()), flush=True)

    forward_s = median(forwards["engine"] + forwards["naive"])
    raw = median(times["raw"])
    engine_s = median(times["engine"]) - forward_s
    naive_s = median(times["naive"]) - forward_s
    save_series("swap", {"raw_read_s": times["raw"], "engine_total_s": times["engine"],
                         "naive_total_s": times["naive"], "forward_s": forward_s})
    engine.pool.unload("swap-model")
    os.remove(path)
    return {"scenario": "swap", "bytes": size,
            "raw_read_s": round(raw, 4), "engine_load_s": round(engine_s, 4),
            "naive_load_s": round(naive_s, 4), "ratio": round(engine_s / raw, 3),
            "restore_s": None, "forward_s": round(forward_s, 4), "repeats": repeats}
