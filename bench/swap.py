"""Swap cost: bringing a 256 MiB torch model into memory, against the floor of reading its bytes.

- bytes: the safetensors file's size.
- raw_read_s: reading the file's bytes into a fresh buffer (readinto), the floor.
- engine_load_s: from the pool's load request (engine.infer on an unloaded model) until the model
  has produced its first output, minus the time of that same forward on the resident model.
- naive_load_s: what most apps do: build the module (default initialisation of every weight),
  load_state_dict from the file, first output; minus the same forward.
- ratio: engine_load_s / raw_read_s.
- restore_s: where a CUDA GPU is, the same model on cuda:0 evicted by the pool into pinned host
  RAM (engine/parking.py) and brought back by a copy (the pool's own load_s of the restore,
  median), against ceiling_s: its bytes at the pinned host-to-device rate measured here
  (restore_ratio = restore_s / ceiling_s); gpu_load_s: the same model loaded from its file onto
  the GPU after a plain unload, interleaved with the restores; park_s: the eviction into host
  RAM. On a CPU-only machine restore_s is null and `parking` says why parking does not apply
  there; an evicted model comes back from the file, which is engine_load_s.

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
PINNED_BYTES = 1024**3


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


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times)


def h2d_rates(device: str = "cuda:0", nbytes: int = PINNED_BYTES) -> dict:
    """Host-to-device copy rates (GB/s, median): from pinned memory (the ceiling of any load or
    restore) and from pageable memory."""
    import torch

    host = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    pageable = torch.empty(nbytes, dtype=torch.uint8)
    target = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def copy(source):
        target.copy_(source, non_blocking=True)
        torch.cuda.synchronize(device)

    copy(host)
    pinned = nbytes / _median_seconds(lambda: copy(host), 7) / 1e9
    pageable_gbs = nbytes / _median_seconds(lambda: copy(pageable), 5) / 1e9
    del host, pageable, target
    torch.cuda.empty_cache()
    return {"pinned_h2d_GBps": round(pinned, 2), "pageable_h2d_GBps": round(pageable_gbs, 2)}


def restore_seconds(engine, name: str, repeats: int) -> dict:
    """`repeats` times, interleaved so that both see the same machine: unload `name` and load it
    from its file (load_s), then park it (the pool's eviction, into pinned host RAM) and load it
    again, which restores it by a copy. Lists of seconds; `restored`: every such load was a restore."""
    park, restore, wall, loads, restored = [], [], [], [], True
    for _ in range(repeats):
        engine.pool.unload(name)
        started = time.perf_counter()
        engine.preload(name)
        loads.append(time.perf_counter() - started)
        started = time.perf_counter()
        engine.pool.unload(name, park=True)
        park.append(time.perf_counter() - started)
        if not any(p.name == name for p in engine.pool.lot.parked):
            raise RuntimeError(f"{name} was not parked (see engine.parking.Parking.parkable)")
        started = time.perf_counter()
        engine.preload(name)
        wall.append(time.perf_counter() - started)
        (instance,) = [i for i in engine.pool._instances if i.spec.name == name]
        restore.append(instance.load_s)
        restored &= any(s.startswith(f"restored {name} from") for s in engine.runs.latest(1)[0].steps)
    return {"park_s": park, "restore_s": restore, "restore_wall_s": wall, "load_s": loads, "restored": restored}


def gpu_restore(path: Path, mib: int, repeats: int, device: str = "cuda:0") -> dict:
    """The model at `path` on the GPU: restore from parking against the pinned copy ceiling, and
    against loading it from its file."""
    import dataclasses

    from engine import Engine

    rates = h2d_rates(device)
    spec = dataclasses.replace(stack_spec(path, "swap-gpu", mib), device="auto")  # the engine's default: cuda:0
    engine = Engine(Path(tempfile.mkdtemp(prefix="wimmel-bench-restore-")), reserve=0, specs=[spec])
    times = restore_seconds(engine, "swap-gpu", repeats)
    engine.pool.unload("swap-gpu")
    size = path.stat().st_size
    ceiling = size / (rates["pinned_h2d_GBps"] * 1e9)
    restore = median(times["restore_s"])
    return {**rates, "ceiling_s": round(ceiling, 4), "restore_s": round(restore, 4),
            "restore_ratio": round(restore / ceiling, 2), "restore_wall_s": round(median(times["restore_wall_s"]), 4),
            "park_s": round(median(times["park_s"]), 4), "gpu_load_s": round(median(times["load_s"]), 4),
            "restored": times["restored"], "restores_s": [round(x, 4) for x in times["restore_s"]]}


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
    result = {"scenario": "swap", "bytes": size,
              "raw_read_s": round(raw, 4), "engine_load_s": round(engine_s, 4),
              "naive_load_s": round(naive_s, 4), "ratio": round(engine_s / raw, 3),
              "restore_s": None, "forward_s": round(forward_s, 4), "repeats": repeats}
    from engine.parking import NOT_ON_CPU

    from .gpu import why_no_gpu

    no_gpu = why_no_gpu()
    if no_gpu:
        result["parking"] = f"{NOT_ON_CPU} ({no_gpu})"
    else:
        result.update(gpu_restore(path, SIZE_MIB, repeats))
        result["parking"] = "evicted to pinned host RAM, restored by a host-to-device copy"
        if verbose:
            print(f"restore {result['restore_s']:.4f} s against a ceiling of {result['ceiling_s']:.4f} s "
                  f"(load from file onto the GPU {result['gpu_load_s']:.4f} s)", flush=True)
    os.remove(path)
    return result
