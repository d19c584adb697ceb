"""Model specs (declared once, by name) and the footprints learned for them.

A footprint starts as the spec's estimate and is replaced by measurement: the bytes a load added
on its device, and the peak above that during runs, kept per input size ("px:921600", "s:12.5")
and predicted for a size never seen by a fit over those (engine/predict.py). The first sized call
after a load is kept apart (first_peak_bytes): it also pays what the runtime sets up lazily
(thread pools, kernels, buffers that then stay), measured at several times a later call's peak
for small inputs, so it would inflate every warm prediction; a call on a model not yet resident
is predicted from it (predict(..., first_call=True)). Where a model's runs leave memory with it
(an ONNX Runtime session's arena keeps the buffers of the sizes it has run), a later call depends
on what its load has run before, so later calls are also learned by kind (later_kinds): 'repeat',
a size the loaded model has run already (the style network at 512x512 after 256: 146 MiB the
first time, 12 after: the heap's share alone); 'within', a new size below the largest it has run
(its buffers mostly fit in the arena); 'reach', a size beyond it (the arena grows). Mixed in one
curve, the first runs at a size over-predicted every repeat several times (bench estimate's warm
runs). A model that serves several endpoints may take different memory per size in each (the
voice encoder: 3-11 MiB to compare 11.8 s of two voices, 42 MiB to diarize 30 s): sized runs are
also learned per endpoint, and an endpoint with points of that unit is predicted from its own.
Footprints are persisted so that the next start admits work by numbers, not guesses.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

from . import predict as fitting
from .files import write_json
from .predict import Prediction, size_key

Role = Literal["interactive", "heavy", "micro"]
# What runs the model; 'other' for anything without its own entry. Shown in the System tab, and
# torch models get their tensors counted exactly. Any runtime but the two the engine can see into
# and free (torch, ONNX Runtime) must say why it is kept: ModelSpec.runtime_reason.
Runtime = Literal["torch", "onnxruntime", "ctranslate2", "ctypes", "thinc", "other"]
TWO_RUNTIMES = ("torch", "onnxruntime")
ROLES = ("interactive", "heavy", "micro")


@dataclass(frozen=True)
class ModelSpec:
    """One model, one function. `loader(device)` returns the loaded model on that device."""

    name: str
    role: Role
    runtime: Runtime
    loader: Callable[[str], Any]
    source: str  # where the weights come from, shown to users when loading fails
    estimate_bytes: int  # load footprint until a load has been measured
    run_estimate_bytes: int = 0  # peak above the loaded model during a run, until measured
    device: str = "auto"  # 'auto' (the engine's default device) or 'cpu'
    max_instances: int = 1
    unloader: Callable[[Any], None] | None = None
    max_pixels: int | None = None  # inputs larger than this are shrunk before the model
    description: str = ""
    runtime_reason: str = ""  # why a runtime other than torch / ONNX Runtime is kept
    # The one job this model does in the engine (no two specs share one: one network per function)
    # and how many networks it holds: graphs with their own weights, the stages of a pipeline each.
    function: str = ""
    networks: int = 1
    # Only for a model that may be split over several GPUs when it fits no single one: split(rooms)
    # plans an engine.device_map.DeviceMap over {device: bytes it may take}, None when it does not
    # fit; the loader then receives that DeviceMap (a str: the device the inputs go to).
    split: Callable[[dict[str, int]], Any] | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"{self.name}: role must be one of {ROLES}, not {self.role!r}")
        if self.split is not None and self.device != "auto":
            raise ValueError(f"{self.name}: only a model placed 'auto' may be split over GPUs")
        if self.max_instances < 1:
            raise ValueError(f"{self.name}: max_instances must be at least 1")
        if self.runtime not in TWO_RUNTIMES and not self.runtime_reason.strip():
            raise ValueError(f"{self.name}: runtime {self.runtime!r} is neither torch nor ONNX Runtime: "
                             "say why it is kept (runtime_reason)")


class Registry:
    """The models the engine knows. Models may be added and removed while the app runs (the model
    store registers downloads from a job thread), hence the lock."""

    def __init__(self, specs: list[ModelSpec] | None = None):
        self._specs: dict[str, ModelSpec] = {}
        self._lock = threading.Lock()
        for spec in specs or []:
            self.add(spec)

    def add(self, spec: ModelSpec) -> None:
        with self._lock:
            if spec.name in self._specs:
                raise ValueError(f"model {spec.name!r} is registered twice: one model per function")
            self._specs[spec.name] = spec

    def remove(self, name: str) -> None:
        with self._lock:
            self._specs.pop(name, None)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"no model named {name!r}; registered: {sorted(self._specs)}") from None

    def __iter__(self):
        with self._lock:
            return iter(list(self._specs.values()))

    def __contains__(self, name: str) -> bool:
        return name in self._specs


def pixel_bucket(width: int, height: int) -> str:
    """Input size of an image: its pixels, exact ('px:921600'); the store fits memory to it."""
    return size_key("px", max(int(width) * int(height), 1))


def device_kind(device: str) -> str:
    """Footprints are kept per kind of device: a model's bytes on cuda:0 hold on cuda:1 too."""
    return "cpu" if device == "cpu" else "cuda"


