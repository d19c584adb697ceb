"""The head side of a Ray cluster: it starts or joins Ray, starts the worker actors, routes jobs to
them and follows each job's events, writing its files into the job's folder here and committing its
checkpoints to the queue's SQLite (the one truth) before the worker goes on.

    cluster = Cluster.start("local", cpu_workers=2, engine_factory="tabs.catalog:worker_engine",
                            engine_kwargs={"budget": "cpu=4GiB"}, data_dir="data/cluster")
    engine.jobs.attach(cluster)     # before engine.jobs.start()
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from ..devices import cuda_count
from ..jobs import JobCancelled, JobFailed, WorkerLost
from . import routing
from .files import pack, unpack
from .worker import Worker

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]   # the checkout: on every node's PYTHONPATH
_EVENT_FIELDS = {"progress", "note", "resumed_from", "resumed_from_frame"}   # what a worker may set


class ClusterError(RuntimeError):
    """The cluster cannot give what was asked (too few CPUs or GPUs, Ray already started)."""


def object_store_bytes() -> int:
    """Ray's shared-memory object store, sized for a container whose /dev/shm may be small: a
    third of /dev/shm, at most 1 GiB (job files pass through it one chunk at a time), at least
    Ray's minimum of 75 MiB (beyond /dev/shm Ray spills to disk, slower but safe)."""
    try:
        shm = shutil.disk_usage("/dev/shm").total
    except OSError:
        shm = 0
    return max(80 * 1024**2, min(1024**3, shm // 3))


def _token_available() -> bool:
    """Ray's token for this user: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path).is_file()


class _Handle:
    def __init__(self, worker_id: str, device: str, actor):
        self.id, self.device, self.actor = worker_id, device, actor
        self.view = routing.View()
        self.status: dict = {}
        self.job: str | None = None
        self.alive, self.restarts = True, 0


class Cluster:
    def __init__(self, handles: list[_Handle], started_ray: bool):
        self._handles = {h.id: h for h in handles}
        self._started_ray = started_ray
        self._lock = threading.Lock()

    @classmethod
    def start(cls, address: str = "local", *, cpu_workers: int = 2, gpu_workers: int | None = None,
              engine_factory: str, engine_kwargs: dict | None = None, data_dir: str | os.PathLike = "data/cluster",
              python_path: list[str] | None = None, object_store_memory: int | None = None,
              cpus_per_worker: int | None = None, ready_timeout_s: float = 300.0) -> "Cluster":
        """address "local": a new Ray instance on this machine; "auto" or "host:port": join one.
        One worker per GPU of the cluster (or gpu_workers), cpu_workers on CPUs. data_dir: where
        each worker keeps its engine's files, <data_dir>/<worker id> on its own node (the same
        path on every node). python_path: folders the workers import from besides the checkout.
        cpus_per_worker: Ray CPUs (and so torch threads) per worker; default: locally this
        machine's cores shared out among the workers, 1 on a joined cluster."""
        import ray

        if ray.is_initialized():
            # Never reuse a Ray this process started for something else: its resources may not fit.
            raise ClusterError("Ray is already initialised in this process; shut it down first")
        paths = [str(REPO)] + [str(Path(p).resolve()) for p in python_path or []]
        # Workers import the engine factory by name: the checkout (same path on every node) is on
        # their PYTHONPATH. Set here, not inherited: a joined cluster's raylets were started elsewhere.
        runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
        options = dict(runtime_env=runtime_env, namespace="wimmel", logging_level=logging.WARNING)
        if address == "local":
            # The engine's admission is the memory guard: Ray's monitor would kill busy workers.
            os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
            gpus = cuda_count()
            gpu_workers = gpus if gpu_workers is None else gpu_workers
            cpus_per_worker = cpus_per_worker or max(1, (os.cpu_count() or 1) // max(1, cpu_workers + gpu_workers))
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, cpu_workers + gpu_workers),
                     num_gpus=gpus, object_store_memory=object_store_memory or object_store_bytes(),
                     include_dashboard=False, **options)
        else:
            # Joining: the cluster's own settings hold (Ray refuses num_cpus, object_store_memory
            # here). Ray 2.60 sends its token for "auto" when it finds one, but for an explicit
            # address only with RAY_AUTH_MODE=token: the same rule here, else a secured cluster
            # (`ray start` secures it by default) answers "Authentication token is missing".
            if "RAY_AUTH_MODE" not in os.environ and _token_available():
                os.environ["RAY_AUTH_MODE"] = "token"
                from ray._raylet import Config

                Config.initialize("")   # Ray caches its config on import: read the mode again
            ray.init(address=address, **options)
        try:
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            gpu_workers = gpus if gpu_workers is None else gpu_workers
            cpus_per_worker = cpus_per_worker or 1
            if gpu_workers > gpus or (cpu_workers + gpu_workers) * cpus_per_worker > resources.get("CPU", 0):
                raise ClusterError(f"the cluster at {address} has {resources.get('CPU', 0):g} CPUs and {gpus} "
                                   f"GPUs: too few for {cpu_workers} CPU and {gpu_workers} GPU workers")
            handles = cls._spawn(cpu_workers, gpu_workers, cpus_per_worker, engine_factory,
                                 dict(engine_kwargs or {}), str(Path(data_dir).resolve()))
            cluster = cls(handles, started_ray=True)
            cluster._refresh_all(ready_timeout_s)
            return cluster
        except BaseException:
            ray.shutdown()
            raise

    @staticmethod
    def _spawn(cpu_workers, gpu_workers, cpus, factory, kwargs, data_dir) -> list[_Handle]:
        import ray

        # max_restarts=-1: Ray restarts a dead worker (its engine starts empty); max_task_retries=0:
        # a job cut off is not replayed blindly, the head resumes it from its checkpoint instead.
        # max_concurrency: status, cancel and ack reach the worker while run_job streams. Ray sets
        # OMP_NUM_THREADS to a worker's num_cpus: torch uses that many threads there. The name
        # carries this head's process id: two apps may share a cluster.
        actor = ray.remote(Worker)
        handles = []
        for kind, count in (("gpu", gpu_workers), ("cpu", cpu_workers)):
            for i in range(count):
                worker_id = f"{kind}-{i}"
                device = "cuda:0" if kind == "gpu" else "cpu"   # Ray shows a GPU actor its one GPU as 0
                handle = actor.options(name=f"wimmel-{os.getpid()}-{worker_id}", num_cpus=cpus,
                                       num_gpus=int(kind == "gpu"),
                                       max_restarts=-1, max_task_retries=0, max_concurrency=4).remote(
                    worker_id, device, factory, kwargs, data_dir)
                handles.append(_Handle(worker_id, device, handle))
        return handles

    # ---- what the app shows ----

    def worker_ids(self) -> list[str]:
        return list(self._handles)

    def workers(self, timeout_s: float = 2.0) -> list[dict]:
        """One dict per worker: id, node, device, pid, models (resident), memory ({device: {used,
        budget}}), job (the job it runs, None when idle), restarts (how often Ray restarted it, seen
        by its new process id), alive (it answered within timeout_s now)."""
        answered = self._refresh_all(timeout_s, quiet=True)
        with self._lock:
            rows = []
            for h in self._handles.values():
                s = h.status
                rows.append({"id": h.id, "node": s.get("node"), "ip": s.get("ip"), "device": h.device,
                             "pid": s.get("pid"), "models": s.get("models", []), "memory": s.get("memory", {}),
                             "job": h.job, "restarts": h.restarts, "alive": h.alive and h.id in answered})
            return rows

    def shutdown(self) -> None:
        import ray

        for h in self._handles.values():
            try:
                ray.kill(h.actor, no_restart=True)
            except Exception:   # already gone
                pass
        if self._started_ray:
            ray.shutdown()

    # ---- what the job queue calls ----

    def route(self, worker, waiting, free, policy, max_passed_over):
        """(the job for `worker` or None, the jobs it passed over): engine.cluster.routing; None
        is the head's own thread, which takes only the kinds no worker has."""
        with self._lock:
            views = {w: h.view for w, h in self._handles.items() if h.alive}
            every = {w: h.view for w, h in self._handles.items()}
        if worker is None:   # a kind a restarting worker has still waits for a worker
            return routing.head_only(waiting, every), []
        if worker not in views:
            return None, []
        return routing.pick(worker, waiting, views, free, policy=policy, max_passed_over=max_passed_over)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            handle = next((h for h in self._handles.values() if h.job == job_id), None)
        if handle is not None:
            handle.actor.cancel.remote(job_id)   # the job stops at its next chunk boundary

    def wait_ready(self, worker: str, stopping) -> bool:
        """Block until the worker answers (at once when alive; after Ray restarted it when it
        died). False when `stopping()` turns true first."""
        import ray

        handle = self._handles[worker]
        while not handle.alive:
            if stopping():
                return False
            started = time.monotonic()
            try:
                self._take_status(handle, ray.get(handle.actor.status.remote(), timeout=5))
            except Exception as exc:
                log.info("worker %s not back yet: %s", worker, type(exc).__name__)
                # A dead node answers at once: wait out the rest of the 5 s, not a busy loop.
                time.sleep(max(0.0, 5 - (time.monotonic() - started)))
        return True

    def execute(self, worker: str, job: dict, queue, records: list) -> str:
        """Run `job` on `worker`, following its events until it ends; the result's path here.
        Raises JobCancelled, JobFailed, or WorkerLost (the queue puts the job back)."""
        import ray
        from ray.exceptions import RayTaskError

        handle, folder = self._handles[worker], queue.job_dir(job["id"])
        with self._lock:
            handle.job = job["id"]
            handle.view.models.add(job["model"])   # loading it now: routing counts it as held
            handle.view.last = job["model"]
        ended = False   # the worker's job sent its end: nothing to stop there
        payload = {"id": job["id"], "capability": job["capability"], "checkpoint": job["checkpoint"],
                   "params": {**queue.defaults, **job["params"]}}
        try:
            stream = handle.actor.run_job.options(num_returns="streaming").remote(payload, pack(folder))
            for ref in stream:
                event = ray.get(ref)
                kind = event["type"]
                if queue._cancel_requested(job["id"]):   # again: one sent before it started is dropped
                    handle.actor.cancel.remote(job["id"])
                if kind == "update":
                    queue._update(job["id"], **{k: v for k, v in event["fields"].items() if k in _EVENT_FIELDS})
                elif kind == "checkpoint":
                    unpack(folder, event["files"])   # the chunk's files first, then the checkpoint naming them
                    queue._update(job["id"], checkpoint=event["fields"]["checkpoint"])
                    handle.actor.ack.remote(job["id"])
                    continue
                else:
                    ended = True
                    records.extend(event["runs"])
                    if kind == "cancelled":
                        raise JobCancelled()
                    if kind == "failed":
                        raise JobFailed(event["message"], event["plain"])
                    unpack(folder, event["files"])
                    return str(folder / event["result"])
            raise WorkerLost(f"worker {worker} ended job {job['id']} without a result")
        except RayTaskError as exc:   # the worker's own code failed (not the job): a bug to report
            raise JobFailed(f"worker {worker}: {exc}", plain=False) from exc
        except ray.exceptions.RayError as exc:
            with self._lock:
                handle.alive = False   # takes no job until it answers again (wait_ready)
                handle.view = routing.View(kinds=handle.view.kinds)   # restarted: an empty pool
            try:
                handle.actor.cancel.remote(job["id"])   # if it was only unreachable, it stops too
                # (a restarted worker forgets this at its next run_job of the job)
            except Exception:
                pass
            raise WorkerLost(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        finally:
            with self._lock:
                handle.job = None
            if handle.alive:
                if not ended:   # the head gave up on it (its disk is full, say): stop it there too
                    handle.actor.cancel.remote(job["id"])
                self._refresh(handle, 10.0)

    # ---- internals ----

    def _take_status(self, handle: _Handle, status: dict) -> None:
        with self._lock:
            memory = status["memory"].get(handle.device) or next(iter(status["memory"].values()), {})
            if handle.status.get("pid") not in (None, status["pid"]):
                handle.restarts += 1   # a new process: Ray restarted the worker (its pool is empty)
            handle.status, handle.alive = status, True
            handle.view.models = set(status["models"])
            handle.view.kinds = set(status["kinds"])
            handle.view.room = max(0, memory.get("budget", 0) - memory.get("used", 0))

    def _refresh(self, handle: _Handle, timeout_s: float) -> None:
        import ray

        try:
            self._take_status(handle, ray.get(handle.actor.status.remote(), timeout=timeout_s))
        except Exception as exc:
            log.warning("worker %s did not answer: %s", handle.id, type(exc).__name__)

    def _refresh_all(self, timeout_s: float, quiet: bool = False) -> set[str]:
        """Every worker's status, asked of all at once; one that does not answer keeps its last."""
        import ray

        refs = {h.id: h.actor.status.remote() for h in self._handles.values()}
        answered: set[str] = set()
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        for worker, ref in refs.items():
            if ref not in ready:
                continue
            try:
                self._take_status(self._handles[worker], ray.get(ref))
            except Exception as exc:
                if not quiet:
                    raise ClusterError(f"worker {worker} did not start: {exc}") from exc
                continue   # dead or restarting: shown as not alive
            answered.add(worker)
        missing = [w for w, r in refs.items() if r not in ready]
        if missing and not quiet:
            raise ClusterError(f"workers {missing} did not start within {timeout_s:.0f} s")
        return answered
