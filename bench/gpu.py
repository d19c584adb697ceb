"""gpu: everything a CUDA machine has to show, in one run of at most 8 minutes, as one JSON line.

- cuda_tests: `pytest -q -m gpu tests/` in a child process (tests/test_cuda.py and every test with
  a GPU path: the converted networks, the ONNX Runtime and CTranslate2 placements): passed /
  failed / skipped / errors, and the failed tests' names.
- tiers: bench/gpu_tiers.py on cuda:0 (each memory tier of the tiny Stable Diffusion pipeline: load
  time, step time, resident and peak memory, pixels against the full tier; then the walk down).
- swap: the host-to-device ceiling (pinned-memory copies, GB/s, median) against loading a model of
  known size through the engine onto the GPU (load after evict, median): ceiling_s is its bytes
  at the pinned rate, ratio = load_s / ceiling_s; evict_s is the unload, device memory checked;
  restore_s: the same model parked by the pool in pinned host RAM and restored by a copy
  (engine/parking.py; the pool's load_s of the restore, median), restore_ratio = restore_s /
  ceiling_s, park_s the eviction into host RAM.
- onnx: three networks the project ships (the PP-OCRv4 text detector, the NSFW classifier, the
  preset style net), each on ONNX Runtime's CUDA and CPU providers: median ms, speedup, and the
  largest difference between the two outputs.
- oom_stress: bench/oom_stress.py on cuda:0 while another process holds 2 GB of the GPU; it
  counts user-visible OOMs (must be 0).

Each part runs in a child process (its own session, killed with everything it started when its
time is up) with a time cap, inside a hard overall deadline; a part that fails or runs out of
time is reported as such and the others still run. On a machine without a usable CUDA GPU it says
so and exits with status 2 at once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT

DEADLINE_S = 470.0  # the whole scenario; 8 minutes with room to print
# (part, cap in seconds): the order is the order of importance.
PARTS = (("cuda_tests", 170), ("tiers", 80), ("swap", 60), ("onnx", 60), ("oom_stress", 150))
EXTERNAL_BYTES = 2 * 10**9
SWAP_MIB = 1024
PINNED_BYTES = 1024**3
MiB = 1024**2


def why_no_gpu() -> str | None:
    """None where a CUDA GPU is usable, else a plain sentence saying why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (run ./setup.sh)"
    if torch.version.cuda is None:
        return f"no GPU: torch {torch.__version__} is a CPU-only build (./setup.sh installs the CUDA build where a GPU is)"
    if not torch.cuda.is_available():
        return f"no GPU: torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable CUDA device here"
    return None


# ---------------------------------------------------------------------------------- children

def _child(args: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, str]:
    """(returncode, stdout, stderr) of a child in its own session; on timeout the whole session is
    killed (the child's own children too) and TimeoutError raised."""
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, **(env or {})})
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise TimeoutError(f"took longer than {timeout:.0f} s") from None
    return process.returncode, out, err


def _last_json(args: list[str], timeout: float) -> dict:
    code, out, err = _child(args, timeout)
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-6:])
        raise RuntimeError(f"exit {code}: {tail[-1500:]}")
    return json.loads(lines[-1])


