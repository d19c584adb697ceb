"""The engine: devices, model registry, footprints, pool and run log, behind one object.

    engine = Engine(data_dir="data", budget="cpu=6GiB")
    engine.register(spec)
    faces = engine.infer("detect_faces", "face-detector", lambda model: detect(model, image))

or, for a pipeline of several models, one run with several calls:

    with engine.run("restore", bucket=pixel_bucket(w, h)) as run:
        faces = run.call("face-detector", detect)
        out = run.call("face-restorer", restore, degrade=smaller_tiles)
"""
from __future__ import annotations

import collections
import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .devices import Devices, parse_budget, parse_size
from .jobs import JobQueue
from .measure import METER, fix_mmap_threshold
from .models import FootprintStore, ModelSpec, Registry
from .oom import Degrade, call_with_recovery
from .pool import Pool
from .runs import TALLY, RunLog, RunRecord
from .timings import TimingStore, endpoint_of


# What processing functions receive to use a model: call(model_name, fn) leases the model, runs
# fn(model) with OOM recovery and gives it back. Run.call in a request, JobContext.call in a job.
Call = Callable[[str, Callable[[Any], Any]], Any]


class Run:
    """One call's record plus the means to lease models inside it."""

    def __init__(self, engine: "Engine", record: RunRecord, bucket: str | None, profile: bool):
        self.engine, self.record, self.bucket, self.profile = engine, record, bucket, profile

    def _predict(self, model: str, device: str) -> None:
        """What this call should take, read before it (its own peak is learned after it) and kept
        in the record beside what it took."""
        engine, record = self.engine, self.record
        # Read after the lease, so after any load: a call right after one is a first call.
        predicted = engine.footprints.predict(engine.registry.get(model), device, self.bucket,
                                              first_call=engine.footprints.fresh(model, device),
                                              endpoint=endpoint_of(record)).bytes
        record.run_bytes_predicted = max(record.run_bytes_predicted or 0, predicted)
        if record.seconds_predicted is None:
            record.seconds_predicted = engine.timings.seconds(endpoint_of(record), record.size or self.bucket, device)

    def call(self, model: str, fn: Callable[[Any], Any], *, degrade: Degrade | None = None) -> Any:
        """Lease `model`, run fn(model) with OOM recovery, measure its peak, give the model back."""
        engine, record = self.engine, self.record
        pool = engine.pool
        with pool.lease(model, bucket=self.bucket) as instance:
            device = record.device
            preload = record.capability.startswith("preload")   # runs nothing: nothing to predict
            if not preload:
                self._predict(model, device)
            probe = METER.probe(device)
            started = time.perf_counter()
            steps_before, ok = len(record.steps), False
            try:
                with _profiled(record, self.profile, device):
                    result = call_with_recovery(
                        model, lambda: fn(instance), degrade=degrade, record=record,
                        free_memory=lambda level: pool.free_memory(device, level))
                ok = True
                return result
            finally:
                peaks = probe.stop()
                record.compute_s += time.perf_counter() - started
                record.peak_rss_bytes = max(record.peak_rss_bytes or 0, peaks.rss_bytes)
                record.peak_device_bytes = max(record.peak_device_bytes or 0, peaks.device_bytes or 0)
                if not preload:
                    record.run_bytes_measured = max(record.run_bytes_measured or 0, peaks.device_delta_bytes)
                degraded = any(s.startswith("degraded") for s in record.steps[steps_before:])
                # A preload's empty call teaches nothing: its peak (about 0) would stand as the
                # model's largest until a sized call, and the first real run be reserved 0.
                if ok and not degraded and not preload:
                    # A degraded call's peak belongs to the smaller plan, not to this bucket's. A
                    # peak measured while other calls ran holds their allocations too: it only
                    # stands in until a call has the process to itself, or admission would wait
                    # for more memory than the model ever needs, possibly more than the budget.
                    engine.footprints.record_run(model, device, self.bucket, peaks.device_delta_bytes,
                                                 crowded=peaks.overlapped, endpoint=endpoint_of(record))


@contextlib.contextmanager
def _profiled(record: RunRecord, enabled: bool, device: str):
    if not enabled:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities, profile_memory=True, record_shapes=False) as prof:
        yield
    sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=20)
    record.profile = table if record.profile is None else record.profile + "\n" + table


