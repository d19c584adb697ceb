"""A record for every call: what ran, where, how long, how much memory, what went wrong.

Records are kept in memory (the latest N) and appended as JSON lines under the data dir.
Warnings raised during a run are captured into its record through a process-wide hook that
routes each warning to the run active in the thread that raised it.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import itertools
import json
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass
class RunRecord:
    id: int
    capability: str
    started: float  # unix time
    models: list[str] = field(default_factory=list)
    device: str = ""
    bucket: str | None = None
    queue_wait_s: float = 0.0  # waiting for a lease or for memory
    load_s: float = 0.0
    compute_s: float = 0.0
    wall_s: float = 0.0
    peak_device_bytes: int | None = None
    peak_rss_bytes: int | None = None
    evictions: list[str] = field(default_factory=list)
    retries: int = 0
    ooms: int = 0
    steps: list[str] = field(default_factory=list)  # OOM recovery steps, in order
    backends: dict[str, str] = field(default_factory=dict)  # model -> what it ran on ('onnxruntime:CPU')
    warnings: list[dict] = field(default_factory=list)
    status: str = "running"  # running / ok / error
    error: str | None = None
    profile: str | None = None  # torch.profiler table when asked for
    tier: str | None = None  # memory tier the call ran at, for pipelines that have tiers
    # The request behind the run (see Request): the API endpoint and its inputs' size key.
    endpoint: str | None = None
    size: str | None = None
    loads: dict[str, float] = field(default_factory=dict)  # model -> seconds its load took in this run
    # Predicted before, measured after: the largest run peak above a model of the run's calls
    # (bytes), and the run's time less loading and waiting (engine/timings.py) in seconds.
    run_bytes_predicted: int | None = None
    run_bytes_measured: int | None = None
    seconds_predicted: float | None = None

    def to_dict(self) -> dict:
        # By hand, not dataclasses.asdict: asdict deep-copies every value recursively, a large
        # part of the engine's own cost per call.
        out = {name: getattr(self, name) for name in _FIELDS}
        for name in ("models", "evictions", "steps"):
            out[name] = list(out[name])
        out["backends"] = dict(self.backends)
        out["loads"] = dict(self.loads)
        out["warnings"] = [dict(w) for w in self.warnings]
        return out


_FIELDS = tuple(f.name for f in fields(RunRecord))


_active: contextvars.ContextVar[RunRecord | None] = contextvars.ContextVar("wimmel_run", default=None)


def current_run() -> RunRecord | None:
    return _active.get()


@dataclass(frozen=True)
class Request:
    """What a user asked for: the API endpoint (its api_name) and the size key of its inputs
    ('px:921600', 's:12.5'; engine/costs.request_size). The app sets it around each request
    (`with Request(...).current():`); the runs started meanwhile, and the jobs submitted, carry
    it, so that timings are learned per endpoint and input size (engine/timings.py)."""
    endpoint: str
    size: str | None = None

    @contextlib.contextmanager
    def current(self):
        token = _request.set(self)
        try:
            yield self
        finally:
            _request.reset(token)


_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar("wimmel_request", default=None)


def current_request() -> Request | None:
    return _request.get()


class RunLog:
    def __init__(self, path: str | os.PathLike | None, keep: int = 500):
        self.path = Path(path) if path else None
        self._records: collections.deque[RunRecord] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._file, self._file_pid = None, -1

    def start(self, capability: str) -> tuple[RunRecord, contextvars.Token]:
        _install_warning_hook()
        request = _request.get()
        record = RunRecord(id=next(self._ids), capability=capability, started=time.time(),
                           endpoint=request and request.endpoint, size=request and request.size)
        with self._lock:
            self._records.append(record)
        return record, _active.set(record)

    def finish(self, record: RunRecord, token: contextvars.Token) -> None:
        _active.reset(token)
        if self.path:
            line = json.dumps(record.to_dict()) + "\n"
            with self._lock:
                self._log_file().write(line)   # line-buffered: on disk when this returns

    def _log_file(self):
        """The log, opened once (an open per call cost more than the write); reopened in a forked child."""
        if self._file is None or self._file_pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file, self._file_pid = self.path.open("a", buffering=1), os.getpid()
            weakref.finalize(self, self._file.close)
        return self._file

    def latest(self, n: int = 50) -> list[RunRecord]:
        """The newest n records, newest first."""
        with self._lock:
            return list(self._records)[::-1][:max(n, 0)]


class WarningTally:
    """Distinct warnings of this process with counts and where they come from (the System tab).

    Process-wide, as warnings themselves are. A warning is keyed by category, message and location.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: dict[tuple, dict] = {}

    def add(self, category: type, message: str, filename: str, lineno: int) -> bool:
        """Count one; True when it is the first of its kind."""
        key = (category.__name__, message, filename, lineno)
        now = time.time()
        with self._lock:
            entry = self._seen.get(key)
            if entry:
                entry["count"] += 1
                entry["last_seen"] = now
                return False
            self._seen[key] = {"category": category.__name__, "message": message,
                               "location": f"{filename}:{lineno}", "source": warning_source(filename),
                               "count": 1, "first_seen": now, "last_seen": now}
            return True

    def summary(self) -> list[dict]:
        with self._lock:
            return sorted((dict(e) for e in self._seen.values()), key=lambda e: -e["count"])


TALLY = WarningTally()
_ROOT = str(Path(__file__).resolve().parents[1])


def warning_source(filename: str) -> str:
    """'wimmel' for our own code (to be fixed), else the package the warning came from."""
    path = filename.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith(_ROOT):
        return "wimmel"
    return "python" if "/lib/python" in path else path.rsplit("/", 1)[-1]


_hook_lock = threading.Lock()


def _install_warning_hook() -> None:
    """Wrap warnings.showwarning so a warning lands on the run of the thread that raised it.

    Checked at every run start: warnings.catch_warnings (pytest, libraries) swaps showwarning
    and restores it later, which would silently drop our hook.
    """
    with _hook_lock:
        # Python's default shows a warning once per location, so a second run would never see
        # it: let it through every time, count it, print only the first of each kind. Appended
        # last, so filters set by the user, by pytest or by a library still win.
        if not any(f[0] == "always" and f[2] is Warning and f[1] is None and f[3] is None for f in warnings.filters):
            warnings.filterwarnings("always", append=True)
        original = warnings.showwarning
        if getattr(original, "_wimmel_hook", False):
            return

        def showwarning(message, category, filename, lineno, file=None, line=None):
            record = _active.get()
            if record is not None:
                record.warnings.append({"category": category.__name__, "message": str(message),
                                        "location": f"{filename}:{lineno}"})
            if TALLY.add(category, str(message), filename, lineno):
                original(message, category, filename, lineno, file, line)

        showwarning._wimmel_hook = True
        warnings.showwarning = showwarning
