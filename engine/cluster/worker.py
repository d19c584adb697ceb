"""The worker actor: its own engine (pool, budget, footprints, run records) on its device, one job
at a time. The head calls run_job, a streaming generator of events:

    {"type": "update", "fields": {...}}               progress, note, where a resumed job picked up
    {"type": "checkpoint", "fields": {...}, "files"}  the files written since the last checkpoint
    {"type": "result" | "cancelled" | "failed", ...}  the end, with the job's run records

After a checkpoint the job waits for the head's ack (the files are in the head's job folder and the
checkpoint is committed to SQLite) before it goes on, so a worker lost at any moment costs at most
the chunk in flight. cancel and status arrive while a job runs (the actor's max_concurrency).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import queue
import shutil
import socket
import threading
from pathlib import Path

from ..devices import lower_thread_priority
from ..jobs import JobCancelled, JobContext, describe_failure
from ..runs import Request
from .files import Changes, unpack

# How long a job waits for the head to commit a checkpoint before it gives up: a head that stops
# answering for this long has lost the job anyway (it resumes elsewhere when the head is back).
ACK_TIMEOUT_S = 600.0


def load_factory(path: str):
    """'package.module:function' -> the function (an import path, so the engine never imports the
    app's layers; the worker process imports them by name)."""
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(f"engine_factory must read 'package.module:function', not {path!r}")
    return getattr(importlib.import_module(module), name)


class _Relay:
    """What JobContext takes for its queue, on a worker: updates become events for the head."""

    def __init__(self, engine, folder: Path, events: queue.Queue, cancelled: set):
        self.engine, self.defaults, self.folder = engine, {}, folder
        self.events, self._cancelled = events, cancelled
        self.changes = Changes(folder)
        self.acks = threading.Semaphore(0)

    def job_dir(self, job_id: str) -> Path:
        return self.folder

    def _update(self, job_id: str, **fields) -> None:
        if "checkpoint" not in fields:
            self.events.put({"type": "update", "fields": fields})
            return
        self.events.put({"type": "checkpoint", "fields": fields, "files": self.changes.take()})
        if not self.acks.acquire(timeout=ACK_TIMEOUT_S):
            raise TimeoutError("the head did not confirm a checkpoint; the job stops here")

    def _cancel_requested(self, job_id: str) -> bool:
        return job_id in self._cancelled


class Worker:
    """Made by engine.cluster.Cluster as a Ray actor (ray.remote(Worker).options(...))."""

    def __init__(self, worker_id: str, device: str, engine_factory: str, engine_kwargs: dict, data_dir: str):
        self.id, self.device = worker_id, device
        root = Path(data_dir) / worker_id
        self.engine = load_factory(engine_factory)(data_dir=str(root), device=device, **engine_kwargs)
        self.jobs_dir = root / "jobs"   # scratch: the head holds every job's files
        shutil.rmtree(self.jobs_dir, ignore_errors=True)
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._relays: dict[str, _Relay] = {}

    def status(self) -> dict:
        engine = self.engine
        with self._lock:
            job = next(iter(self._relays), None)
        return {"id": self.id, "node": socket.gethostname(), "ip": _node_ip(), "device": self.device,
                "pid": os.getpid(), "models": sorted(engine.pool.loaded_models()), "job": job,
                "kinds": sorted(engine.jobs.kinds),
                "memory": {d: {"used": engine.pool.resident_bytes(d), "budget": engine.devices.budget(d)}
                           for d in engine.devices.names}}

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)
            relay = self._relays.get(job_id)
        if relay is not None:
            relay.acks.release()   # a job waiting for an ack the head will not send stops now

    def ack(self, job_id: str) -> None:
        with self._lock:
            relay = self._relays.get(job_id)
        if relay is not None:
            relay.acks.release()

    def run_job(self, job: dict, files: dict[str, bytes]):
        """Run one job (job: id, capability, params with the head's defaults, checkpoint) in its
        folder here, filled with `files`; yields its events (a streaming generator)."""
        folder = self.jobs_dir / job["id"]
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        unpack(folder, files)
        events: queue.Queue = queue.Queue()
        relay = _Relay(self.engine, folder, events, self._cancelled)
        with self._lock:
            self._relays[job["id"]] = relay
            self._cancelled.discard(job["id"])   # left from an attempt the head gave up on
        thread = threading.Thread(target=self._run, args=(job, relay), name=f"job-{job['id']}", daemon=True)
        thread.start()
        try:
            while True:
                event = events.get()
                yield event
                if event["type"] in ("result", "cancelled", "failed"):
                    return
        finally:
            thread.join()
            with self._lock:
                self._relays.pop(job["id"], None)
                self._cancelled.discard(job["id"])
            shutil.rmtree(folder, ignore_errors=True)

    def _run(self, job: dict, relay: _Relay) -> None:
        # A worker on the head's machine (--cluster local) shares its cores with the clicks.
        lower_thread_priority(self.engine.jobs.job_nice)
        records: list = []
        try:
            kind = self.engine.jobs.kinds.get(job["capability"])
            if kind is None:
                raise RuntimeError(f"worker {self.id} has no {job['capability']} job kind")
            came_by = job["params"].get("_request")
            with (Request(*came_by).current() if came_by else contextlib.nullcontext()), \
                    self.engine.run(f"job {job['capability']}") as run:
                records.append(run.record)
                result = Path(kind.run(JobContext(relay, job, run)))
            files = relay.changes.take()
            if not result.resolve().is_relative_to(relay.folder.resolve()):
                files[f"result/{result.name}"] = result.read_bytes()   # written outside its folder
                result = relay.folder / "result" / result.name
            event = {"type": "result", "result": result.resolve().relative_to(relay.folder.resolve()).as_posix(),
                     "files": files}
        except JobCancelled:
            event = {"type": "cancelled"}
        except BaseException as exc:  # the job's end, whatever it is, goes to the head
            message, plain = describe_failure(exc, relay.folder)
            event = {"type": "failed", "message": message, "plain": plain}
        relay.events.put({**event, "runs": [r.to_dict() for r in records]})


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside Ray (a unit test of the actor's class)
        return "127.0.0.1"