class MemoryHistory:
    """Used memory per device over time, sampled by a daemon thread, for the System tab's plot."""

    def __init__(self, engine: "Engine", every_s: float = 1.0, keep: int = 900):
        self.engine, self.every_s = engine, every_s
        self.samples: collections.deque[dict] = collections.deque(maxlen=keep)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="wimmel-memory-history", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> None:
        now = time.time()
        for device in self.engine.devices.names:
            memory = self.engine.devices.memory(device)
            self.samples.append({"time": now, "device": device, "used": memory.used,
                                 "engine": self.engine.pool.resident_bytes(device)})

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()


class Engine:
    def __init__(self, data_dir: str | Path = "data", *, budget: str | dict | None = None,
                 device: str = "auto", reserve: str | int = "256MiB",
                 specs: list[ModelSpec] | None = None, wait_timeout_s: float = 300.0,
                 job_options: dict | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fix_mmap_threshold()   # the process's heap gives back what unloaded models held
        budgets = budget if isinstance(budget, dict) else parse_budget(budget)
        self.devices = Devices(budgets, default=device)
        self.registry = Registry(specs)
        self.footprints = FootprintStore(self.data_dir / "footprints.json")
        self.runs = RunLog(self.data_dir / "runs.jsonl")
        self.timings = TimingStore(self.data_dir / "timings.json")
        reserve_bytes = reserve if isinstance(reserve, int) else parse_size(reserve)
        self.pool = Pool(self.registry, self.devices, self.footprints,
                         reserve_bytes=reserve_bytes, wait_timeout_s=wait_timeout_s)
        self.history = MemoryHistory(self)
        # Started by the caller (launch.py, tests) once every job kind is registered.
        self.jobs = JobQueue(self, self.data_dir, **(job_options or {}))
        self._profile_next = threading.Event()
        # Objects that belong to this engine but not to the engine's own job (the model store,
        # the public-link gate), by name: state lives on the engine, never in module globals.
        self.services: dict[str, Any] = {}

    def profile_next_run(self) -> None:
        """Attach a torch.profiler table to the next run, whichever tab starts it."""
        self._profile_next.set()

    def register(self, spec: ModelSpec) -> None:
        self.registry.add(spec)

    def unregister(self, name: str) -> None:
        """Forget a model (its files were removed): unload its idle instances, drop its spec."""
        self.pool.unload(name)
        self.registry.remove(name)

    @contextlib.contextmanager
    def run(self, capability: str, *, bucket: str | None = None, profile: bool = False) -> Iterator[Run]:
        if self._profile_next.is_set() and not capability.startswith("preload"):
            self._profile_next.clear()
            profile = True
        record, token = self.runs.start(capability)
        record.bucket = bucket
        started = time.perf_counter()
        try:
            yield Run(self, record, bucket, profile)
            record.status = "ok"
        except BaseException as exc:
            record.status, record.error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            record.wall_s = time.perf_counter() - started
            self.runs.finish(record, token)
            self.timings.learn(record)

    def infer(self, capability: str, model: str, fn: Callable[[Any], Any], *, bucket: str | None = None,
              degrade: Degrade | None = None, profile: bool = False) -> Any:
        """One run that leases one model: the common case of an interactive tab."""
        with self.run(capability, bucket=bucket, profile=profile) as run:
            return run.call(model, fn, degrade=degrade)

    def preload(self, name: str) -> None:
        """Load a model now (interactive models at start-up), recorded as a run of its own."""
        with self.run(f"preload {name}") as run:
            run.call(name, lambda model: None)

    def status(self, runs: int = 50) -> dict:
        devices = []
        for name in self.devices.names:
            memory = self.devices.memory(name)
            devices.append({"name": name, "total": memory.total, "free": memory.free,
                            "budget": self.devices.budget(name),
                            "engine": self.pool.resident_bytes(name)})
        models = self.pool.snapshot()
        # A loaded model that reports its placement (a diffusion pipeline's memory tier) is a row
        # of the System tab's tiers table: model, device, tier, why.
        tiers = sorted(({"model": m["name"], **m["placement"]} for m in models if m.get("placement")),
                       key=lambda row: row["model"])
        specs = list(self.registry)   # networks: graphs with their own weights (a pipeline's stages each)
        return {"devices": devices, "models": models, "networks": sum(s.networks for s in specs),
                "runs": [r.to_dict() for r in self.runs.latest(runs)], "warnings": TALLY.summary(), "tiers": tiers}
