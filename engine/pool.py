"""Leases: `with pool.lease(name) as model:` gives one caller exclusive use of one loaded instance.
What is resident, how memory is accounted and what is evicted for room is engine/residency.py.

- A second instance is loaded only where the spec allows it and it fits.
- Admission: the learned footprint (load + run peak for the bucket; a model not loaded yet its
  first call's peak, and while it loads its learned load transient where that passes the run
  peak, engine/load_peaks.py) plus a reserve must fit both
  the device's free memory (all processes) and the engine's budget there (a split model's share,
  on each of its devices). If not, idle models are evicted; if still short, the caller waits on a
  condition that every release and unload signals, up to a timeout.
- Fairness: a caller that has waited for memory longer than FAIR_WAIT_S is served before newcomers
  on its device. Without it, a model needing most of the budget waits out its timeout while small
  leases come and go, since they never all end at once. Not held back: callers that already hold
  a lease (holding them could deadlock), interactive calls whose model is loaded and whose run fits
  without evicting anything, and everyone when the waiter could not fit even if the engine gave
  back all it holds (other processes hold the memory, so holding others back gains nothing).
  A split model waits on the device its inputs go to, for its share there.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from .device_map import DeviceMap, tensor_shares
from .devices import Devices, format_bytes
from .measure import METER, TRIM_FREE_BYTES, heap_in_use, rss, settle
from .models import FootprintStore, ModelSpec, Registry
from .oom import NotEnoughMemory, OutOfMemory, call_with_recovery
from .parking import Parking
from .residency import CUDA_PARKING, Instance, ModelUnavailable, Residency
from .runs import current_run
from .runtimes.backend import backend_of
from .runtimes.torch_runtime import fault_in, release_cached_memory, tensor_bytes
from .timings import endpoint_of

__all__ = ["FAIR_WAIT_S", "Instance", "ModelUnavailable", "Pool"]

log = logging.getLogger(__name__)

FAIR_WAIT_S = 3.0  # a short wait is served by whoever fits first; a longer one goes first


@dataclass(eq=False)
class _Waiter:
    """A caller waiting for memory (not for an instance of its model to come free)."""
    device: str
    need: int
    since: float


def keeps_run_memory(spec: ModelSpec, backend: str) -> bool:
    """Whether what a model's runs allocate may stay with it (an ONNX Runtime arena; any runtime
    we cannot see into). Not torch: its tensors are counted exactly, and what a torch run leaves
    (thread pools, oneDNN's caches) is the process's, which evicting the model would not free. A
    torch module run by an ONNX session of its own is the session's case: its arena."""
    return spec.runtime != "torch" or backend.startswith("onnxruntime")


class Pool(Residency):
    def __init__(self, registry: Registry, devices: Devices, footprints: FootprintStore, *,
                 reserve_bytes: int = 256 * 1024**2, wait_timeout_s: float = 300.0,
                 parking: Parking | None = CUDA_PARKING):
        super().__init__(registry, devices, footprints, reserve_bytes=reserve_bytes, parking=parking)
        self.wait_timeout_s = wait_timeout_s
        self._waiters: list[_Waiter] = []  # in arrival order
        self._admissions = 0  # leases and loads granted: a run alone saw it unchanged to its end
        self._held = threading.local()  # how many leases the current thread holds

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
        with self._cond:
            alone_at = (self._admissions if instance.device == "cpu" and not isinstance(instance.device, DeviceMap)
                        and keeps_run_memory(instance.spec, instance.backend)
                        and not self._others_busy(instance) else None)
        try:
            yield instance.model
        finally:
            self._held.count -= 1
            with self._cond:
                if alone_at is not None and alone_at == self._admissions:
                    self._keep_what_the_run_kept(instance)
                instance.state = "idle"
                instance.run_reserved, instance.process_at_lease = 0, None
                held = getattr(instance.model, "device_bytes", None)  # placement per request (tiers)
                if isinstance(held, int) and instance.device != "cpu" and not isinstance(instance.device, DeviceMap):
                    instance.bytes = held
                instance.last_used = time.monotonic()
                self._cond.notify_all()

    def _acquire(self, spec: ModelSpec, bucket: str | None, timeout_s: float | None) -> Instance:
        run = current_run()
        endpoint = endpoint_of(run) if run is not None else None   # its runs' own footprint
        started = time.monotonic()
        deadline = started + (self.wait_timeout_s if timeout_s is None else timeout_s)
        waiter = None
        with self._cond:
            try:
                while True:
                    if waiter is None:  # placed again on each wake-up until queued for memory there
                        device = self.placement(spec, bucket)
                        # A model not loaded yet runs its first call, which can need more (lazy
                        # set-up): reserved as engine/costs.py predicts it for the user.
                        first = not any(i.spec is spec for i in self._instances)
                        run_bytes = self.footprints.predict(spec, device, bucket, first_call=first,
                                                            endpoint=endpoint).bytes
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
                            f"{spec.name}: no instance and not enough memory on "
                            f"{getattr(device, 'label', device)} came free within {deadline - started:.0f} s "
                            f"({self.headroom_text(device)})")
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
            load_here = device.shares[str(device)] if isinstance(device, DeviceMap) else load_bytes
            extra = 0 if isinstance(device, DeviceMap) else self.load_reserve(spec, device, run_bytes)
            need = min(load_here + run_bytes + extra, self.devices.budget(str(device)))
        else:
            return None
        waiter = _Waiter(str(device), need, since)
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
        taken = self._take(spec, device, run_bytes, load_bytes)
        if taken is not None or isinstance(device, DeviceMap) or not self.overhang(device):
            return taken
        mine = [i for i in self._instances if i.spec is spec]
        if len(mine) >= spec.max_instances and not any(i.state == "idle" for i in mine):
            return None   # waiting for an instance of its own, not for memory: nothing to trim
        # Short because the process holds more than the ledger says: heap the allocator may give
        # back (trimmed here), or memory that nothing in flight will free (libraries imported
        # since the start, a leak). In the latter case the ledger alone decides, rather than
        # stalling every caller until its timeout; the process then passes the budget by it.
        release_cached_memory(collect=False)
        taken = self._take(spec, device, run_bytes, load_bytes)
        if taken is not None or any(i.state != "idle" and i.on(device) for i in self._instances):
            return taken
        self._ledger_only = True
        try:
            taken = self._take(spec, device, run_bytes, load_bytes)
        finally:
            self._ledger_only = False
        if taken is not None:
            log.warning("%s admitted on the ledger alone: the process holds %s on %s that nothing in flight "
                        "will free", spec.name, format_bytes(self.overhang(device)), device)
        return taken

    def _take(self, spec: ModelSpec, device: str, run_bytes: int, load_bytes: int) -> Instance | None:
        mine = [i for i in self._instances if i.spec is spec]
        for instance in mine:
            if instance.state != "idle" or instance.device != device:
                continue
            # A learned run peak that cannot fit beside the loaded model even with everything else
            # gone gets all the room there is, as a new load does below (OOM recovery does the rest);
            # asking for more would wait for memory that can never come.
            run_here = {d: min(run_bytes, max(0, self.capacity(d) - instance.bytes_on(d))) for d in instance.devices}
            if all(self._make_room(d, run_here[d], f"room to run {spec.name}", protect=instance)
                   for d in instance.devices):
                instance.state, instance.run_reserved = "leased", max(run_here.values())
                self._admissions += 1
                instance.process_at_lease = self.devices.process(instance.devices[0])
                instance.uses += 1
                return instance
        if len(mine) >= spec.max_instances:
            return None
        if isinstance(device, DeviceMap):
            return self._take_split(spec, device, run_bytes)
        extra = self.load_reserve(spec, device, run_bytes)
        need = load_bytes + run_bytes + extra
        if self._never_fits(spec, device, need) and not self._never_fits(spec, device, load_bytes):
            # The weights fit; only the learned run peak does not (one unusual input can set
            # it). Make all the room there is and let OOM recovery handle the rest.
            need = min(need, self.devices.budget(device), self.devices.memory(device).total - self.reserve_bytes)
        reason = self._never_fits(spec, device, need)
        if reason and not mine:
            raise NotEnoughMemory(reason)
        if not reason and self._make_room(device, need, f"room to load {spec.name}"):
            instance = Instance(spec, device, bytes=load_bytes, run_reserved=run_bytes, uses=1,
                                load_extra=extra, parked=self.lot.claim(spec.name, device))
            self._instances.append(instance)
            self._admissions += 1
            return instance  # state 'loading': the caller loads (or restores) it outside the lock
        return None

    def _take_split(self, spec: ModelSpec, plan: DeviceMap, run_bytes: int) -> Instance | None:
        """A new instance split by `plan`: room for its share (and the run peak) on every device,
        evicting only when every device can be given it."""
        needs = {d: plan.shares[d] + run_bytes for d in plan.devices}
        if any(self.headroom(d) + self.idle_bytes(d) < n for d, n in needs.items()):
            return None
        if not all(self._make_room(d, n, f"room to load {spec.name} split") for d, n in needs.items()):
            return None
        instance = Instance(spec, plan, bytes=sum(plan.shares.values()), run_reserved=run_bytes, uses=1)
        self._instances.append(instance)
        self._admissions += 1
        return instance

    def _load(self, instance: Instance) -> None:
        spec, device = instance.spec, instance.device
        before, heap_before = self._used(device), heap_in_use()
        alone = not self._others_busy(instance)
        # A load alone on the CPU is probed for its transient (exact: the kernel's high-water mark).
        probe = METER.probe("cpu") if alone and device == "cpu" and instance.parked is None else None
        instance_admitted = instance.bytes
        started = time.monotonic()
        run = current_run()
        parked = instance.parked  # a parked copy is restored instead of loading (engine/parking.py)
        try:
            model = call_with_recovery(
                f"loading {spec.name}", lambda: self.lot.bring_back(parked, device, spec.loader),
                free_memory=lambda level: self.free_memory(device, level),
                record=run, step_prefix=f"loading {spec.name}: ")
            fault_in(model)
        except BaseException as exc:
            if probe is not None:
                probe.stop()
            with self._cond:
                self._instances.remove(instance)
                if parked is not None:
                    self.lot.remove(parked)
                self._cond.notify_all()
            if isinstance(exc, (OutOfMemory, NotEnoughMemory)) or not isinstance(exc, Exception):
                raise
            raise ModelUnavailable(f"{spec.name} could not be loaded from {spec.source}: {exc}") from exc
        if isinstance(device, DeviceMap):
            # Each device's share as loaded: the model's own count (a wrapper says device_shares),
            # else its tensors'; the plan's estimate where neither can tell.
            shares = getattr(model, "device_shares", None)
            shares = shares if isinstance(shares, dict) and shares else tensor_shares(model)
            device = device.with_shares(shares) if shares else device
        # A torch model's tensors are exact (unless it holds an ONNX session, below). For
        # runtimes we cannot inspect the memory delta is the measure, and it is clean only when
        # no other model was in use meanwhile: otherwise their allocations would be billed to
        # this load, many times its real size, so a footprint already learned cleanly is kept
        # instead. When clean, what malloc handed out counts too on the CPU: a load into heap
        # that earlier work freed does not raise RSS.
        clean = alone and not self._others_busy(instance)
        peaks = probe.stop() if probe is not None else None
        if probe is not None:
            settle()   # what the load freed may stay resident in the heap: not what it kept
        stayed = rss() - probe.start_rss if probe is not None else 0   # what stayed in the process
        backend = backend_of(model, spec.runtime, device)
        measured, trusted = tensor_bytes(model), True
        if isinstance(device, DeviceMap):
            measured = sum(device.shares.values())
        elif not measured or backend.startswith("onnxruntime"):
            grew = self._heap_grew(device, heap_before) if clean else 0
            if measured and clean and device == "cpu":
                # A torch module exported to ONNX Runtime (engine/runtimes/compiled.py) keeps a
                # session beside its tensors, with its own copy of the weights and the arena its
                # preparing calls grew, all of it from malloc: the tensors are a floor, the heap's
                # growth the measure (RSS would add the runtime's library pages, mapped by the
                # first session of the process and not this model's: the face detector's first
                # load grew RSS by 59-99 MiB, its heap by about 30). On a GPU the device's delta.
                measured = max(measured, grew)
            else:
                measured = max(measured, self._used(device) - before, grew)
            known = self.footprints.get(spec.name, device).load_bytes
            if not clean and known is not None:
                measured, trusted = known, False
        with self._cond:
            instance.model, instance.device, instance.bytes, instance.backend = model, device, measured, backend
            instance.load_s = time.monotonic() - started
            instance.state, instance.load_extra = "leased", 0
            instance.process_at_lease = self.devices.process(instance.devices[0])
            if parked is not None:
                self.lot.remove(parked)  # its host RAM goes back: the module's tensors are on the GPU again
            if measured > instance_admitted:
                # Larger than its footprint said: restore the budget by evicting idle models now,
                # as far as they go.
                for one in instance.devices:
                    self._make_room(one, 0, f"{spec.name} measured larger than its footprint", partial=True)
            self._cond.notify_all()
        arena = keeps_run_memory(spec, backend)
        if trusted:
            self.footprints.record_load(spec.name, device, measured, arena=arena)
        else:
            self.footprints.loaded(spec.name, device, arena=arena)
        if peaks is not None and clean and not peaks.overlapped:
            # Above what stayed: the model, and what its first load leaves for good (a library
            # imported: the process's overhang from then on, not each load's transient).
            extra = self.load_peaks.record(spec.name, device, peaks.device_delta_bytes, max(measured, stayed))
            log.debug("%s: load transient %s above its %s", spec.name, format_bytes(extra), format_bytes(measured))
        restored = parked is not None and parked.restored_s is not None
        if run is not None:
            run.load_s += instance.load_s
            run.loads[spec.name] = round(run.loads.get(spec.name, 0.0) + instance.load_s, 4)
            if restored:
                run.steps.append(f"restored {spec.name} from {'pinned' if parked.pinned else 'pageable'} host "
                                 f"RAM in {instance.load_s:.3f} s instead of loading it")
        log.info("%s %s on %s in %.2f s, %s", "restored" if restored else "loaded", spec.name,
                 getattr(device, "label", device), instance.load_s, format_bytes(measured))

    def _keep_what_the_run_kept(self, instance: Instance) -> None:
        """A run alone on the CPU (not torch) whose process stayed larger after it than when it was admitted
        left that much in the model's own keeping (ONNX Runtime's arena holds a session's largest
        run; a first call's lazy set-up stays): it is billed to the instance, so the ledger sees it
        and evicting the model is known to free it, rather than counting it as the process's
        overhang. Freed heap still resident is trimmed first (only past TRIM_FREE_BYTES of growth:
        most runs keep nothing and cost one /proc read here)."""
        at, now = instance.process_at_lease, self.devices.process("cpu")
        instance.largest_run = max(instance.largest_run, instance.run_reserved)
        if at is None or now is None or now - at < TRIM_FREE_BYTES:
            return
        settle()
        now = self.devices.process("cpu")
        if now is None or now <= at:
            return
        # At most its largest run in all (an arena holds the largest): what some other thread
        # allocated meanwhile (a job decoding frames) must not pile up on the model.
        kept = min(instance.kept + now - at, instance.largest_run)
        instance.bytes += kept - instance.kept
        instance.kept = kept

    def _others_busy(self, instance: Instance) -> bool:
        with self._cond:
            return any(i is not instance and i.state != "idle" and any(i.on(d) for d in instance.devices)
                       for i in self._instances)

    @staticmethod
    def _heap_grew(device: str, heap_before: int | None) -> int:
        heap_after = heap_in_use() if device == "cpu" else None
        return heap_after - heap_before if heap_after is not None and heap_before is not None else 0

    def _used(self, device: str) -> int:
        if device == "cpu":
            return rss()
        return self.devices.memory(str(device)).used
