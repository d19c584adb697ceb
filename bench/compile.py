"""Eager vs torch.compile vs ONNX Runtime, per torch model, measured side by side in one run.

Models (all CPU here, torch's default thread count, ONNX Runtime given the same):
- face_detector: detect_faces (MTCNN: PNet on a pyramid, RNet, ONet) on skimage's astronaut,
  512x512; "compiled" / "onnx" mean all three nets run that way (engine/runtimes/compiled.py).
- onet_b16: MTCNN's ONet alone on a batch of 16 48x48 crops (a plain conv net, one shape).
- voice_encoder: resemblyzer's 3-layer LSTM speaker encoder (tabs/voices/model.py) on 8 windows of
  160 mel frames, when resemblyzer is installed.

Fields per model:
- eager_ms, compiled_ms, onnx_ms: median latency over REPEATS calls, the three interleaved (in
  rotating order) so that all see the same machine load, after WARMUP calls each.
- compile_s: torch.compile + first calls with an empty inductor cache, in a fresh process
  (what a new machine pays once); compile_warm_s: the same in this process with that cache
  filled (what every later start pays).
- export_s: ONNX export + session + first calls, fresh process, empty cache; onnx_warm_s:
  session from the cached .onnx file + first calls (every later start).
- compile_speedup, onnx_speedup: eager_ms / compiled_ms and eager_ms / onnx_ms (> 1: faster).
- compiled_mode / onnx_mode: what actually ran ('eager' after a fall-back, with *_reason).
- loadavg: the machine's 1-minute load average before and after: other processes share the
  CPU and the medians only compare like with like inside this run.

`python -m bench compile [--json]`; `WIMMEL_BENCH_ONLY=onet_b16,voice_encoder` limits the set;
`WIMMEL_BENCH_THREADS=1` runs torch (and so ONNX Runtime) with that many threads. On a shared
CPU torch's default of one thread per core suffers most: measured here under a load average
of ~5 on 2 cores, detect_faces took 3.8 s at 2 threads and 0.4 s at 1 thread.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 20
WARMUP = 3
MODES = ("eager", "compile", "onnx")


# ---- the models: name -> build(mode, cache_dir) -> (call, [Preparation dicts])


def _face_detector(mode: str, cache_dir: str):
    import skimage.data

    from analysers import face_detector

    model = face_detector.load_mtcnn("cpu", accelerate=mode, cache_dir=cache_dir)
    image = skimage.data.astronaut()
    return (lambda: face_detector.detect_faces(model, image)), list(face_detector.acceleration(model).values())


def _onet(mode: str, cache_dir: str):
    import torch

    from engine.runtimes.compiled import accelerate
    from analysers import face_detector

    net = face_detector.load_mtcnn("cpu").onet
    crops = torch.rand(16, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fast = accelerate(net, [(crops,)], mode, cache_dir, "mtcnn-onet-b16-v1")

    def call():
        with torch.inference_mode():
            return fast(crops)

    return call, [fast.info.as_dict()]


def _voice_encoder(mode: str, cache_dir: str):
    import torch

    from engine.runtimes.compiled import accelerate
    from tabs.voices import model as voices

    encoder = voices.load("cpu")
    mels = torch.rand(8, 160, 40, generator=torch.Generator().manual_seed(0))
    fast = accelerate(encoder, [(mels,)], mode, cache_dir, "resemblyzer-encoder-v1")

    def call():
        with torch.inference_mode():
            return fast(mels)

    return call, [fast.info.as_dict()]


def _voice_reason() -> str | None:
    try:
        from tabs.voices import model as voices
    except Exception as exc:  # noqa: BLE001 - a capability whose packages may be absent
        return f"tabs.voices.model does not import: {exc}"
    return voices.unavailable_reason()


MODELS = {"face_detector": _face_detector, "onet_b16": _onet, "voice_encoder": _voice_encoder}


def _summary(infos: list[dict]) -> dict:
    modes = sorted({info["mode"] for info in infos})
    reasons = [info["reason"] for info in infos if info.get("reason")]
    return {"prepare_s": round(sum(info.get("prepare_s", 0) for info in infos), 2),
            "mode": modes[0] if len(modes) == 1 else "+".join(modes),
            "reason": "; ".join(reasons) or None,
            "exported": any(info.get("exported") for info in infos)}


def _set_threads() -> None:
    if threads := os.environ.get("WIMMEL_BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(threads))  # children inherit the variable, so they match


def _prepare_here(name: str, mode: str, cache_dir: str) -> dict:
    """Build one model in one mode in this process; the preparation summary."""
    _set_threads()
    started = time.perf_counter()
    call, infos = MODELS[name](mode, cache_dir)
    call()
    return dict(_summary(infos), wall_s=round(time.perf_counter() - started, 2))


def _prepare_in_child(name: str, mode: str, cache_dir: str) -> dict:
    """The same in a fresh process: a cold start has nothing of torch's warmed up."""
    proc = subprocess.run([sys.executable, "-m", "bench.compile", name, mode, cache_dir], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"prepare_s": None, "mode": "failed", "reason": " | ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def _bench_model(name: str, verbose: bool) -> dict:
    say = print if verbose else (lambda *a, **k: None)
    cold = {}
    caches = {}
    for mode in ("compile", "onnx"):
        caches[mode] = tempfile.mkdtemp(prefix=f"wimmel-compile-{mode}-")
        say(f"{name}: {mode} cold (fresh process, empty cache) ...", flush=True)
        cold[mode] = _prepare_in_child(name, mode, caches[mode])
        say(f"  {cold[mode]}", flush=True)

    calls, warm = {}, {}
    for mode in MODES:
        started = time.perf_counter()
        call, infos = MODELS[name](mode, caches.get(mode, tempfile.gettempdir()))
        call()
        warm[mode] = dict(_summary(infos), wall_s=round(time.perf_counter() - started, 2))
        calls[mode] = call
        say(f"{name}: {mode} warm prepare {warm[mode]}", flush=True)

    for call in calls.values():
        for _ in range(WARMUP):
            call()
    times = {mode: [] for mode in MODES}
    for i in range(REPEATS):
        order = MODES[i % 3:] + MODES[:i % 3]
        for mode in order:
            started = time.perf_counter()
            calls[mode]()
            times[mode].append(time.perf_counter() - started)
        say(f"{name} {i:2d}: " + ", ".join(f"{m} {times[m][-1] * 1000:.1f} ms" for m in MODES), flush=True)

    for folder in caches.values():
        shutil.rmtree(folder, ignore_errors=True)
    eager, compiled, onnx = (_median_ms(times[m]) for m in MODES)
    return {
        "eager_ms": eager, "compiled_ms": compiled, "onnx_ms": onnx,
        "compile_s": cold["compile"]["prepare_s"], "compile_warm_s": warm["compile"]["prepare_s"],
        "export_s": cold["onnx"]["prepare_s"], "onnx_warm_s": warm["onnx"]["prepare_s"],
        "compile_speedup": _ratio(eager, compiled), "onnx_speedup": _ratio(eager, onnx),
        "compiled_mode": warm["compile"]["mode"], "onnx_mode": warm["onnx"]["mode"],
        "compiled_reason": warm["compile"]["reason"] or cold["compile"].get("reason"),
        "onnx_reason": warm["onnx"]["reason"] or cold["onnx"].get("reason"),
        "onnx_reused_cached_file": not warm["onnx"]["exported"],
    }


def run(verbose: bool = True) -> dict:
    import torch

    _set_threads()
    names = list(MODELS)
    if only := os.environ.get("WIMMEL_BENCH_ONLY"):
        names = [n for n in names if n in only.split(",")]
    load_before = round(os.getloadavg()[0], 2)
    models, skipped = {}, {}
    for name in names:
        if name == "voice_encoder" and (why := _voice_reason()):
            skipped[name] = why
            continue
        models[name] = _bench_model(name, verbose)
    return {"scenario": "compile", "device": "cpu", "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "repeats": REPEATS,
            "loadavg": [load_before, round(os.getloadavg()[0], 2)], "models": models, "skipped": skipped}


if __name__ == "__main__":
    # python -m bench.compile MODEL MODE CACHE_DIR: one cold preparation (used by run()).
    sys.path.insert(0, str(ROOT))
    print(json.dumps(_prepare_here(*sys.argv[1:4])))