@dataclass
class Footprint:
    load_bytes: int | None = None
    # size key ('px:921600') or a legacy bucket ('0.25MP', 'any') -> the largest peak above load
    run_peak_bytes: dict[str, int] = field(default_factory=dict)
    # Buckets whose peak was measured while other calls ran (their allocations included): a
    # stand-in that the first clean measurement replaces.
    crowded: list[str] = field(default_factory=list)
    # size key -> the largest clean peak of a first sized call after a load (see the docstring)
    first_peak_bytes: dict[str, int] = field(default_factory=dict)
    # kind of later call ('repeat', 'within', 'reach': the docstring) -> size key -> its largest
    # clean peak
    later_kinds: dict[str, dict[str, int]] = field(default_factory=dict)


class FootprintStore:
    """Measured footprints per (model, device kind), persisted as JSON under the data dir."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, Footprint] = {}
        self._fresh: set[str] = set()   # loaded, and no sized call recorded since
        # Per loaded model whose runs leave memory with it (loaded(arena=True)): the (unit, size)
        # it has run since its load. One per model and device kind, as _fresh: instances share it.
        self._served: dict[str, set[tuple[str, float]]] = {}
        if self.path and self.path.exists():
            raw = json.loads(self.path.read_text())
            self._data = {key: Footprint(value.get("load_bytes"), dict(value.get("run_peak_bytes", {})),
                                         list(value.get("crowded", [])), dict(value.get("first_peak_bytes", {})),
                                         {k: dict(v) for k, v in value.get("later_kinds", {}).items()})
                          for key, value in raw.items()}

    @staticmethod
    def _key(model: str, device: str, endpoint: str | None = None) -> str:
        return f"{model}@{device_kind(device)}" + (f"#{endpoint}" if endpoint else "")

    def get(self, model: str, device: str, endpoint: str | None = None) -> Footprint:
        """The model's footprint (every endpoint's runs), or what `endpoint`'s sized runs taught."""
        with self._lock:
            fp = self._data.get(self._key(model, device, endpoint), Footprint())
            return Footprint(fp.load_bytes, dict(fp.run_peak_bytes), list(fp.crowded), dict(fp.first_peak_bytes),
                             {k: dict(v) for k, v in fp.later_kinds.items()})

    def load_bytes(self, spec: ModelSpec, device: str) -> int:
        measured = self.get(spec.name, device).load_bytes
        return spec.estimate_bytes if measured is None else measured

    def run_bytes(self, spec: ModelSpec, device: str, bucket: str | None) -> int:
        return self.predict(spec, device, bucket).bytes

    def predict(self, spec: ModelSpec, device: str, bucket: str | None, first_call: bool = False,
                endpoint: str | None = None) -> Prediction:
        """The run peak above the loaded model for an input of this size, with how it was got.

        A size key ("px:921600") is predicted from the measured sizes of its unit (clean ones;
        peaks measured while other calls ran only when no clean one exists; first calls after a
        load only when neither exists, as they bound a later call from above). first_call: the
        call right after a load, predicted as the larger of that and the first calls' own fit
        (basis 'first ...'). A later call on a model whose runs leave memory with it (an arena):
        from the fit of the later calls of its kind (basis 'repeat ...', 'within ...', 'reach ...';
        see the module's docstring) where one was measured, and no higher than the later calls of
        every kind predict while its kind has a single size.
        Anything else, and a unit with no measured size, falls back to the per-bucket rule of old
        footprint files: that bucket's peak, else the largest peak seen, else the spec's estimate.
        endpoint: where it has measured sizes of this unit, from its own runs alone (a first call
        no lower than the model's first calls predict: the lazy set-up is the model's, whichever
        endpoint paid it); where only other endpoints have, no lower than the spec's estimate."""
        sized, model = fitting.parse_key(bucket), self.get(spec.name, device)
        own = self.get(spec.name, device, endpoint) if endpoint and sized is not None else None
        if own is None or not _has_unit(own, sized[0]):
            wide = self._predict(spec, device, model, sized, bucket, first_call)
            if own is None or not _has_unit(model, sized[0]) or wide.bytes >= spec.run_estimate_bytes:
                return wide
            # Another function's curve may be far below this one's: the spec's guess bounds it.
            return Prediction(spec.run_estimate_bytes, spec.run_estimate_bytes, 0.0, "estimate")
        mine = self._predict(spec, device, own, sized, bucket, first_call)
        firsts = [(s, p) for s, (p, _) in _points(model, sized[0], model.first_peak_bytes).items()]
        if first_call and firsts:
            model_first = fitting.predict(firsts, sized[1])
            if model_first.bytes > mine.bytes:
                return _labelled(model_first, "first")
        return mine

    def _predict(self, spec: ModelSpec, device: str, fp: Footprint, sized: tuple[str, float] | None,
                 bucket: str | None, first_call: bool) -> Prediction:
        if sized is not None:
            unit, size = sized
            kind = None if first_call else self._kind(spec.name, device, unit, size)
            alike = [(s, p) for s, (p, _) in _points(fp, unit, fp.later_kinds.get(kind, {})).items()]
            own = _labelled(fitting.predict(alike, size), kind) if alike else None
            if own is not None and len(alike) > 1:
                return own
            any_later = _sized(fp, unit, size, first_call)
            # One size of its kind is scaled in proportion above it (bench estimate: a reach to
            # 1280x720 from a point at 512x512 read 416 MiB, 180 taken): the later calls of any
            # kind bound it from above then.
            if own is not None and (any_later is None or own.bytes <= any_later.bytes):
                return own
            if any_later is not None:
                return any_later
        peaks = fp.run_peak_bytes
        key = bucket or "any"
        if key in peaks:
            return Prediction(peaks[key], peaks[key], 0.0, "bucket", 1, key in fp.crowded)
        if peaks:
            # An unseen bucket: the largest peak seen so far is the safer guess than the estimate.
            return Prediction(max(peaks.values()), max(peaks.values()), 0.0, "largest", len(peaks))
        return Prediction(spec.run_estimate_bytes, spec.run_estimate_bytes, 0.0, "estimate")

    def record_load(self, model: str, device: str, nbytes: int, arena: bool = False) -> None:
        with self._lock:
            self._data.setdefault(self._key(model, device), Footprint()).load_bytes = int(nbytes)
            self._save()
        self.loaded(model, device, arena)

    def loaded(self, model: str, device: str, arena: bool = False) -> None:
        """A load of `model` happened (its size measured or not): its next sized call is a first
        call. arena: its runs leave memory with it (an ONNX Runtime session's arena holds a size's
        buffers once it has run it), so the sizes it runs are followed from now on."""
        with self._lock:
            self._fresh.add(self._key(model, device))
            if arena:
                self._served[self._key(model, device)] = set()
            else:
                self._served.pop(self._key(model, device), None)

    def fresh(self, model: str, device: str) -> bool:
        """Whether `model` was loaded and has had no sized call since."""
        with self._lock:
            return self._key(model, device) in self._fresh

    def _kind(self, model: str, device: str, unit: str, size: float) -> str | None:
        """The kind ('repeat', 'within', 'reach') of a later call of this size on the loaded model; None where its sizes
        are not followed (its runs leave nothing with it, or no load was seen by this store)."""
        with self._lock:
            return _kind_of(self._served.get(self._key(model, device)), unit, size)

    def record_run(self, model: str, device: str, bucket: str | None, nbytes: int, crowded: bool = False,
                   endpoint: str | None = None) -> None:
        """Keep the largest clean peak seen per size (or legacy bucket): admission must not
        under-reserve. A crowded measurement (other calls ran meanwhile) only fills a size with
        nothing better. The first sized call after a load goes to first_peak_bytes (clean ones
        only; a crowded one counts as a later call's stand-in); a later call of a followed model
        goes to its kind's peaks as well (clean ones only). At most fitting.MAX_POINTS sizes per
        unit and kind are kept. A sized run is learned for the model and, given one, for the
        endpoint that made it (the same first / kind: the load is the model's)."""
        sized = fitting.parse_key(bucket)
        # One spelling per size ('px:100', never also 'px:100.0'): one point per distinct size.
        bucket = size_key(*sized) if sized is not None else bucket or "any"
        with self._lock:
            key = self._key(model, device)
            # A preload's empty call (no size) leaves the lazy set-up to the first real call.
            first = sized is not None and key in self._fresh
            if first:
                self._fresh.discard(key)
            served = self._served.get(key)
            kind = None if first or sized is None else _kind_of(served, *sized)
            if sized is not None and served is not None:
                served.add(sized)
            keys = [key] + ([self._key(model, device, endpoint)] if endpoint and sized is not None else [])
            # The file is written once per call, whatever it changed.
            if any([_learn(self._data.setdefault(k, Footprint()), bucket, sized, int(nbytes), crowded, first, kind)
                    for k in keys]):
                self._save()

    def _save(self) -> None:
        if not self.path:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {k: vars(v) for k, v in self._data.items()}, indent=1)


