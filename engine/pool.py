"""Residency and leases: which models are loaded, who uses them, and what is evicted for room.

- `with pool.lease(name) as model:` gives one caller exclusive use of one loaded instance.
- A second instance is loaded only where the spec allows it and it fits.
- Admission: the learned footprint (load + run peak for the bucket) plus a reserve must fit both
  the device's free memory (all processes) and the engine's budget there. If not, idle models are
  evicted (heavy LRU first, then micro, interactive last); if still short, the caller waits on a
  condition that every release and unload signals, up to a timeout.
- Fairness: a caller that has waited for memory longer than FAIR_WAIT_S is served before newcomers
  on its device. Without it, a model needing most of the budget waits out its timeout while small
  leases come and go, since they never all end at once. Not held back: callers that already hold
  a lease (holding them could deadlock), interactive calls whose model is loaded and whose run fits
  without evicting anything, and everyone when the waiter could not fit even if the engine gave
  back all it holds (other processes hold the memory, so holding others back gains nothing).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

from .devices import Devices, format_bytes
from .measure import heap_in_use, rss
from .models import FootprintStore, ModelSpec, Registry
from .oom import NotEnoughMemory, OutOfMemory, call_with_recovery
from .runs import current_run
from .runtimes.backend import backend_of
from .runtimes.torch_runtime import cached_bytes, fault_in, release_cached_memory, tensor_bytes

log = logging.getLogger(__name__)

_EVICTION_RANK = {"heavy": 0, "micro": 1, "interactive": 2}
FAIR_WAIT_S = 3.0  # a short wait is served by whoever fits first; a longer one goes first


class ModelUnavailable(RuntimeError):
    """The model failed to load (missing package, missing or corrupt weights)."""


@dataclass(eq=False)
class Instance:
    spec: ModelSpec
    device: str
    state: str = "loading"  # loading / idle / leased
    model: Any = None
    bytes: int = 0  # measured after the load; the footprint estimate while loading
    run_reserved: int = 0  # run-peak bytes reserved while leased
    last_used: float = field(default_factory=time.monotonic)
    load_s: float = 0.0
    uses: int = 0
    backend: str = ""  # what it really runs on, e.g. 'onnxruntime:CPU' (see runtimes/backend.py)


@dataclass(eq=False)
class _Waiter:
    """A caller waiting for memory (not for an instance of its model to come free)."""
    device: str
    need: int
    since: float


class Pool:
    def __init__(self, registry: Registry, devices: Devices, footprints: FootprintStore, *,
                 reserve_bytes: int = 256 * 1024**2, wait_timeout_s: float = 300.0):
        self.registry, self.devices, self.footprints = registry, devices, footprints
        self.reserve_bytes = reserve_bytes
        self.wait_timeout_s = wait_timeout_s
        self._cond = threading.Condition()
        self._instances: list[Instance] = []
        self._waiters: list[_Waiter] = []  # in arrival order
        self._held = threading.local()  # how many leases the current thread holds
        self.eviction_log: list[str] = []

    # ---- memory accounting (call with the lock held) ----

    def engine_bytes(self, device: str) -> int:
        """What the engine holds or has promised on a device: loaded models and run reservations."""
        return sum(i.bytes + i.run_reserved for i in self._instances if i.device == device)

    def _unreflected_bytes(self, device: str) -> int:
        # Loads in flight and run reservations are promised but not yet visible as used memory.
        return sum((i.bytes if i.state == "loading" else 0) + i.run_reserved
                   for i in self._instances if i.device == device)

    def headroom(self, device: str) -> int:
        # torch's cache of this process counts as free: the next allocation here reuses it.
        free = (self.devices.memory(device).free + cached_bytes(device) - self.reserve_bytes
                - self._unreflected_bytes(device))
        within_budget = self.devices.budget(device) - self.engine_bytes(device)
        return min(free, within_budget)

    def _never_fits(self, spec: ModelSpec, device: str, need: int) -> str | None:
        budget = self.devices.budget(device)
        total = self.devices.memory(device).total - self.reserve_bytes
        if need > budget:
            return (f"{spec.name} needs about {format_bytes(need)} on {device}, more than the "
                    f"budget of {format_bytes(budget)} there (raise it with --budget)")
        if need > total:
            return (f"{spec.name} needs about {format_bytes(need)} on {device}, which has only "
                    f"{format_bytes(total)} in all")
        return None

    # ---- eviction ----

    def _eviction_candidates(self, device: str, roles=("heavy", "micro", "interactive"),
                             protect: Instance | None = None) -> list[Instance]:
        idle = [i for i in self._instances if i.device == device and i.state == "idle"
                and i.spec.role in roles and i is not protect]
        return sorted(idle, key=lambda i: (_EVICTION_RANK[i.spec.role], i.last_used))

    def _evict(self, instance: Instance, reason: str) -> bool:
        """Drop the instance; True when reference counting alone freed its model."""
        self._instances.remove(instance)
        model, instance.model = instance.model, None
        if instance.spec.unloader is not None:
            instance.spec.unloader(model)
        try:
            still_there = weakref.ref(model)
        except TypeError:   # no weak references to it (a tuple, a C object): only a collection can tell
            still_there = None
        del model
        note = f"{instance.spec.name} ({instance.spec.role}, {format_bytes(instance.bytes)}) from {instance.device}: {reason}"
        self.eviction_log.append(note)
        log.info("evicted %s", note)
        run = current_run()
        if run is not None:
            run.evictions.append(instance.spec.name)
        self._cond.notify_all()
        return still_there is not None and still_there() is None

    def _make_room(self, device: str, need: int, reason: str, protect: Instance | None = None,
                   partial: bool = False) -> bool:
        """Evict idle models (never `protect`) until `need` fits. True when it fits. Unless
        `partial`, nothing is evicted when evicting every candidate would still leave it short: a
        caller that has to wait anyway must not cost the resident models their instant answers."""
        candidates = self._eviction_candidates(device, protect=protect)
        if not partial and self.headroom(device) + sum(c.bytes for c in candidates) < need:
            return False
        for candidate in candidates:
            if self.headroom(device) >= need:
                break
            freed = self._evict(candidate, reason)
            # So that the next headroom reading sees the memory as free. A full collection costs
            # ~0.3 s with a dozen models loaded; it is needed only when the model is held in a
            # reference cycle, not when dropping it freed it already.
            release_cached_memory(collect=not freed)
        return self.headroom(device) >= need

    def free_memory(self, device: str, level: int = 1) -> list[str]:
        """Out-of-memory step: level 1 evicts idle heavy and micro models, level 2 all idle ones."""
        roles = ("heavy", "micro") if level <= 1 else ("heavy", "micro", "interactive")
        with self._cond:
            evicted = self._eviction_candidates(device, roles)
            for instance in evicted:
                self._evict(instance, "out of memory")
        evicted = [i.spec.name for i in evicted]
        done = [f"evicted {', '.join(evicted)}"] if evicted else ["no idle model to evict"]
        return done + release_cached_memory()

    def unload(self, name: str) -> int:
        """Unload every idle instance of a model. Returns how many."""
        with self._cond:
            idle = [i for i in self._instances if i.spec.name == name and i.state == "idle"]
            for instance in idle:
                self._evict(instance, "unloaded on request")
        release_cached_memory()
        return len(idle)

    # ---- leases ----

    @contextlib.contextmanager
    def lease(self, name: str, *, bucket: str | None = None,
              timeout_s: float | None = None) -> Iterator[Any]:
        """Exclusive use of one loaded instance of `name` for the duration of the block."""
        spec = self.registry.get(name)
        run = current_run()
        if run is not None:
            run.models.append(name)
        instance = self._acquire(spec, bucket, timeout_s)
        if run is not None:
            run.device = instance.device
            run.backends[name] = instance.backend
        self._held.count = getattr(self._held, "count", 0) + 1
        try:
            yield instance.model
        finally:
            self._held.count -= 1
            with self._cond:
                instance.state = "idle"
                instance.run_reserved = 0
                held = getattr(instance.model, "device_bytes", None)  # placement per request (tiers)
                instance.bytes = held if isinstance(held, int) and instance.device != "cpu" else instance.bytes
                instance.last_used = time.monotonic()
                self._cond.notify_all()

    def _place(self, spec: ModelSpec) -> str:
        """Where this lease is served: an idle instance's device, else (no further instance
        allowed) an instance's, else the device Devices.place picks by headroom."""
        mine = [i for i in self._instances if i.spec is spec]
        idle = [i for i in mine if i.state == "idle"]
        if idle or len(mine) >= spec.max_instances:
            return (idle or mine)[0].device
        return self.devices.place(spec.device, room=self.headroom)

    def _acquire(self, spec: ModelSpec, bucket: str | None, timeout_s: float | None) -> Instance:
        run = current_run()
        started = time.monotonic()
        deadline = started + (self.wait_timeout_s if timeout_s is None else timeout_s)
        waiter = None
        with self._cond:
            try:
                while True:
                    if waiter is None:  # placed again on each wake-up until queued for memory there
                        device = self._place(spec)
                        run_bytes = self.footprints.run_bytes(spec, device, bucket)
                        load_bytes = self.footprints.load_bytes(spec, device)
                    if not self._must_yield(spec, device, run_bytes, waiter):
                        instance = self._try_take(spec, device, run_bytes, load_bytes)
                        if instance is not None:
                            break
                        if waiter is None:
                            waiter = self._queue_for_memory(spec, device, run_bytes, load_bytes, started)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise NotEnoughMemory(
                            f"{spec.name}: no instance and not enough memory on {device} came free "
                            f"within {deadline - started:.0f} s (headroom {format_bytes(self.headroom(device))})")
                    # Woken by every release and unload; the bounded wait also notices memory that
                    # other processes give back, which sends no signal.
                    self._cond.wait(min(remaining, 1.0))
            finally:
                if waiter is not None:
                    self._waiters.remove(waiter)
                    self._cond.notify_all()  # those who yielded to it may go on
        if run is not None:
            run.queue_wait_s += time.monotonic() - started
        if instance.state == "loading":
            self._load(instance)
        return instance

    def _queue_for_memory(self, spec: ModelSpec, device: str, run_bytes: int, load_bytes: int,
                          since: float) -> _Waiter | None:
        """Queue a caller that _try_take turned away for lack of memory (None: it waits for an
        instance of its model that is in use, which memory would not give it)."""
        mine = [i for i in self._instances if i.spec is spec]
        if any(i.state == "idle" for i in mine):
            need = run_bytes
        elif len(mine) < spec.max_instances:
            need = min(load_bytes + run_bytes, self.devices.budget(device))
        else:
            return None
        waiter = _Waiter(device, need, since)
        self._waiters.append(waiter)
        return waiter

    def _must_yield(self, spec: ModelSpec, device: str, run_bytes: int, me: _Waiter | None) -> bool:
        """Whether an older waiter for memory on `device` goes first (see the module docstring)."""
        if getattr(self._held, "count", 0):
            return False
        now, headroom = time.monotonic(), None
        for waiter in self._waiters:
            if waiter is me:
                return False  # the ones before me did not qualify
            if waiter.device != device or now - waiter.since < FAIR_WAIT_S:
                continue
            if headroom is None:  # read once: each reading asks the device (/proc/meminfo)
                headroom = self.headroom(device)
            if waiter.need > headroom + self.engine_bytes(device):
                continue
            if spec.role == "interactive" and run_bytes <= headroom and any(
                    i.spec is spec and i.state == "idle" for i in self._instances):
                return False  # a resident interactive model answers at once; its run is brief
            return True
        return False

    def _try_take(self, spec: ModelSpec, device: str, run_bytes: int, load_bytes: int) -> Instance | None:
        mine = [i for i in self._instances if i.spec is spec]
        for instance in mine:
            if instance.state == "idle" and instance.device == device and self._make_room(
                    device, run_bytes, f"room to run {spec.name}", protect=instance):
                instance.state, instance.run_reserved = "leased", run_bytes
                instance.uses += 1
                return instance
        if len(mine) < spec.max_instances:
            need = load_bytes + run_bytes
            if self._never_fits(spec, device, need) and not self._never_fits(spec, device, load_bytes):
                # The weights fit; only the learned run peak does not (one unusual input can set
                # it). Make all the room there is and let OOM recovery handle the rest.
                need = min(need, self.devices.budget(device), self.devices.memory(device).total - self.reserve_bytes)
            reason = self._never_fits(spec, device, need)
            if reason and not mine:
                raise NotEnoughMemory(reason)
            if not reason and self._make_room(device, need, f"room to load {spec.name}"):
                instance = Instance(spec, device, bytes=load_bytes, run_reserved=run_bytes, uses=1)
                self._instances.append(instance)
                return instance  # state 'loading': the caller loads it outside the lock
        return None

    def _load(self, instance: Instance) -> None:
        spec, device = instance.spec, instance.device
        before, heap_before = self._used(device), heap_in_use()
        alone = not self._others_busy(instance)
        instance_admitted = instance.bytes
        started = time.monotonic()
        run = current_run()
        try:
            model = call_with_recovery(
                f"loading {spec.name}", lambda: spec.loader(device),
                free_memory=lambda level: self.free_memory(device, level),
                record=run, step_prefix=f"loading {spec.name}: ")
            fault_in(model)
        except BaseException as exc:
            with self._cond:
                self._instances.remove(instance)
                self._cond.notify_all()
            if isinstance(exc, (OutOfMemory, NotEnoughMemory)) or not isinstance(exc, Exception):
                raise
            raise ModelUnavailable(f"{spec.name} could not be loaded from {spec.source}: {exc}") from exc
        # A torch model's tensors are exact. For runtimes we cannot inspect the memory delta is
        # the measure, and it is clean only when no other model was in use meanwhile: otherwise
        # their allocations would be billed to this load, many times its real size, so a
        # footprint already learned cleanly is kept instead. When clean, what malloc handed out
        # counts too on the CPU: a load into heap that earlier work freed does not raise RSS.
        clean = alone and not self._others_busy(instance)
        measured, trusted = tensor_bytes(model), True
        if not measured:
            grew = self._heap_grew(device, heap_before) if clean else 0
            measured = max(0, self._used(device) - before, grew)
            known = self.footprints.get(spec.name, device).load_bytes
            if not clean and known is not None:
                measured, trusted = known, False
        backend = backend_of(model, spec.runtime, device)
        with self._cond:
            instance.model, instance.bytes, instance.backend = model, measured, backend
            instance.load_s = time.monotonic() - started
            instance.state = "leased"
            if measured > instance_admitted:
                # Larger than its footprint said: restore the budget by evicting idle models now,
                # as far as they go.
                self._make_room(device, 0, f"{spec.name} measured larger than its footprint", partial=True)
            self._cond.notify_all()
        if trusted:
            self.footprints.record_load(spec.name, device, measured)
        if run is not None:
            run.load_s += instance.load_s
        log.info("loaded %s on %s in %.2f s, %s", spec.name, device, instance.load_s, format_bytes(measured))

    def _others_busy(self, instance: Instance) -> bool:
        with self._cond:
            return any(i is not instance and i.device == instance.device and i.state != "idle"
                       for i in self._instances)

    @staticmethod
    def _heap_grew(device: str, heap_before: int | None) -> int:
        heap_after = heap_in_use() if device == "cpu" else None
        return heap_after - heap_before if heap_after is not None and heap_before is not None else 0

    def _used(self, device: str) -> int:
        if device == "cpu":
            return rss()
        return self.devices.memory(device).used

    # ---- views ----

    def snapshot(self) -> list[dict]:
        """Every registered model with its instances' state and measured bytes."""
        with self._cond:
            rows = []
            for spec in self.registry:
                instances = [i for i in self._instances if i.spec is spec]
                named = {"name": spec.name, "role": spec.role, "runtime": spec.runtime,
                         "runtime_reason": spec.runtime_reason}
                for i in instances:
                    rows.append({**named, "device": i.device, "bytes": i.bytes,
                                 "state": "in use" if i.state == "leased" else i.state,
                                 "measured": i.state != "loading", "load_s": round(i.load_s, 3),
                                 "uses": i.uses, "backend": i.backend})
                    # What a loaded model says of its own placement (dict: device, tier, why), if anything.
                    placement = getattr(i.model, "placement", None)
                    if isinstance(placement, dict):
                        rows[-1]["placement"] = dict(placement)
                if not instances:
                    device = self.devices.place(spec.device, room=self.headroom)
                    measured = self.footprints.get(spec.name, device).load_bytes
                    rows.append({**named, "device": device, "bytes": self.footprints.load_bytes(spec, device),
                                 "state": "not loaded", "measured": measured is not None,
                                 "load_s": None, "uses": 0, "backend": ""})
            return rows

    def resident_bytes(self, device: str) -> int:
        with self._cond:
            return sum(i.bytes for i in self._instances if i.device == device)

    def loaded_models(self) -> set[str]:
        with self._cond:
            return {i.spec.name for i in self._instances}
