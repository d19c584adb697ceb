"""Out-of-memory: recognise it from every runtime, free memory, retry, degrade, retry, then fail.

The steps are recorded on the run, so a user (and the System tab) sees what was tried.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

# Messages of allocation failures that do not come as MemoryError/torch.OutOfMemoryError:
# torch CPU ("DefaultCPUAllocator: can't allocate memory"), CUDA/cuDNN/cuBLAS RuntimeErrors,
# ONNX Runtime ("Failed to allocate memory for requested buffer", std::bad_alloc).
_OOM_MARKERS = (
    "out of memory",
    "not enough memory",
    "can't allocate memory",
    "cannot allocate memory",
    "failed to allocate memory",
    "bad_alloc",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
    "cuda_error_out_of_memory",
    "outofmemory",
)


class OutOfMemory(RuntimeError):
    """Raised when every recovery step failed. Its message lists the steps."""

    def __init__(self, what: str, steps: list[str], cause: BaseException):
        self.steps = steps
        tried = "; ".join(steps) if steps else "nothing could be freed"
        super().__init__(f"{what} ran out of memory even after: {tried}. Last error: {_short(cause)}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


class NotEnoughMemory(RuntimeError):
    """Admission refused: the model never fits, or no room came free before the timeout.

    Not an out-of-memory: nothing failed to allocate, so no recovery step applies."""


def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory from torch (CPU and CUDA), ONNX Runtime and Python itself."""
    if isinstance(exc, (NotEnoughMemory, OutOfMemory)):
        # The engine's own verdicts: recovery was already tried (or does not apply) below us.
        return False
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:
        pass
    # ONNX Runtime raises pybind classes (RuntimeException, Fail) that only their message tells
    # apart; torch's CPU allocator raises a plain RuntimeError.
    if isinstance(exc, (RuntimeError, OSError)) or type(exc).__module__.startswith("onnxruntime"):
        message = str(exc).lower()
        return any(marker in message for marker in _OOM_MARKERS)
    return False


Degrade = Callable[[int], "str | None"]


def call_with_recovery(
    what: str,
    fn: Callable[[], Any],
    *,
    free_memory: Callable[[int], list[str]],
    degrade: Degrade | None = None,
    record: Any = None,
    step_prefix: str = "",
    free_retries: int = 2,
) -> Any:
    """Run fn; on OOM free memory and retry, then degrade step by step and retry.

    `free_memory(n)` frees more with each n (1: idle heavy and micro models, 2: idle interactive
    ones too) and says what it did.
    `degrade(n)` changes the caller's plan (offload, tiles, smaller input) for the n-th time and
    says what it did, or returns None when it has nothing left.
    Each OOM and each step lands on `record` (a RunRecord) when one is given.
    """
    steps: list[str] = []
    frees, degrades = 0, 0
    while True:
        change = None
        try:
            return fn()
        except BaseException as exc:
            if not is_oom(exc):
                raise
            if record is not None:
                record.ooms += 1
            log.warning("%s: out of memory (%s)", what, _short(exc))
            if frees >= free_retries:
                change = degrade(degrades + 1) if degrade else None
                if change is None:
                    raise OutOfMemory(what, steps, exc) from exc
        # Freeing happens here, outside the except block: until it ends, the exception's
        # traceback keeps the failed attempt's tensors alive and gc could not free them.
        if change is None:
            frees += 1
            step = "freed memory: " + ", ".join(free_memory(frees))
        else:
            degrades += 1
            free_memory(free_retries)
            step = f"degraded: {change}"
        steps.append(step)
        if record is not None:
            record.steps.append(step_prefix + step)
            record.retries += 1
