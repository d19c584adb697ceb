"""Long jobs: a persisted queue, a scheduler that groups jobs by the heavy model they need, and
resumption from the last finished chunk after a crash.

- Jobs live in SQLite under the data dir; every state change is committed at once, so a closed
  browser or a killed process loses nothing but the chunk in flight.
- A job kind names the model it needs. The scheduler prefers queued jobs whose model is already
  loaded or was just used, so a model loads once for a group instead of once per job; no job is
  passed over more than `max_passed_over` times. At most `model_limit` jobs per model run at once.
- Jobs run in lanes (engine.job_lanes): downloads on io threads of their own, never holding the
  compute jobs behind them; grouping and fairness hold within each lane.
- Jobs have owners (a login, a browser session; None: local use). In the compute lane owners take
  turns, and an owner may have only so many jobs and bytes of input queued (engine.job_shares).
  An admin can pause the compute lane and cancel everything one owner has queued.
- Workers wait on a condition that every submit, finish and cancel signals: no polling sleeps.
- On the CPU, job threads run torch with fewer threads than the machine has, so interactive
  calls still find a free core, and at a lower priority (nice + JOB_NICE; the ffmpeg processes
  and thread pools they start inherit it): a click is answered first when both want the cores.
- With a Ray cluster attached (engine.cluster), jobs run on its workers, routed by model; this
  queue stays the truth, and a job whose worker dies resumes on another from its checkpoint;
  io jobs stay on the head.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import job_lanes as lanes
from . import job_shares as shares
from .devices import lower_thread_priority
from .errors import UserFacingError
from .job_context import (RESUME_UNITS, JobCancelled, JobContext, JobFailed,  # noqa: F401  (engine.jobs names)
                          WorkerLost, describe_failure)
from .job_shares import QueueLimit  # noqa: F401  (engine.jobs names)
from .job_store import ANY, FIELDS, TERMINAL, WAITING, JobStore  # noqa: F401  (engine.jobs names)
from .runs import Request, current_request

log = logging.getLogger(__name__)

JOB_NICE = 10   # CFS weight 110 against an interactive thread's 1024: about a tenth of a contended core


class JobStateError(UserFacingError, ValueError):
    """Asked for something the job's state does not allow (retrying a job that is running)."""


@dataclass(frozen=True)
class JobKind:
    capability: str
    model: str  # the model the job needs most: the grouping key
    run: Callable[["JobContext"], str]  # returns the result file's path
    # The capability's check, called at submit with the params and the input files: raises
    # UserFacingError for a request the job could never run (a bad mode, a video without frames),
    # so the user hears it now, not after the queue.
    check: Callable[[dict, dict[str, Path]], None] | None = None
    lane: str = lanes.COMPUTE  # engine.job_lanes: "io" (downloads) holds no compute job behind it

    def __post_init__(self):
        if self.lane not in lanes.LANES:
            raise ValueError(f"lane must be one of {lanes.LANES}, not {self.lane!r}")


