"""PyTorch helpers: how many bytes a model holds, and giving freed memory back for real."""
from __future__ import annotations

import ctypes
import gc
import sys
from typing import Any


def tensor_bytes(model: Any) -> int:
    """Bytes of the parameters and buffers of a torch module (shared storages counted once)."""
    try:
        import torch
    except ImportError:
        return 0
    if not isinstance(model, torch.nn.Module):
        return 0
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.device)
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def _malloc_trim() -> None:
    # glibc keeps freed small-block heap pages; trimming hands them to the OS so RSS (and every
    # other process) sees the memory as free again.
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def release_cached_memory() -> list[str]:
    """Collect garbage and return cached allocator memory to the device. Returns what was done."""
    done = [f"gc.collect() freed {gc.collect()} objects"]
    _malloc_trim()
    try:
        import torch
    except ImportError:
        return done
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
        done.append("torch.cuda.empty_cache() + ipc_collect()")
    return done


def move_to(model: Any, device: str) -> Any:
    """Move a torch module to a device; other runtimes are left as they are."""
    to = getattr(model, "to", None)
    return to(device) if callable(to) else model
