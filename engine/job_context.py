"""What a running job sees (engine.jobs re-exports these names): its params and folder, progress,
checkpoints, cancellation, and model calls through its run; and how a job's end is told."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Callable

from .errors import UserFacingError
from .oom import NotEnoughMemory, OutOfMemory

RESUME_UNITS = ("frame", "s", "chunk")


class JobCancelled(Exception):
    pass


class WorkerLost(Exception):
    """The cluster worker running a job died mid-job: the job goes back to the queue."""


class JobFailed(Exception):
    """A job failed on a cluster worker: the message as describe_failure gave it there."""

    def __init__(self, message: str, plain: bool):
        super().__init__(message)
        self.message, self.plain = message, plain


def describe_failure(exc: BaseException, root: Path) -> tuple[str, bool]:
    """(message, plain) of a failed job. Our own verdicts read well as they are; anything else is
    a bug: its type goes with it for the log and the API, and the UI says "something went wrong"
    instead (job["bug"])."""
    if isinstance(exc, JobFailed):
        return exc.message, exc.plain
    disk_full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if disk_full:
        return (f"The disk is full: no space left to write in {root}. "
                "Free some space, then retry the job."), True
    plain = isinstance(exc, (UserFacingError, NotEnoughMemory, OutOfMemory))
    return (str(exc) if plain else f"{type(exc).__name__}: {exc}"), plain


class JobContext:
    """What a running job sees: its params and folder, progress, checkpoint, cancel, models."""

    def __init__(self, queue, job: dict, run):
        # queue: the JobQueue (engine.jobs), or a cluster worker's relay with the same few methods.
        # The queue stays private: a job reaches models through call/spec, never through the queue.
        self._queue, self.id, self.run = queue, job["id"], run
        self.params: dict = {**queue.defaults, **job["params"]}
        self.checkpoint: dict = dict(job["checkpoint"])
        self.work_dir = queue.job_dir(self.id)

    def input(self, name: str) -> Path:
        return self.work_dir / "input" / self.params["inputs"][name]

    def progress(self, fraction: float, note: str = "") -> None:
        self._queue._update(self.id, progress=max(0.0, min(1.0, fraction)), note=note)

    def save_checkpoint(self, **values) -> None:
        """Persist what the job has finished; called after the chunk's output is safely on disk."""
        self.checkpoint.update(values)
        self._queue._update(self.id, checkpoint=self.checkpoint)

    def resumed_from(self, position: float, unit: str = "frame") -> None:
        """Where a resumed attempt picked up, in the job's own unit: a video frame, seconds of
        audio ("s"), or a chunk of work ("chunk"). Shown in the Jobs tab as "frame 48",
        "120.0 s", "chunk 2"; `resumed_from_frame` is kept for video jobs (API)."""
        if unit not in RESUME_UNITS:
            raise ValueError(f"unit must be one of {RESUME_UNITS}, not {unit!r}")
        text = f"{position:.1f} s" if unit == "s" else f"{unit} {int(position)}"
        self._queue._update(self.id, resumed_from=text,
                           resumed_from_frame=int(position) if unit == "frame" else None)

    def check_cancelled(self) -> None:
        if self._queue._cancel_requested(self.id):
            raise JobCancelled()

    def call(self, model: str, fn: Callable[[Any], Any], *, degrade=None) -> Any:
        """Lease a model for one step of the job (a chunk), so interactive calls interleave."""
        return self.run.call(model, fn, degrade=degrade)

    def spec(self, model: str):
        """The ModelSpec of a model the job uses (its max_pixels, say)."""
        return self._queue.engine.registry.get(model)
