"""Progress of an add: throttled (fraction, message) reports that also check for cancellation,
and a tqdm class that feeds the hub client's byte counts into them."""
from __future__ import annotations

import threading
import time
from typing import Callable

from engine import format_bytes

Progress = Callable[[float, str], None]


class Reporter:
    """Throttled (fraction, message) reports; checks for cancellation on every update."""

    def __init__(self, progress: Progress | None, cancelled: Callable[[], None] | None, every_s: float = 0.25):
        self.progress, self.cancelled, self.every_s = progress, cancelled, every_s
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        if self.cancelled is not None:
            self.cancelled()
        if self.progress is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self.every_s:
                return
            self._last = now
        self.progress(max(0.0, min(1.0, fraction)), message)

    def bytes(self, done: int, total: int, what: str, start: float = 0.0, span: float = 1.0,
              force: bool = False) -> None:
        fraction = done / total if total else 0.0
        force = force or done >= total  # the end of each phase is always reported
        self(start + span * fraction, f"{what}: {format_bytes(done)} of {format_bytes(total)}", force)

    def counter(self, total: int, what: str, start: float = 0.0, span: float = 1.0) -> Callable[[int], None]:
        """A step(n_bytes) callback that reports the running sum against `total`."""
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            self.bytes(done[0], total, what, start, span)

        return step


def tqdm_class(report: Reporter, what: str, span: float):
    """A tqdm class for huggingface_hub that feeds byte progress to `report` (nothing printed)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Bar(hf_tqdm):
        def __init__(self, *args, **kwargs):
            self._wimmel_name = kwargs.get("name") or ""
            self._wimmel_bytes = kwargs.get("unit") == "B"
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.n = kwargs.get("initial", 0) or 0

        def update(self, n=1):
            self.n += n or 0
            # The transfer bar's total is a guess (xet dedup); the reconstruct / file bar is exact.
            if self._wimmel_bytes and not self._wimmel_name.endswith(".transfer") and self.total:
                report.bytes(int(self.n), int(self.total), what, 0.0, span)
            elif report.cancelled is not None:
                report.cancelled()

        def close(self):
            pass

    return Bar
