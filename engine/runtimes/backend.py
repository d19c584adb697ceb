"""What a loaded model actually runs on, for run records: 'onnxruntime:CPU', 'torch:cuda:0', ..."""
from __future__ import annotations

from typing import Any


def _sessions(model: Any, depth: int = 3) -> list:
    """ONNX Runtime sessions held by a model object (itself, its attributes, lists and dicts)."""
    if hasattr(model, "get_providers") and hasattr(model, "run"):
        return [model]
    if depth == 0 or model is None or isinstance(model, (str, bytes, int, float)):
        return []
    if isinstance(model, dict):
        children = list(model.values())
    elif isinstance(model, (list, tuple)):
        children = list(model)
    else:
        children = list(getattr(model, "__dict__", {}).values())
    return [s for child in children for s in _sessions(child, depth - 1)]


def backend_of(model: Any, runtime: str, device: str) -> str:
    sessions = _sessions(model)
    if sessions:
        # The provider a session really uses is the first it reports (a CUDA session that fell
        # back lists only CPU).
        providers = sorted({s.get_providers()[0].removesuffix("ExecutionProvider") for s in sessions})
        return "onnxruntime:" + "+".join(providers)
    return f"{runtime}:{device}"