def _learn(fp: Footprint, bucket: str, sized: tuple[str, float] | None, nbytes: int, crowded: bool,
           first: bool, kind: str | None) -> bool:
    """FootprintStore.record_run's rules on one footprint; whether it changed."""
    changed = False
    if kind is not None and not crowded:
        # Kept among the later calls too: where a kind has no point yet, they predict it.
        peaks = fp.later_kinds.setdefault(kind, {})
        if nbytes > peaks.get(bucket, -1):
            peaks[bucket] = nbytes
            _bound(fp, sized[0], peaks, [])
            changed = True
    if first and not crowded:
        if nbytes > fp.first_peak_bytes.get(bucket, -1):
            fp.first_peak_bytes[bucket] = nbytes
            _bound(fp, sized[0], fp.first_peak_bytes, [])
            changed = True
    elif not (crowded and bucket in fp.run_peak_bytes):
        known, was_crowded = fp.run_peak_bytes.get(bucket), bucket in fp.crowded
        if known is None or was_crowded or nbytes > known:
            fp.run_peak_bytes[bucket] = nbytes
            if crowded:
                fp.crowded.append(bucket)
            elif was_crowded:
                fp.crowded.remove(bucket)
            if sized is not None:
                _bound(fp, sized[0], fp.run_peak_bytes, fp.crowded)
            changed = True
    return changed