class JobQueue:
    def __init__(self, engine, data_dir: str | os.PathLike, *, workers: int = 1, io_workers: int = 2,
                 max_passed_over: int = 4, model_limits: dict[str, int] | None = None,
                 job_threads: int | None = None, policy: str = "grouped", defaults: dict | None = None,
                 cluster=None, max_queued_per_owner: int | None = None,
                 max_upload_bytes_per_owner: int | None = None, job_nice: int = JOB_NICE):
        if policy not in ("grouped", "fifo"):
            raise ValueError("policy must be 'grouped' or 'fifo'")
        if io_workers < 1:
            raise ValueError("io_workers must be at least 1: io jobs (downloads) have no other lane")
        if not 0 <= job_nice <= 19:
            raise ValueError("job_nice is 0 to 19: how many nice steps job threads run below the process")
        self.engine = engine
        self.root = Path(data_dir)
        self.store = JobStore(self.root / "jobs.sqlite")
        self.kinds: dict[str, JobKind] = {}
        # workers: the compute lane's threads (in-process); io_workers: the io lane's, always here.
        self.workers, self.io_workers = workers, io_workers
        self.max_passed_over, self.policy = max_passed_over, policy
        # Params every job sees unless it sets its own (the server's --chunk-frames, say), merged
        # under the job's params when it runs: its kind reads them from ctx.params.
        self.defaults = dict(defaults or {})
        self.model_limits = dict(model_limits or {})
        # Per owner: queued-or-running jobs, and bytes of their input files (None: no limit).
        self.limits = shares.Limits(max_queued_per_owner, max_upload_bytes_per_owner)
        self._turns = shares.Turns()   # which owner's job the compute lane offers first
        self.job_threads = job_threads or max(1, (os.cpu_count() or 2) - 1)
        self.job_nice = job_nice
        self._cond = threading.Condition()
        self._running: dict[str, tuple[str, str | None]] = {}  # job id -> (model, cluster worker or None)
        self._cancel: set[str] = set()
        self._versions: dict[str, int] = {}
        self._last_model: dict[str, str] = {}  # lane -> the model its last job needed
        self._stop = False
        self._paused = bool(self.store.setting("paused", False))
        self._threads: list[threading.Thread] = []
        # With a cluster (engine.cluster.Cluster) attached, compute jobs run on its workers, one job
        # thread each, instead of in this process; None: in-process, `workers` threads.
        self.cluster = None
        self._free: set[str] = set()  # cluster workers whose thread waits for a job
        if cluster is not None:
            self.attach(cluster)

    # ---- set-up ----

    def attach(self, cluster) -> None:
        """Run jobs on the workers of a cluster (before start): routed by model, resumed on
        another worker when theirs dies. This queue (SQLite, the job folders) stays the truth."""
        if self._threads:
            raise RuntimeError("attach the cluster before the job queue starts")
        self.cluster = cluster

    def register(self, kind: JobKind) -> None:
        self.kinds[kind.capability] = kind

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def start(self) -> None:
        """Pick up jobs a dead process left running, then start the workers."""
        for job in self.store.all(("running",)):
            log.warning("job %s was running when the process stopped: it resumes", job["id"])
            self.store.update(job["id"], state="interrupted", note="interrupted; resumes from its last chunk")
        self._stop = False
        # A thread per compute seat (per cluster worker with a cluster), and the io lane's here.
        for i, seat in enumerate(lanes.seats(self.workers, self.io_workers, self.cluster)):
            thread = threading.Thread(target=self._work, args=(seat,), daemon=True,
                                      name=f"wimmel-job-{seat.worker or f'{seat.lane}-{i}'}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 30) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()

    # ---- the API ----

    def submit(self, capability: str, params: dict | None = None,
               inputs: dict[str, str | os.PathLike] | None = None, owner: str | None = None) -> str:
        """Queue a job for `owner` (a login or session id; None: local use). Input files are copied
        into the job's folder: uploads may be deleted. QueueLimit: the owner has no room left."""
        if capability not in self.kinds:
            raise KeyError(f"no job kind {capability!r}; known: {sorted(self.kinds)}")
        params = dict(params or {})
        if self.kinds[capability].check:
            # An input not given reaches the check as None, so its message can say what to upload.
            self.kinds[capability].check(dict(params), {name: Path(path) if path else None
                                                        for name, path in (inputs or {}).items()})
        job_id = uuid.uuid4().hex[:12]
        given = {name: Path(path) for name, path in (inputs or {}).items() if path}
        new_bytes = sum(os.path.getsize(path) for path in given.values())
        with self.limits.admit(owner, job_id, new_bytes, self._active, self.job_dir):
            self._store_new(job_id, capability, params, given, owner)
        self._changed(job_id)
        return job_id

    def _store_new(self, job_id: str, capability: str, params: dict, inputs: dict[str, Path],
                   owner: str | None) -> None:
        folder = self.job_dir(job_id) / "input"
        folder.mkdir(parents=True)
        names = {}
        for name, path in inputs.items():
            # One folder per input: a video and a photo may well share a file name.
            names[name] = f"{name}/{path.name}"
            (folder / name).mkdir(exist_ok=True)
            shutil.copyfile(path, folder / names[name])
        job = {f: None for f in FIELDS}
        request = current_request()   # the endpoint it came by: its time is learned for that endpoint
        if request is not None:
            params["_request"] = [request.endpoint, request.size]
        job.update(id=job_id, seq=self.store.next_seq(), capability=capability,
                   model=self.kinds[capability].model, params={**params, "inputs": names},
                   state="queued", progress=0.0, note="queued", created=time.time(), runs=[],
                   checkpoint={}, passed_over=0, attempts=0, owner=owner)
        self.store.insert(job)

    def get(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r}")
        return job

    def list(self, owner: str | None = None) -> list[dict]:
        """Every job (only `owner`'s when given), newest first, with its lane ("compute" or "io")."""
        jobs = self.store.all(owner=ANY if owner is None else owner)
        return [{**j, "lane": lanes.lane_of(self.kinds, j)} for j in jobs[::-1]]

    def cancel(self, job_id: str) -> dict:
        with self._cond:   # read under the lock: a queued job cannot start meanwhile
            job = self.get(job_id)
            if job["state"] in WAITING:
                self.store.update(job_id, state="cancelled", finished=time.time(), note="cancelled")
            elif job["state"] == "running":
                self._cancel.add(job_id)  # the job stops at its next chunk boundary
                if self.cluster is not None:
                    self.cluster.cancel(job_id)
        self._changed(job_id)
        return self.get(job_id)

    def retry(self, job_id: str) -> dict:
        """Queue a failed or cancelled job again; it resumes from its last finished chunk."""
        job = self.get(job_id)
        if job["state"] not in ("failed", "cancelled"):
            raise JobStateError(f"job {job_id} is {job['state']}; only failed or cancelled jobs can be retried")
        # Back in the queue, it counts against its owner's limits again, with the files it holds.
        with self.limits.admit(job["owner"], job_id, shares.folder_bytes(self.job_dir(job_id) / "input"),
                               self._active, self.job_dir):
            self.store.update(job_id, state="queued", error=None, bug=None, finished=None,
                              note="queued again", passed_over=0)
        self._changed(job_id)
        return self.get(job_id)

    # ---- admin controls ----

    @property
    def paused(self) -> bool:
        """Paused: no compute job starts (running ones finish); the io lane goes on. Kept in
        jobs.sqlite, so a restart does not undo an admin's pause."""
        return self._paused

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self.store.set_setting("paused", True)

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self.store.set_setting("paused", False)
            self._cond.notify_all()

    def cancel_owner(self, owner: str | None) -> int:
        """Cancel every queued or running job of `owner` (None: local use's); how many. Running
        ones stop at their next chunk boundary."""
        jobs = self._active(owner)
        for job in jobs:
            self.cancel(job["id"])
        return len(jobs)

    def version(self, job_id: str) -> int:
        """How many times the job changed in this process: a cheap look for followers that poll."""
        with self._cond:
            return self._versions.get(job_id, 0)

    def follow(self, job_id: str, timeout_s: float = 1.0) -> Iterator[dict]:
        """Yield the job each time it changes, until it ends (for progress bars)."""
        seen = -1
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._versions.get(job_id, 0) != seen, timeout_s)
                seen = self._versions.get(job_id, 0)
            job = self.get(job_id)
            yield job
            if job["state"] in TERMINAL:
                return

    # ---- internals ----

    def _changed(self, job_id: str) -> None:
        with self._cond:
            self._versions[job_id] = self._versions.get(job_id, 0) + 1
            self._cond.notify_all()

    def _update(self, job_id: str, **fields) -> None:
        self.store.update(job_id, **fields)
        self._changed(job_id)

    def _active(self, owner: str | None) -> list[dict]:
        return self.store.all(WAITING + ("running",), owner=owner)

    def _cancel_requested(self, job_id: str) -> bool:
        with self._cond:
            return job_id in self._cancel

    def _limit(self, model: str) -> int:
        if model in self.model_limits:
            return self.model_limits[model]
        return self.engine.registry.get(model).max_instances if model in self.engine.registry else 1

    def _pick(self, seat: lanes.Seat) -> dict | None:
        """Choose the next job for a thread of seat.lane (lock held): engine.job_lanes."""
        waiting = self.store.all(WAITING)
        mine = lanes.waiting_for(seat, waiting, self.kinds, self.cluster, self._paused)
        if seat.worker is not None:  # routed by model among the free workers, grouped per worker
            def choose(jobs):
                return self.cluster.route(seat.worker, jobs, self._free, self.policy, self.max_passed_over)
        else:
            here = [model for model, worker in self._running.values() if worker is None]
            busy = {model: here.count(model) for model in here}
            warm = set(here) | set(self.engine.pool.loaded_models()) | {self._last_model.get(seat.lane)}

            def choose(jobs):
                return lanes.choose(jobs, busy, self._limit, warm, self.policy, self.max_passed_over)
        # Compute: owners take turns (engine.job_shares), the grouped rule within each one's jobs.
        fair = seat.lane == lanes.COMPUTE
        pick, passed = shares.first_pick(self._turns.order(mine) if fair else [mine], choose)
        if pick is not None and fair:
            self._turns.picked(pick["owner"])
        for job in passed:
            self.store.update(job["id"], passed_over=job["passed_over"] + 1)
        return pick

    def _work(self, seat: lanes.Seat) -> None:
        worker = seat.worker
        if worker is None:
            lower_thread_priority(self.job_nice)
        try:
            import torch

            if worker is None and not any(d.startswith("cuda") for d in self.engine.devices.names):
                torch.set_num_threads(self.job_threads)  # per thread: interactive calls keep theirs
        except ImportError:
            pass
        while True:
            # A worker Ray is restarting takes no job until it answers again.
            if worker is not None and not self.cluster.wait_ready(worker, lambda: self._stop):
                return
            with self._cond:
                job = None
                while not self._stop:
                    self._free.add(worker)
                    job = self._pick(seat)
                    if job is not None:
                        break
                    self._cond.wait()
                self._free.discard(worker)
                if self._stop:
                    return
                self._running[job["id"]] = (job["model"], worker)
                self._last_model[seat.lane] = job["model"]
                self.store.update(job["id"], state="running", started=job["started"] or time.time(),
                                  attempts=job["attempts"] + 1, note="running" if worker is None
                                  else f"running on {worker}", **({"worker": worker} if worker else {}))
            self._changed(job["id"])
            try:
                self._execute(self.get(job["id"]), worker)
            finally:
                with self._cond:
                    self._running.pop(job["id"], None)
                    self._cancel.discard(job["id"])
                self._changed(job["id"])

    def _execute(self, job: dict, worker: str | None = None) -> None:
        kind = self.kinds.get(job["capability"])
        if kind is None:
            self.store.update(job["id"], state="failed", finished=time.time(),
                              error=f"this server has no {job['capability']} capability")
            return
        records: list = []   # this attempt's run records (a RunRecord here, a dict from a worker)
        try:
            if worker is None:
                result = self._run_here(kind, job, records)
            else:
                result = self.cluster.execute(worker, job, self, records)
            self.store.update(job["id"], state="done", progress=1.0, finished=time.time(), result=str(result),
                              note="done", runs=job["runs"] + _dicts(records))
        except WorkerLost as exc:
            # Its checkpoint stays: the next worker resumes from the last committed chunk.
            log.warning("job %s lost its worker %s: it resumes elsewhere (%s)", job["id"], worker, exc)
            self.store.update(job["id"], state="interrupted", moves=job["moves"] + 1,
                              note=f"worker {worker} lost; resumes from its last chunk",
                              runs=job["runs"] + _dicts(records))
        except JobCancelled:
            self.store.update(job["id"], state="cancelled", finished=time.time(), note="cancelled",
                              runs=job["runs"] + _dicts(records))
        except Exception as exc:
            message, plain = describe_failure(exc, self.root)
            log.warning("job %s failed: %s", job["id"], message)
            self.store.update(job["id"], state="failed", finished=time.time(), error=message, note="failed",
                              bug=int(not plain), runs=job["runs"] + _dicts(records))

    def _run_here(self, kind: JobKind, job: dict, records: list):
        came_by = job["params"].get("_request")
        with (Request(*came_by).current() if came_by else contextlib.nullcontext()), \
                self.engine.run(f"job {job['capability']}") as run:
            records.append(run.record)
            return kind.run(JobContext(self, job, run))


def _dicts(records: list) -> list[dict]:
    return [r if isinstance(r, dict) else r.to_dict() for r in records]
