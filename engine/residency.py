"""What the pool holds and the policy over it: memory accounting per device, placement, eviction.
`engine/pool.py` builds leases (waiting, fairness, loading) on top of this.

- Accounting: each instance holds bytes on its device, or, split over several GPUs
  (`engine/device_map.DeviceMap`), a share on each; a leased one also reserves its run peak, on
  every device of a split (each runs layers, and a transformer's activation peak is per layer);
  a loading one also its learned load transient beyond that run peak (engine/load_peaks.py).
- Headroom on a device: free memory (every process counted, torch's own cache as free) less the
  reserve and what is promised but not yet visible, within the budget less what the engine holds.
- Placement: an idle instance's device, else Devices.place by headroom; a spec that may be split
  (`ModelSpec.split`) goes whole where one GPU has room, else split over the GPUs' rooms, else
  whole where eviction makes room, else split evicting on one GPU, then on all, else (whole never
  fits) split over what the budgets allow, waiting for it; not even that: refused.
- Eviction: idle models, heavy LRU first, then micro, interactive last. An evicted torch model on
  a CUDA GPU is parked in pinned host RAM where the CPU's budget has room (engine/parking.py): its
  bytes count on "cpu", parked models go first (oldest first) when the CPU needs room, and loading
  it again is a copy back. A CPU-only machine parks nothing (the weights are in host RAM already).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from .device_map import DeviceMap
from .devices import Devices, format_bytes
from .load_peaks import LoadPeaks
from .models import FootprintStore, ModelSpec, Registry
from .oom import NotEnoughMemory
from .parking import Parked, Parking, ParkingLot
from .runs import current_run
from .runtimes.torch_runtime import cached_bytes, release_cached_memory

log = logging.getLogger(__name__)

CUDA_PARKING = Parking()  # no state of its own: one serves every pool

_EVICTION_RANK = {"heavy": 0, "micro": 1, "interactive": 2}


class ModelUnavailable(RuntimeError):
    """The model failed to load (missing package, missing or corrupt weights)."""


@dataclass(eq=False)
class Instance:
    spec: ModelSpec
    device: str  # a DeviceMap when split over several GPUs (its str: the device the inputs go to)
    state: str = "loading"  # loading / idle / leased
    model: Any = None
    bytes: int = 0  # measured after the load; the footprint estimate while loading (a split's: all shares)
    run_reserved: int = 0  # run-peak bytes reserved while leased (on each device of a split)
    load_extra: int = 0  # while loading: its learned load transient beyond bytes + run_reserved
    process_at_lease: int | None = None  # the process's memory on its device when its run was admitted
    kept: int = 0          # of `bytes`, what its runs left in its keeping (Pool._keep_what_the_run_kept)
    largest_run: int = 0   # the largest run reservation it has served
    last_used: float = field(default_factory=time.monotonic)
    load_s: float = 0.0
    uses: int = 0
    backend: str = ""  # what it really runs on, e.g. 'onnxruntime:CPU' (see runtimes/backend.py)
    parked: Parked | None = None  # the parked copy this instance is (or was) restored from

    @property
    def devices(self) -> tuple[str, ...]:
        return self.device.devices if isinstance(self.device, DeviceMap) else (self.device,)

    def on(self, device: str) -> bool:
        # Not `self.device == device`: a DeviceMap equals its first device as a str.
        return str(device) in self.devices

    def bytes_on(self, device: str) -> int:
        if isinstance(self.device, DeviceMap):
            return self.device.shares.get(str(device), 0)
        return self.bytes if self.device == device else 0


class Residency:
    def __init__(self, registry: Registry, devices: Devices, footprints: FootprintStore, *,
                 reserve_bytes: int = 256 * 1024**2, parking: Parking | None = CUDA_PARKING):
        self.registry, self.devices, self.footprints = registry, devices, footprints
        self.reserve_bytes = reserve_bytes
        self._cond = threading.Condition()
        self._instances: list[Instance] = []
        self.eviction_log: list[str] = []
        # What the process held when the engine started: the budget caps what it holds above that.
        self._process_base = {d: devices.process(d) for d in devices.names}
        # While set, admission counts the ledger only (see _try_take's last resort).
        self._ledger_only = False
        self.lot = ParkingLot(parking)  # models parked in host RAM (None: never park)
        path = getattr(footprints, "path", None)
        self.load_peaks = LoadPeaks(path.with_name("load_peaks.json") if path else None)

    # ---- memory accounting (call with the lock held) ----

    def engine_bytes(self, device: str) -> int:
        """What the engine holds or has promised on a device: loaded models and run reservations,
        and on the CPU the parked models; a load in flight also its learned transient."""
        parked = self.lot.bytes() if device == "cpu" else 0
        return parked + sum(i.bytes_on(device) + i.run_reserved + i.load_extra
                            for i in self._instances if i.on(device))

    def _unreflected_bytes(self, device: str) -> int:
        # Loads in flight and run reservations are promised but not yet visible as used memory.
        return sum((i.bytes_on(device) + i.load_extra if i.state == "loading" else 0) + i.run_reserved
                   for i in self._instances if i.on(device))

    def load_reserve(self, spec: ModelSpec, device: str, run_bytes: int) -> int:
        """What a new instance reserves beyond its bytes and run peak while it loads: the part of
        its learned load transient (engine/load_peaks.py) that the run peak, reserved from
        admission on and unused until the load ends, does not already cover."""
        return max(0, self.load_peaks.extra(spec.name, str(device)) - run_bytes)

    def overhang(self, device: str) -> int:
        """What the process holds on `device` beyond the engine's ledger (models, their loads in
        flight, run reservations): heap the allocator kept after frees, ONNX Runtime's arenas,
        libraries imported since the start, runs past their reservation. The budget caps the
        process, so this counts against it too. 0 where the process's own use is unknown."""
        base, now = self._process_base.get(device), self.devices.process(device)
        if base is None or now is None:
            return 0
        loading = sum(i.bytes_on(device) for i in self._instances if i.state == "loading" and i.on(device))
        # A run admitted a moment ago has not allocated yet: its reservation is in the ledger but
        # not in `now`, and the difference would read as room beside it. It can have taken at most
        # what the process grew since it was admitted. (Without this, bench oom-stress admitted a
        # run on an overhang of 307 MiB that was 574 MiB once the runs beside it had allocated.)
        unrealized = sum(max(0, i.run_reserved - max(0, now - i.process_at_lease)) for i in self._instances
                         if i.state == "leased" and i.process_at_lease is not None and i.on(device))
        return max(0, now - base + loading + unrealized - self.engine_bytes(device))

    def headroom(self, device: str) -> int:
        # torch's cache of this process counts as free: the next allocation here reuses it.
        device = str(device)
        free = (self.devices.memory(device).free + cached_bytes(device) - self.reserve_bytes
                - self._unreflected_bytes(device))
        within_budget = self.devices.budget(device) - self.engine_bytes(device)
        if not self._ledger_only:
            within_budget -= self.overhang(device)
        return min(free, within_budget)

    def headroom_text(self, device: str) -> str:
        """headroom() with its parts, for a message that has to say what was short."""
        device = str(device)
        return (f"headroom {format_bytes(self.headroom(device))}: budget {format_bytes(self.devices.budget(device))}, "
                f"engine holds {format_bytes(self.engine_bytes(device))}, process beyond that "
                f"{format_bytes(self.overhang(device))}, free on the device {format_bytes(self.devices.memory(device).free)}")

    def capacity(self, device: str) -> int:
        """The most the engine could ever hold there: its budget, or the device less the reserve."""
        return min(self.devices.budget(device), self.devices.memory(device).total - self.reserve_bytes)

    # ---- read before a run by engine/costs.py, changing nothing ----

    @contextlib.contextmanager
    def reading(self):
        """The pool held still for one consistent reading of what is resident and where."""
        with self._cond:
            yield

    def parked(self, name: str) -> bool:
        """Evicted from a GPU into host RAM (engine/parking.py): its load is a copy back."""
        return any(p.name == name for p in self.lot.droppable())

    def idle_bytes(self, device: str, keep: set[str] = frozenset()) -> int:
        """What evicting every idle model on `device` (and, on the CPU, every parked one) would
        give back, those named in `keep` apart."""
        parked = sum(p.bytes for p in self.lot.droppable() if p.name not in keep) if device == "cpu" else 0
        return parked + sum(c.bytes_on(device) for c in self._eviction_candidates(device) if c.spec.name not in keep)

    def _never_fits(self, spec: ModelSpec, device: str, need: int) -> str | None:
        device = str(device)
        budget = self.devices.budget(device)
        total = self.devices.memory(device).total - self.reserve_bytes
        if need > budget:
            return (f"{spec.name} needs about {format_bytes(need)} on {device}, more than the "
                    f"budget of {format_bytes(budget)} there (raise it with --budget)")
        if need > total:
            return (f"{spec.name} needs about {format_bytes(need)} on {device}, which has only "
                    f"{format_bytes(total)} in all")
        return None

    # ---- placement ----

    def placement(self, spec: ModelSpec, bucket: str | None = None) -> str:
        """Where this lease is served: an idle instance's device, else (no further instance
        allowed) an instance's, else the device Devices.place picks by headroom, or for a
        splittable spec that fits no single GPU a DeviceMap (see the module docstring)."""
        mine = [i for i in self._instances if i.spec is spec]
        idle = [i for i in mine if i.state == "idle"]
        if idle or len(mine) >= spec.max_instances:
            return (idle or mine)[0].device
        best = self.devices.place(spec.device, room=self.headroom)
        if spec.split is None or self.devices.pinned or len(self.devices.gpus) < 2:
            return best
        return self._whole_or_split(spec, best, bucket)

    def _whole_or_split(self, spec: ModelSpec, best: str, bucket: str | None) -> str:
        gpus = self.devices.gpus
        load, run = self.footprints.load_bytes(spec, best), self.footprints.run_bytes(spec, best, bucket)
        need = load + run

        def split(room) -> DeviceMap | None:
            # Every device of a split reserves the run peak too: the weights get what is left.
            found = spec.split({d: room(d) - run for d in gpus})
            return found if isinstance(found, DeviceMap) and len(found.devices) > 1 else None

        if self.headroom(best) >= need:
            return best
        found = split(self.headroom)
        if found is not None:
            return found
        if self.headroom(best) + self.idle_bytes(best) >= need:
            return best
        # Evicting on one GPU only is tried before on all: the first GPU is filled first, so rooms
        # raised everywhere would evict there whatever the others could have taken.
        for one in sorted(gpus, key=self.idle_bytes) + [None]:
            found = split(lambda d: self.headroom(d) + (self.idle_bytes(d) if one in (d, None) else 0))
            if found is not None:
                return found
        if not all(self._never_fits(spec, d, need) for d in gpus):
            return best  # whole on one GPU once memory there comes free: wait for it
        found = split(self.capacity)
        if found is None:
            raise NotEnoughMemory(
                f"{spec.name} needs about {format_bytes(need)}: more than any one GPU can take, and it "
                f"does not split over {', '.join(gpus)} either (together "
                f"{format_bytes(sum(self.capacity(d) for d in gpus))} within their budgets and reserve)")
        return found  # fits only split, once memory on each comes free: the caller waits for it

    # ---- eviction ----

    def _eviction_candidates(self, device: str, roles=("heavy", "micro", "interactive"),
                             protect: Instance | None = None) -> list[Instance]:
        idle = [i for i in self._instances if i.on(device) and i.state == "idle"
                and i.spec.role in roles and i is not protect]
        return sorted(idle, key=lambda i: (_EVICTION_RANK[i.spec.role], i.last_used))

    def _evict(self, instance: Instance, reason: str, park: bool = True) -> bool:
        """Drop the instance, parking its model where it can be (see the module docstring); True
        when reference counting alone freed its model (or its device memory, parked)."""
        self._instances.remove(instance)
        model, instance.model = instance.model, None
        name = instance.spec.name
        parked = park and self.lot.try_park(
            instance.spec, model, instance.device, room=lambda: self.headroom("cpu"),
            drop=lambda p: self._drop_parked(p, f"room to park {name}"))
        if parked:
            # Its device tensors were freed by the move (the module now points at the host copy).
            reason += f"; parked in {'pinned' if parked.pinned else 'pageable'} host RAM"
            model = None
        elif instance.spec.unloader is not None:
            instance.spec.unloader(model)
        try:
            still_there = weakref.ref(model) if not parked else (lambda: None)
        except TypeError:   # no weak references to it (a tuple, a C object): only a collection can tell
            still_there = None
        del model
        where = getattr(instance.device, "label", instance.device)
        note = f"{instance.spec.name} ({instance.spec.role}, {format_bytes(instance.bytes)}) from {where}: {reason}"
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
        parked = self.lot.droppable() if device == "cpu" else []  # the cheapest room: dropped first
        if not partial and self.headroom(device) + sum(c.bytes_on(device) for c in candidates) + sum(
                p.bytes for p in parked) < need:
            return False
        for one in parked:
            if self.headroom(device) >= need:
                break
            self._drop_parked(one, reason)
        for candidate in candidates:
            if self.headroom(device) >= need:
                break
            self._evict_and_free(candidate, reason)
        return self.headroom(device) >= need

    def _evict_and_free(self, instance: Instance, reason: str) -> None:
        """Evict and see the memory back. A collection (~0.3 s with a dozen models loaded) runs
        only where dropping did not free the model: it outlived the drop, or on the CPU the process
        gave back under half its bytes (a cycle inside: MediaPipe's nets kept 23-36 MiB)."""
        before = self.devices.process("cpu") if instance.on("cpu") else None
        freed = self._evict(instance, reason)
        release_cached_memory(collect=not freed)
        held = instance.bytes_on("cpu")
        if freed and before is not None and held >= 8 << 20 and before - (self.devices.process("cpu") or 0) < held // 2:
            release_cached_memory()

    def eviction_plan(self, device: str, need: int, keep: set[str] = frozenset()) -> list[str] | None:
        """What _make_room would free for `need` on `device`, in its order, changing nothing (call
        with the lock held; engine/costs.py tells it before a run): parked models ("name (parked)")
        then idle ones, never those named in `keep`; [] when it fits now, None when evicting every
        candidate would still leave it short."""
        room, plan = self.headroom(device), []
        candidates = [(p.bytes, f"{p.name} (parked)", p.name) for p in
                      (self.lot.droppable() if device == "cpu" else [])]
        candidates += [(c.bytes_on(device), c.spec.name, c.spec.name) for c in self._eviction_candidates(device)]
        for size, label, name in candidates:
            if room >= need:
                break
            if name not in keep:
                room += size
                plan.append(label)
        return plan if room >= need else None

    def _drop_parked(self, parked: Parked, reason: str) -> None:
        """Give a parked model's host RAM back (the CPU needs the room)."""
        buffer = weakref.ref(parked.buffer) if parked.buffer is not None else None
        self.lot.remove(parked)
        note = f"{parked.name} (parked, {format_bytes(parked.bytes)}) from host RAM: {reason}"
        self.eviction_log.append(note)
        log.info("dropped %s", note)
        # A collection only where a reference cycle still holds the model (and so its buffer).
        release_cached_memory(collect=buffer is not None and buffer() is not None)
        self._cond.notify_all()

    def free_memory(self, device: str, level: int = 1) -> list[str]:
        """Out-of-memory step: level 1 evicts idle heavy and micro models, level 2 all idle ones
        (on every device of a split: its OOM may be on any)."""
        roles = ("heavy", "micro") if level <= 1 else ("heavy", "micro", "interactive")
        with self._cond:
            evicted = []
            for one in (device.devices if isinstance(device, DeviceMap) else (device,)):
                for parked in self.lot.droppable() if one == "cpu" else ():
                    self._drop_parked(parked, "out of memory")
                    evicted.append(parked)
                for instance in self._eviction_candidates(one, roles):
                    self._evict(instance, "out of memory")
                    evicted.append(instance)
        evicted = [i.spec.name if isinstance(i, Instance) else f"{i.name} (parked)" for i in evicted]
        done = [f"evicted {', '.join(evicted)}"] if evicted else ["no idle model to evict"]
        return done + release_cached_memory()

    def unload(self, name: str, park: bool = False) -> int:
        """Unload every idle instance of a model and drop its parked copies; with `park`, park
        the instances where they can be instead (bench swap). Returns how many went."""
        with self._cond:
            idle = [i for i in self._instances if i.spec.name == name and i.state == "idle"]
            for instance in idle:
                self._evict(instance, "unloaded on request", park=park)
            dropped = [] if park else [p for p in self.lot.droppable() if p.name == name]
            for parked in dropped:
                self._drop_parked(parked, "unloaded on request")
        release_cached_memory()
        return len(idle) + len(dropped)

    # ---- views ----

    def snapshot(self) -> list[dict]:
        """Every registered model with its instances' state and measured bytes (a split's per device too)."""
        with self._cond:
            rows = []
            for spec in self.registry:
                instances = [i for i in self._instances if i.spec is spec]
                named = {"name": spec.name, "role": spec.role, "runtime": spec.runtime,
                         "runtime_reason": spec.runtime_reason, "function": spec.function,
                         "networks": spec.networks, "source": spec.source}
                for i in instances:
                    rows.append({**named, "device": getattr(i.device, "label", i.device), "bytes": i.bytes,
                                 "state": "in use" if i.state == "leased" else i.state,
                                 "measured": i.state != "loading", "load_s": round(i.load_s, 3),
                                 "uses": i.uses, "backend": i.backend})
                    if isinstance(i.device, DeviceMap):
                        rows[-1]["shares"] = dict(i.device.shares)
                    # What a loaded model says of its own placement (dict: device, tier, why), if anything.
                    placement = getattr(i.model, "placement", None)
                    if isinstance(placement, dict):
                        rows[-1]["placement"] = dict(placement)
                parked = [{**named, **row, "measured": True, "load_s": None, "uses": 0}
                          for row in self.lot.rows() if row["name"] == spec.name]
                rows += parked
                if not instances and not parked:
                    device = self.devices.place(spec.device, room=self.headroom)
                    measured = self.footprints.get(spec.name, device).load_bytes
                    rows.append({**named, "device": device, "bytes": self.footprints.load_bytes(spec, device),
                                 "state": "not loaded", "measured": measured is not None,
                                 "load_s": None, "uses": 0, "backend": ""})
            return rows

    def resident_bytes(self, device: str) -> int:
        """What loaded models hold on `device` (on the CPU, parked ones too)."""
        with self._cond:
            return sum(i.bytes_on(device) for i in self._instances) + (self.lot.bytes() if device == "cpu" else 0)

    def loaded_models(self) -> set[str]:
        with self._cond:
            return {i.spec.name for i in self._instances}
