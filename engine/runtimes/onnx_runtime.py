"""ONNX Runtime sessions, built in one place.

`onnxruntime.get_available_providers()` lists what the installed package was built with, not what
works: onnxruntime-gpu lists CUDA on a machine without a GPU (or with the wrong cuDNN), logs an
error and silently runs on the CPU. Here a provider counts only once a session on a one-node
model was created with it and `session.get_providers()` still names it.
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Any

from ..devices import usable_cores

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@functools.lru_cache(maxsize=1)
def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8   # readable by every onnxruntime this project may meet
    return model.SerializeToString()


def provider_loads(provider: str) -> tuple[bool, str]:
    """(True, "") when a session really runs on `provider`, else (False, why)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4   # the failure is reported by us, once, with a fix
    try:
        with warnings.catch_warnings():   # "not in available provider names": we say it ourselves
            warnings.simplefilter("ignore")
            session = onnxruntime.InferenceSession(_probe_model(), options, providers=[provider, CPU])
    except Exception as exc:  # noqa: BLE001 - any failure means "does not load"
        return False, str(exc).splitlines()[0][:300]
    if provider not in session.get_providers():
        return False, "the session fell back to the CPU (missing CUDA / cuDNN libraries, or no GPU)"
    return True, ""


@functools.lru_cache(maxsize=1)
def working_providers() -> tuple[str, ...]:
    """Providers that truly load, best first; CPU always last."""
    import onnxruntime

    working = []
    for provider in onnxruntime.get_available_providers():
        if provider == CPU or provider not in (CUDA,):
            continue   # TensorRT, OpenVINO...: not configured by us; CUDA or CPU only
        ok, why = provider_loads(provider)
        if ok:
            working.append(provider)
        else:
            log.warning("ONNX Runtime lists %s but it does not load: %s", provider, why)
    return tuple(working) + (CPU,)


def cuda_works() -> bool:
    return CUDA in working_providers()


def spec_device() -> str:
    """The device for a ModelSpec of an ONNX model: 'auto' where CUDA truly works, else 'cpu'
    (the session then lives in RAM whatever the engine's default device is, and is accounted there)."""
    return "auto" if cuda_works() else "cpu"


def session(model: str | os.PathLike | bytes, device: str, *, threads: int | None = None,
            arena: bool = True, cuda_options: dict | None = None) -> Any:
    """An InferenceSession on `device` ('cpu' or 'cuda:N').

    threads: intra-op threads on the CPU (default: the cores this process may use); one inter-op
    thread, as the models here run sequentially. arena: ONNX Runtime's CPU arena, on by default:
    off, admission under a budget below two models' sum stalled (tests/test_bench_drift.py: the
    memory the sessions gave back stayed in the process's heap, outside the ledger, so the
    overhang kept admission short); to be solved before it goes off again. Off, a run's memory goes back to malloc when it ends (and to the system at the next trim,
    engine/measure.py): with it on, a session keeps its largest run's peak for ever, out of every
    footprint, and a later run reuses it without growing RSS, so it can be neither learned nor
    budgeted (bench estimate). Measured cost (bench estimate's models at their largest size, warm,
    median of 7, arena off / on): style 1.47x, faces 1.22x, nsfw 1.20x, the six others 0.90-1.08x
    (the pages given back are faulted in again). arena=True where that speed matters more than
    the memory truth. cuda_options are added to the CUDA provider's (e.g. cudnn_conv_algo_search
    for inputs whose shape changes every call).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's own default counts the machine's cores, not the ones this process may use.
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena
    providers: list[Any] = [CPU]
    if device.startswith("cuda") and cuda_works():
        index = int(device.partition(":")[2] or 0)
        providers = [(CUDA, {"device_id": index, "arena_extend_strategy": "kSameAsRequested",
                             **(cuda_options or {})}), CPU]
    elif device.startswith("cuda"):
        raise RuntimeError(f"{device} was asked for, but no CUDA provider of onnxruntime loads here "
                           "(python launch.py doctor says why)")
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=providers)


def provider_of(session: Any) -> str:
    """The provider a session actually runs on (its first), for run records."""
    return session.get_providers()[0]