def cuda_tests(timeout: float) -> dict:
    code, out, err = _child([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
                             "-m", "gpu", "tests/"], timeout)
    summary = (out.strip().splitlines() or [""])[-1]
    counts = {kind: 0 for kind in ("passed", "failed", "skipped", "errors")}
    for number, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary):
        counts["errors" if kind.startswith("error") else kind] = int(number)
    failures = [line.split(" - ")[0].split()[-1] for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {**counts, "rc": code, "summary": summary, "failures": failures[:20]}


def tiers(timeout: float) -> dict:
    result = _last_json([sys.executable, "bench/gpu_tiers.py", "--device", "cuda:0", "--size", "256"], timeout)
    return {key: result[key] for key in ("name", "torch", "diffusers", "size", "xformers", "tiers", "walk")}


def in_child(part: str, timeout: float) -> dict:
    return _last_json([sys.executable, "-m", "bench.gpu", part], timeout)


# ---------------------------------------------------------------------------------- parts run in a child

def swap_part() -> dict:
    from bench.common import reload_seconds, stack_spec
    from bench.swap import _median_seconds, _raw_read, h2d_rates, restore_seconds
    from engine import Engine

    device = "cuda:0"
    rates = h2d_rates(device, PINNED_BYTES)
    pinned_gbs = rates["pinned_h2d_GBps"]

    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-gpu-swap-"))
    spec = stack_spec(folder / "swap-model.safetensors", "swap-model", SWAP_MIB)
    spec = dataclasses.replace(spec, device="auto")  # the engine's default device: cuda:0
    size = Path(spec.source).stat().st_size
    engine = Engine(folder / "data", reserve=0, specs=[spec])
    _raw_read(Path(spec.source))  # the page cache holds the file: the copy, not the disk, is measured
    engine.preload("swap-model")
    base_used = engine.devices.memory(device).used
    loads = reload_seconds(engine, "swap-model", 5)
    evicts = []
    for _ in range(3):
        started = time.perf_counter()
        engine.pool.unload("swap-model")
        evicts.append(time.perf_counter() - started)
        after_evict = engine.devices.memory(device).used
        engine.preload("swap-model")
    engine.pool.unload("swap-model")
    restores = restore_seconds(engine, "swap-model", 5)
    engine.pool.unload("swap-model")
    read_s = _median_seconds(lambda: _raw_read(Path(spec.source)), 3)
    load_s = statistics.median(loads)
    ceiling_s = size / (pinned_gbs * 1e9)
    restore_s = statistics.median(restores["restore_s"])
    return {"bytes": size, **rates,
            "ceiling_s": round(ceiling_s, 4), "load_s": round(load_s, 4), "ratio": round(load_s / ceiling_s, 2),
            "restore_s": round(restore_s, 4), "restore_ratio": round(restore_s / ceiling_s, 2),
            "restore_wall_s": round(statistics.median(restores["restore_wall_s"]), 4),
            "park_s": round(statistics.median(restores["park_s"]), 4), "restored": restores["restored"],
            "page_cache_read_s": round(read_s, 4), "evict_s": round(statistics.median(evicts), 4),
            "device_freed_on_evict_MiB": round((base_used - after_evict) / MiB, 1),
            "loads_s": [round(x, 4) for x in loads]}


def _onnx_inputs(name: str, session) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    if name == "ocr_detector":
        return {session.get_inputs()[0].name: rng.random((1, 3, 736, 736), np.float32)}
    if name == "nsfw":
        return {session.get_inputs()[0].name: rng.random((1, 224, 224, 3), np.float32) * 255 - 117}
    weights = np.zeros(26, np.float32)
    weights[3] = 1.0
    image, style = session.get_inputs()
    return {image.name: rng.random((1, 3, 512, 512), np.float32), style.name: weights}


def onnx_part() -> dict:
    import numpy as np

    from analysers.nsfw import model_path
    from engine.runtimes import onnx_runtime
    from tabs.ocr.model import models_dir
    from tabs.style.model import weights_dir

    works, why = onnx_runtime.provider_loads(onnx_runtime.CUDA)
    if not works:
        return {"error": f"the CUDA provider of onnxruntime does not load: {why}"}
    networks = {"ocr_detector": models_dir() / "ch_PP-OCRv4_det_infer.onnx", "nsfw": model_path(),
                "style_presets": weights_dir() / "multistyle26.onnx"}
    out = {}
    for name, path in networks.items():
        sessions = {device: onnx_runtime.session(path, device) for device in ("cpu", "cuda:0")}
        feeds = _onnx_inputs(name, sessions["cpu"])
        results = {device: s.run(None, feeds) for device, s in sessions.items()}  # warm: kernels, cuDNN search
        for s in sessions.values():
            s.run(None, feeds)
        times = {device: [] for device in sessions}
        for _ in range(10):  # interleaved, so both see the same machine
            for device, s in sessions.items():
                started = time.perf_counter()
                s.run(None, feeds)
                times[device].append(time.perf_counter() - started)
        cpu_ms, cuda_ms = (statistics.median(times[d]) * 1000 for d in ("cpu", "cuda:0"))
        diff = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(results["cpu"], results["cuda:0"]))
        out[name] = {"file": path.name, "cpu_ms": round(cpu_ms, 2), "cuda_ms": round(cuda_ms, 2),
                     "speedup": round(cpu_ms / cuda_ms, 1), "max_abs_diff": round(diff, 5),
                     "providers": sessions["cuda:0"].get_providers()[:1]}
    return out


HOLD = ("import sys, torch; x = torch.empty(int(sys.argv[1]), dtype=torch.uint8, device='cuda:0'); "
        "torch.cuda.synchronize(); print('held', flush=True); sys.stdin.read()")


def oom_part() -> dict:
    from bench import oom_stress
    from engine.devices import read_memory

    before = read_memory("cuda:0").free
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(EXTERNAL_BYTES)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "held":
            raise RuntimeError("the process meant to hold 2 GB of the GPU did not start")
        held = before - read_memory("cuda:0").free
        result = oom_stress.run(verbose=False, device="cuda:0")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    keep = ("jobs", "completed", "user_visible_oom", "retries", "injected", "injected_at", "errors", "budget_mb",
            "device_peak_mb", "peak_mb", "engine_peak_mb", "seconds", "models", "footprints_mb")
    return {"external_MiB": round(held / MiB, 1), **{k: result[k] for k in keep if k in result}}


# ---------------------------------------------------------------------------------- the scenario

def run(verbose: bool = True, deadline_s: float = DEADLINE_S) -> dict:
    no_gpu = why_no_gpu()
    if no_gpu:
        print(f"python -m bench gpu: {no_gpu}. This scenario needs a CUDA GPU; nothing was run.",
              file=sys.stderr, flush=True)
        raise SystemExit(2)
    import torch

    started = time.monotonic()
    result = {"scenario": "gpu", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "cuda": torch.version.cuda}
    runners = {"cuda_tests": cuda_tests, "tiers": tiers, "swap": lambda t: in_child("swap", t),
               "onnx": lambda t: in_child("onnx", t), "oom_stress": lambda t: in_child("oom", t)}
    for name, cap in PARTS:
        left = deadline_s - (time.monotonic() - started)
        if left < 20:
            result[name] = {"skipped": "the overall deadline came first"}
            continue
        part_started = time.monotonic()
        try:
            result[name] = runners[name](min(cap, left - 5))
        except Exception as exc:  # noqa: BLE001 - one part failing must not hide the others
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        result[name]["seconds"] = round(time.monotonic() - part_started, 1)
        if verbose:
            print(f"{name}: {json.dumps(result[name])[:600]}", flush=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    tests, stress = result.get("cuda_tests", {}), result.get("oom_stress", {})
    result["ok"] = (tests.get("failed") == 0 and tests.get("errors") == 0 and tests.get("passed", 0) > 0
                    and stress.get("user_visible_oom") == 0)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps({"swap": swap_part, "onnx": onnx_part, "oom": oom_part}[sys.argv[1]]()))