def _has_unit(fp: Footprint, unit: str) -> bool:
    """Whether `fp` holds a measured size of `unit` (a later or a first call)."""
    return any(_points(fp, unit, peaks) for peaks in (fp.run_peak_bytes, fp.first_peak_bytes))


def _sized(fp: Footprint, unit: str, size: float, first_call: bool) -> Prediction | None:
    """The prediction from the later calls of every kind; the first calls' for a first call where
    that is more, and for any call while no later call was measured (FootprintStore.predict)."""
    points = _points(fp, unit)
    firsts = [(s, p) for s, (p, _) in _points(fp, unit, fp.first_peak_bytes).items()]
    clean = [(s, p) for s, (p, crowded) in points.items() if not crowded]
    if len(clean) == 1 and firsts:
        # One later size alone is scaled by size / size0 above it: from a 1-pixel run that is
        # thousands of times its peak, and admission would wait for memory no run needs.
        # First calls bound later calls from above, so with them the fit stays an upper bound.
        clean = fitting.envelope(clean + [f for f in firsts if f[0] not in {c[0] for c in clean}])
    later = (fitting.predict(clean, size) if clean else
             fitting.predict([(s, p) for s, (p, _) in points.items()], size, crowded=True) if points else
             None)
    first = fitting.predict(firsts, size) if firsts and (first_call or later is None) else None
    if first is not None and (later is None or first.bytes > later.bytes):
        return _labelled(first, "first")
    return later


def _kind_of(served: set[tuple[str, float]] | None, unit: str, size: float) -> str | None:
    if served is None:
        return None
    if (unit, size) in served:
        return "repeat"
    largest = max((s for u, s in served if u == unit), default=-1.0)
    return "within" if size <= largest else "reach"


def _labelled(prediction: Prediction, kind: str) -> Prediction:
    return replace(prediction, basis=f"{kind} {prediction.basis}")


def _points(fp: Footprint, unit: str, peaks: dict[str, int] | None = None) -> dict[float, tuple[int, bool]]:
    """size -> (peak, crowded) of one unit's measured sizes (of later calls unless `peaks` says)."""
    points = {}
    for key, peak in (fp.run_peak_bytes if peaks is None else peaks).items():
        sized = fitting.parse_key(key)
        if sized is not None and sized[0] == unit:
            points[sized[1]] = (peak, key in fp.crowded)
    return points


def _bound(fp: Footprint, unit: str, peaks: dict[str, int], crowded_keys: list[str]) -> None:
    """Past MAX_POINTS sizes, the two closest in ratio merge into the larger size with the larger
    peak (and that peak's crowded flag): the fit can only move up."""
    keys = {}
    for key in peaks:
        sized = fitting.parse_key(key)
        if sized is not None and sized[0] == unit:
            keys[sized[1]] = key
    while len(keys) > fitting.MAX_POINTS:
        small, large = fitting.closest_pair(list(keys))
        gone, kept = keys.pop(small), keys[large]
        if peaks[gone] > peaks[kept]:
            peaks[kept] = peaks[gone]
            if kept in crowded_keys:
                crowded_keys.remove(kept)
            if gone in crowded_keys:
                crowded_keys.append(kept)
        del peaks[gone]
        if gone in crowded_keys:
            crowded_keys.remove(gone)
