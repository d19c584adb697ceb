"""Fair shares between the people who share one server (issue 18): whose turn it is in the compute
lane, and how much one person may have queued at once.

- Turns: when several owners (a login name, a browser session id, or None for local use) have
  jobs waiting, the compute lane's next pick goes to the owner whose last pick is oldest (never
  picked: first). Within that owner's jobs the grouped rule holds as before: a job cut off by a
  crash, then one passed over `max_passed_over` times, then one whose model is warm, else the
  oldest. Jobs of the owners who take turns alternate, and an owner's turn still goes to a warm
  model's job when that owner has one, so when everyone queues jobs of the same models the models
  still load once per group. The bound: with N owners waiting, each owner gets one of every N picks
  (a new owner's job is the next pick), and within an owner's own jobs no job is passed over more
  than `max_passed_over` times (passed_over counts only the picks of its owner's later jobs). An
  owner with no job that can start now (its model at its limit, routed to another worker) lets
  the next owner's job start instead of holding the thread idle. With one owner (all local use)
  nothing changes.
- An owner holding a job cut off by a crash (or by a lost cluster worker) goes first: that job
  already holds finished chunks and its place in line.
- Limits (JobQueue's max_queued_per_owner, max_upload_bytes_per_owner): a submit that would take
  an owner past either raises QueueLimit, a UserFacingError with a plain message. Local use
  (owner None) has none: it is the server's own user.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

from .devices import format_bytes
from .errors import UserFacingError

# Owners remembered for their last pick; past this many the oldest half is forgotten (browser
# session ids come and go): a forgotten owner ranks as "never picked", where it already stood.
KEEP_OWNERS = 4096


class QueueLimit(UserFacingError):
    """A submit refused because the owner already has as many queued jobs, or as many bytes of
    queued input files, as the server allows one person."""


class Turns:
    """Whose turn it is in the compute lane: the order in which owners' jobs are offered."""

    def __init__(self):
        self._last: dict[str | None, int] = {}   # owner -> the number of its last pick
        self._picks = 0

    def order(self, waiting: list[dict]) -> list[list[dict]]:
        """The waiting jobs (oldest first) in groups by owner, the owner whose turn it is first:
        one holding an interrupted job, then the one whose last pick is oldest, then the one whose
        oldest job is oldest."""
        groups: dict[str | None, list[dict]] = {}
        for job in waiting:
            groups.setdefault(job["owner"], []).append(job)

        def turn(owner):
            jobs = groups[owner]
            interrupted = any(j["state"] == "interrupted" for j in jobs)
            return not interrupted, self._last.get(owner, -1), jobs[0]["seq"]

        return [groups[owner] for owner in sorted(groups, key=turn)]

    def picked(self, owner: str | None) -> None:
        self._picks += 1
        self._last[owner] = self._picks
        if len(self._last) > KEEP_OWNERS:
            keep = sorted(self._last.items(), key=lambda item: item[1])[len(self._last) // 2:]
            self._last = dict(keep)


def first_pick(groups: list[list[dict]], choose: Callable[[list[dict]], tuple]) -> tuple[dict | None, list[dict]]:
    """(the job, the jobs it passed over) from the first group in turn that has a job to start:
    choose(jobs) is the lane's grouped rule (engine.job_lanes.choose, or cluster routing)."""
    for jobs in groups:
        pick, passed = choose(jobs)
        if pick is not None:
            return pick, passed
    return None, []


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):   # a file removed meanwhile holds nothing
                total += os.path.getsize(os.path.join(dirpath, name))
    return total


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


class Limits:
    """Per-owner limits on queued (or running) jobs and on their input files' bytes on disk.
    Submits in flight (past the check, their files still being copied) count too, by job id, so
    two uploads at once cannot both slip under a limit."""

    def __init__(self, max_jobs: int | None = None, max_bytes: int | None = None):
        for name, value in (("max_queued_per_owner", max_jobs), ("max_upload_bytes_per_owner", max_bytes)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, or None for no limit")
        self.max_jobs, self.max_bytes = max_jobs, max_bytes
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, int]] = {}   # job id -> (owner, its inputs' bytes)

    @contextlib.contextmanager
    def admit(self, owner: str | None, job_id: str, new: int,
              active: Callable[[str], list[dict]], job_dir: Callable[[str], Path]) -> Iterator[None]:
        """Hold a place for job `job_id` (its input files: `new` bytes) while its files are copied
        and it is stored or queued again; raises QueueLimit when the owner has no room.
        active(owner): the owner's queued or running jobs in the store."""
        if owner is None or (self.max_jobs is None and self.max_bytes is None):
            yield
            return
        with self._lock:
            pending = {i: size for i, (who, size) in self._pending.items() if who == owner}
            stored = [j["id"] for j in active(owner) if j["id"] not in pending]
            count = len(stored) + len(pending)
            if self.max_jobs is not None and count >= self.max_jobs:
                raise QueueLimit(f"You already have {_jobs(count)} queued; the limit is {self.max_jobs}. "
                                 "Wait for one to finish or cancel one.")
            if self.max_bytes is not None:
                held = sum(folder_bytes(job_dir(i) / "input") for i in stored) + sum(pending.values())
                if held + new > self.max_bytes:
                    raise QueueLimit(self._bytes_message(held, new))
            self._pending[job_id] = (owner, new)
        try:
            yield
        finally:
            with self._lock:
                self._pending.pop(job_id, None)

    def _bytes_message(self, held: int, new: int) -> str:
        limit = format_bytes(self.max_bytes)
        if held == 0:   # this upload alone is too large: waiting would not help
            return (f"This job's files come to {format_bytes(new)}; the limit for one person's queued "
                    f"files is {limit}. Try a shorter or smaller file.")
        return (f"Your queued jobs already hold {format_bytes(held)} of files and this one adds "
                f"{format_bytes(new)}; the limit is {limit}. Wait for one to finish or cancel one.")
