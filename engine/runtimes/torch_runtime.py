"""PyTorch helpers: how many bytes a model holds, and giving freed memory back for real."""
from __future__ import annotations

import gc
from typing import Any

from ..measure import trim_heap


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


def fault_in(model: Any) -> None:
    """Touch one byte per page of a CPU model's tensors.

    Weights loaded from a memory-mapped file (safetensors) only become resident when first read.
    Reading them here bills that memory to the load, where it belongs, instead of to the first
    run, whose learned peak would otherwise carry the whole model for ever.
    """
    try:
        import torch
    except ImportError:
        return
    if not isinstance(model, torch.nn.Module):
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.device.type == "cpu" and tensor.numel():
                storage = tensor.untyped_storage()
                flat = torch.empty(0, dtype=torch.uint8).set_(storage)
                flat[::4096].sum()


def cached_bytes(device: str) -> int:
    """Bytes torch's caching allocator holds on a CUDA device but no tensor uses (0 elsewhere)."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def release_cached_memory(collect: bool = True) -> list[str]:
    """Collect garbage (unless told it is not needed) and return cached allocator memory to the
    device. Returns what was done."""
    done = [f"gc.collect() freed {gc.collect()} objects"] if collect else []
    trim_heap()   # freed heap pages back to the OS, so RSS and other processes see them free
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
