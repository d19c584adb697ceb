"""How long each endpoint takes for an input of a given size, which models it leases, and how long
each model's load takes: learned from the run records and persisted (timings.json under the data
dir), so that the cost shown before a run (engine/costs.py) holds at the next start too.

An endpoint is the API name a request came in by (RunRecord.endpoint), or, for a run that did not
come through the app (tests, notebooks), the run's own name without "job ". Its time is the run's
wall time less loading and waiting for a lease: those depend on what is resident and what else
runs, and are told apart. Per input size (the request's size key, "px:921600", "s:12.5") the last
KEEP readings are kept; their median is that size's point, and a size never seen is predicted by
the memory predictor's affine fit (engine/predict.fit) over the points, without its margin: a
time is an expectation, not a reservation. One size only: scaled by size for larger inputs.
"""
from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

from . import predict as fitting
from .files import write_json
from .models import device_kind
from .runs import RunRecord

KEEP = 5            # readings per size (and per model's load): recent enough to follow a change
SAVE_EVERY_S = 5.0  # a new endpoint, size or model is saved at once; new readings of known ones at most this often
MAX_SIZES = fitting.MAX_POINTS
ANY = "any"         # a run without a size key


def endpoint_of(record: RunRecord) -> str:
    return record.endpoint or record.capability.removeprefix("job ")


class TimingStore:
    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        raw = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}
        # "endpoint@kind" -> {"models": [...], "seconds": {size key: [readings]}}
        self._endpoints: dict[str, dict] = raw.get("endpoints", {})
        self._loads: dict[str, list[float]] = raw.get("loads", {})   # "model@kind" -> readings
        self._saved = 0.0

    def learn(self, record: RunRecord) -> None:
        """Take what a finished run tells: its endpoint's models and time, its models' loads."""
        if record.status != "ok" or not record.device:
            return
        kind = device_kind(str(record.device))
        with self._lock:
            new = False   # a new model, endpoint or size is saved at once (SAVE_EVERY_S)
            for model, seconds in record.loads.items():
                new |= f"{model}@{kind}" not in self._loads
                _append(self._loads.setdefault(f"{model}@{kind}", []), seconds)
            if not record.capability.startswith("preload"):
                name = f"{endpoint_of(record)}@{kind}"
                new |= name not in self._endpoints
                entry = self._endpoints.setdefault(name, {"models": [], "seconds": {}})
                added = [m for m in dict.fromkeys(record.models) if m not in entry["models"]]
                entry["models"] += added
                spent = max(record.wall_s - record.load_s - record.queue_wait_s, 0.0)
                sized = fitting.parse_key(record.size or record.bucket)
                key = fitting.size_key(*sized) if sized else ANY
                new |= bool(added) or key not in entry["seconds"]
                _append(entry["seconds"].setdefault(key, []), spent)
                _bound(entry["seconds"])
            if new or time.monotonic() - self._saved > SAVE_EVERY_S:
                self._save()

    def models(self, endpoint: str, device: str) -> list[str]:
        """The models the endpoint's runs leased on this kind of device, in first-use order
        (on the other kind if it never ran on this one); [] when it never ran."""
        with self._lock:
            entry = self._entry(endpoint, device)
            return list(entry["models"]) if entry else []

    def runs(self, endpoint: str, device: str) -> int:
        """How many timed runs of the endpoint are behind its predictions (at most KEEP a size)."""
        with self._lock:
            entry = self._entry(endpoint, device)
            return sum(len(r) for r in entry["seconds"].values()) if entry else 0

    def seconds(self, endpoint: str, size: str | None, device: str) -> float | None:
        """The expected time of a run of `endpoint` on an input of this size, or None."""
        with self._lock:
            entry = self._entry(endpoint, device, exact=True)
            points = {k: statistics.median(v) for k, v in entry["seconds"].items()} if entry else {}
        if not points:
            return None
        sized = fitting.parse_key(size)
        same_unit = [(s, p) for s, p in ((fitting.parse_key(k), p) for k, p in points.items())
                     if s and sized and s[0] == sized[0]]
        if not same_unit:
            return points.get(size or ANY, statistics.median(points.values()))
        at = sized[1]
        pairs = [(s[1], p) for s, p in same_unit]
        if len(pairs) == 1:
            (size0, seconds0), = pairs
            return seconds0 * (at / size0 if size0 > 0 and at > size0 else 1.0)
        return max(fitting.fit(pairs).at(at), min(p for _, p in pairs) * 0.5)

    def load_seconds(self, model: str, device: str) -> float | None:
        with self._lock:
            readings = self._loads.get(f"{model}@{device_kind(str(device))}")
            return statistics.median(readings) if readings else None

    def _entry(self, endpoint: str, device: str, exact: bool = False) -> dict | None:
        kind = device_kind(str(device))
        entry = self._endpoints.get(f"{endpoint}@{kind}")
        if entry is None and not exact:
            entry = self._endpoints.get(f"{endpoint}@{'cuda' if kind == 'cpu' else 'cpu'}")
        return entry

    def _save(self) -> None:
        self._saved = time.monotonic()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"endpoints": self._endpoints, "loads": self._loads}, indent=1)


def _append(readings: list[float], value: float) -> None:
    readings.append(round(float(value), 4))
    del readings[:-KEEP]


def _bound(by_size: dict[str, list[float]]) -> None:
    """Past MAX_SIZES sizes of a unit, the smaller of the two closest in ratio goes."""
    units: dict[str, dict[float, str]] = {}
    for key in by_size:
        sized = fitting.parse_key(key)
        if sized:
            units.setdefault(sized[0], {})[sized[1]] = key
    for keys in units.values():
        while len(keys) > MAX_SIZES:
            small, _ = fitting.closest_pair(list(keys))
            del by_size[keys.pop(small)]
