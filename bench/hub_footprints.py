"""Every hub network's footprint on a random-weight graph of its real size (issue 20): the real
files cannot be downloaded here, so for each manifest entry (tabs.catalog.hub_file_entries) a graph
is built with exactly the entry's inputs and outputs and one weight tensor of the real file's
bytes, brought into a fresh data dir as a user's own file is, and loaded through the engine's pool
(in a child process of its own, so its footprint is its own). Its forward pass reads one weight at
an index the input decides (so the weights cannot be folded away), then broadcasts the mean of its
first input to each output's shape: the weights' share of the memory is real, the activations are
not (they stay the manifest's estimate until a real run).

- file_mib: the graph's size on disk (the real file's size, from the manifest; where no source
  gives it, the size the spec expects).
- footprint_mib: the load bytes the engine measured; estimate_mib: what the spec declares (the
  file size), which admission reserves before the first measurement.
- run_peak_mib: the engine's measured peak of one forward pass on the signature's shapes (free
  axes 1); activations_mib: the spec's estimate of a real run's activations.
- load_s: the first load (session build over the file).

`python -m bench hub-footprints [--json]`; `WIMMEL_BENCH_ONLY=gfpgan-1.4,...` limits the set.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_TYPES = {"float32": 1, "uint8": 2, "int64": 7, "float16": 10, "float64": 11}
# What a loader reads from a graph besides running it: inswapper's emap is its last initializer.
EXTRA_WEIGHTS = {"inswapper-128": ("emap", (512, 512))}


def _concrete(shape) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def same_size_graph(entry, path: Path, weight_bytes: int | None = None) -> Path:
    """A graph with entry's signature whose weights weigh entry.size bytes, or weight_bytes (float32
    zeros: the file's size and the memory are what is measured, not what the network computes)."""
    from onnx import TensorProto, helper, numpy_helper, save

    extra = EXTRA_WEIGHTS.get(entry.name)
    extra_count = int(np.prod(extra[1])) if extra else 0
    count = max(1, (weight_bytes or entry.size or 4) // 4 - extra_count)
    weights = [numpy_helper.from_array(np.zeros(count, np.float32), "weights")]
    if extra:
        weights.append(numpy_helper.from_array(np.zeros(extra[1], np.float32), extra[0]))
    first = entry.inputs[0]
    first_name = first.name or "input"
    # One weight gathered at an index the input decides: ONNX Runtime cannot fold it away at load
    # (a sum of the weights alone is a constant it would fold, dropping them), so it keeps them all.
    nodes = [helper.make_node("Cast", [first_name], ["first"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["first"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "nothing"], ["zero"]),
             helper.make_node("Cast", ["zero"], ["index"], to=TensorProto.INT64),
             helper.make_node("Gather", ["weights", "index"], ["picked"]),
             helper.make_node("Add", ["picked", "mean"], ["value"])]
    weights.append(numpy_helper.from_array(np.zeros((), np.float32), "nothing"))
    outputs = []
    for at, tensor in enumerate(entry.outputs):
        name = tensor.name or f"output_{at}"
        shape = _concrete(tensor.shape)
        weights.append(numpy_helper.from_array(np.array(shape, np.int64), f"shape_{at}"))
        nodes += [helper.make_node("Expand", ["value", f"shape_{at}"], [f"float_{at}"]),
                  helper.make_node("Cast", [f"float_{at}"], [name], to=_TYPES[tensor.dtype])]
        outputs.append(helper.make_tensor_value_info(name, _TYPES[tensor.dtype], list(tensor.shape)))
    inputs = [helper.make_tensor_value_info(t.name or (first_name if i == 0 else f"input_{i}"), _TYPES[t.dtype],
                                            list(t.shape)) for i, t in enumerate(entry.inputs)]
    # Inputs past the first are declared, fed, and not read. The extra weight (emap) goes last.
    if extra:
        weights.append(weights.pop(1))
    graph = helper.make_graph(nodes, entry.name, inputs, outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def feeds(entry) -> dict:
    return {t.name or ("input" if i == 0 else f"input_{i}"): np.zeros(_concrete(t.shape), t.dtype)
            for i, t in enumerate(entry.inputs)}


def measure(name: str) -> dict:
    """One entry's numbers, measured in this process (run it in a fresh one: `child`)."""
    from engine.runtimes.torch_runtime import release_cached_memory
    from store import hub_files
    from store.manifest import SESSION_BYTES
    from tabs.catalog import build_engine, hub_file_entries

    entry = next(e for e in hub_file_entries() if e.name == name)
    data = Path(tempfile.mkdtemp(prefix="wimmel-hub-"))
    engine = build_engine(data_dir=data, store=False)
    spec = engine.registry.get(name)
    # A file whose size no source gives (Wav2Lip's) weighs what its spec expects.
    graph = same_size_graph(entry, data / "graphs" / entry.file, entry.size or spec.estimate_bytes - SESSION_BYTES)
    hub_files.bring(entry, graph, data, accept_licence=True, trust_unlisted=True)
    release_cached_memory()
    started = time.perf_counter()
    engine.preload(name)
    load_s = time.perf_counter() - started
    resident = next(row for row in engine.pool.snapshot() if row["name"] == name)
    with engine.run(f"bench {name}") as run:
        run.call(name, lambda model: model.session.run(None, feeds(entry)))
    peaks = engine.footprints.get(name, str(resident["device"])).run_peak_bytes
    return {"file_mib": round(graph.stat().st_size / 2**20, 1), "estimate_mib": round(spec.estimate_bytes / 2**20, 1),
            "footprint_mib": round(resident["bytes"] / 2**20, 1), "load_s": round(load_s, 2),
            "run_peak_mib": round(max(peaks.values(), default=0) / 2**20, 1),
            "activations_mib": round((spec.run_estimate_bytes or 0) / 2**20, 1)}


def run(verbose: bool = True) -> dict:
    from tabs.catalog import hub_file_entries

    names = [e.name for e in hub_file_entries()]
    if only := os.environ.get("WIMMEL_BENCH_ONLY"):
        names = [n for n in names if n in only.split(",")]
    result = {"scenario": "hub-footprints", "networks": {}}
    for name in names:
        done = subprocess.run([sys.executable, "-m", "bench.hub_footprints", name], cwd=ROOT,
                              capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        row = (json.loads(lines[-1]) if done.returncode == 0 and lines
               else {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]})
        result["networks"][name] = row
        if verbose:
            print(f"{name}: {row}", flush=True)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(measure(sys.argv[1])))
