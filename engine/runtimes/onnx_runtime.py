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


ARENA_MODES = ("keep", "shrink", "off", "pattern")


def session(model: str | os.PathLike | bytes, device: str, *, threads: int | None = None,
            arena: str | None = None, cuda_options: dict | None = None) -> Any:
    """An InferenceSession on `device` ('cpu' or 'cuda:N').

    threads: intra-op threads on the CPU (default: the cores this process may use); one inter-op
    thread, as the models here run sequentially. arena: what ONNX Runtime's CPU arena does with a
    run's memory once the run ends (None: WIMMEL_ORT_ARENA, default "keep"). On the CPU the
    memory pattern is off in every mode but "pattern". Measured in bench/onnx_arena.py (style at
    five sizes, nsfw at two batches) and bench oom-stress; none is both fast and true to the
    budget yet:
    - "keep" (default): the fastest with "pattern". A session keeps its largest run's buffers,
      outside every footprint: the first call after a load learns them (FootprintStore's
      first-call peaks) and the pool counts them in the process's overhang, so admission sees
      them, but they go only with the session. A size seen before runs within them.
    - "pattern": keep with ONNX Runtime's memory pattern (its own default): after a shape's first
      run its buffers come as one planned block, and a block that fits no free room doubles the
      arena: style's second run at 1280x720 took 512 MiB against 96 for its first, and the same
      runs ended 486 MiB above "keep" (1093 against 607 MiB). Run time 0.83-1.51x keep's (three
      runs of the bench).
    - "shrink": the arena gives back every region it no longer uses after each run (run option
      memory.enable_memory_arena_shrinkage); 1.0-1.5x keep's run time, and it grows in powers of
      two, so a peak steps with the size (style 512x512 142 MiB, 640x480 86 MiB): a size never seen was
      predicted at 58 MiB and took 108 (tests/test_predict.py), and oom-stress passed its budget
      by 11 %.
    - "off": every buffer from malloc. Held the budget in oom-stress once, but up to 2.5x slower,
      and glibc's moving mmap threshold made a run's RSS growth depend on what the heap held
      before (style 384x384 194 MiB, 512x512 106). A fixed threshold (mallopt M_MMAP_THRESHOLD
      128 KiB) made every peak exact and affine (10, 18, 40, 70 MiB) but runs 1.4-3.6x slower.
      The engine now fixes it at 4 MiB (engine/measure.fix_mmap_threshold), and so does bench
      onnx-arena since 2026-12-06: every size then peaks the same each round (style 1024x576
      158 MiB, 1280x720 247 MiB), at 2.3-4.0x keep's time (two runs). bench estimate under
      WIMMEL_ORT_ARENA=off: median error 0.215 fresh, 0.115 after a restart (keep: 0.29-0.32,
      0.15-0.17), as many under-estimates (0.30, 0.19): nearer issue 16's goal, not at it.
    cuda_options are added to the CUDA provider's (e.g. cudnn_conv_algo_search for inputs whose
    shape changes every call).
    """
    import onnxruntime

    arena = arena or os.environ.get("WIMMEL_ORT_ARENA", "keep")
    if arena not in ARENA_MODES:
        raise ValueError(f"arena must be one of {ARENA_MODES}, not {arena!r}")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's own default counts the machine's cores, not the ones this process may use.
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena != "off"
    if arena != "pattern" and not device.startswith("cuda"):
        # The memory pattern plans a shape's buffers after its first run and takes the plan as one
        # block from then on. In the arena a block of a new size found no room among the old ones
        # and the arena doubled (style at 1280x720, a second time: 512 MiB); without an arena a
        # second run at a size took 309 MiB against 194 for the first (1024x576). Without it every
        # run of a size peaks the same, at the same speed (bench onnx-arena).
        options.enable_mem_pattern = False
    providers: list[Any] = [CPU]
    if device.startswith("cuda") and cuda_works():
        index = int(device.partition(":")[2] or 0)
        providers = [(CUDA, {"device_id": index, "arena_extend_strategy": "kSameAsRequested",
                             **(cuda_options or {})}), CPU]
    elif device.startswith("cuda"):
        raise RuntimeError(f"{device} was asked for, but no CUDA provider of onnxruntime loads here "
                           "(python launch.py doctor says why)")
    source = model if isinstance(model, bytes) else str(model)
    if arena != "shrink":   # keep, off, pattern
        return onnxruntime.InferenceSession(source, options, providers=providers)
    return _shrinking_class()(source, options, providers=providers)


@functools.lru_cache(maxsize=1)
def _shrinking_class() -> type:
    import onnxruntime

    class ShrinkingSession(onnxruntime.InferenceSession):
        """Runs with the CPU arena shrunk at the end of each run, unless the caller passes run
        options of its own. Every call site stays `session.run(None, feed)`."""

        def run(self, output_names, input_feed, run_options=None):
            if run_options is None:
                run_options = _shrink_options()
            return super().run(output_names, input_feed, run_options)

    return ShrinkingSession


@functools.lru_cache(maxsize=1)
def _shrink_options() -> Any:
    import onnxruntime

    options = onnxruntime.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def provider_of(session: Any) -> str:
    """The provider a session actually runs on (its first), for run records."""
    return session.get_providers()[0]
