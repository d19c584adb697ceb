"""Load transients: how far a model's load takes the process above the bytes the model keeps
(file buffers, an ONNX Runtime session's graph build, a state dict copied into a module), per
(model, device kind), persisted beside footprints.json. Admission reserves them while the model
loads (engine/residency.py): a load admitted on its kept bytes alone can pass the budget by its
transient before it settles.

Only a load that had the process to itself is measured (Pool._load): with other calls running,
their allocations would count as this load's."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .models import device_kind
from .files import write_json


class LoadPeaks:
    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, int] = {}
        if self.path and self.path.exists():
            self._data = {k: int(v) for k, v in json.loads(self.path.read_text()).items()}

    @staticmethod
    def _key(model: str, device: str) -> str:
        return f"{model}@{device_kind(str(device))}"

    def extra(self, model: str, device: str) -> int:
        """Bytes above its kept bytes that loading `model` on `device` took at most (0: unknown)."""
        with self._lock:
            return self._data.get(self._key(model, device), 0)

    def record(self, model: str, device: str, peak_growth: int, kept: int) -> int:
        """A clean load grew the process by `peak_growth` at its peak and kept `kept`: keep the
        largest transient seen (a load is the same work each time; the largest bounds it).
        Returns the transient measured."""
        extra = max(0, int(peak_growth) - int(kept))
        with self._lock:
            key = self._key(model, device)
            if extra > self._data.get(key, -1):
                self._data[key] = extra
                if self.path:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    write_json(self.path, self._data, indent=1)
        return extra

    def items(self) -> dict[str, int]:
        with self._lock:
            return dict(self._data)
