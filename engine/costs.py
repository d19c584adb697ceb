"""What a request will cost, told before it runs: the memory it needs on its device, the time it
should take, the models that must load first and the idle ones admission would evict for them.
Read from what was learned (footprints: engine/models.py and engine/predict.py; timings:
engine/timings.py) and from the pool's state, changing nothing.

    cost = estimate(engine, "detect_faces", request_size([photo]))

An endpoint's models are the ones its runs leased (learned), or, for an endpoint whose input
chooses among models (a model picker), the ones its caller names for this request: an endpoint
neither ran here nor named any is not known (Cost.known is False), and estimate() says so. Memory on a device is what a run there
adds: the load of each model not resident plus the largest predicted run peak of its models (a
run's calls lease them one after another; a loaded model stays resident until evicted).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .device_map import DeviceMap
from .devices import rounded_bytes
from .models import size_key
from .predict import seconds_bucket
from .oom import NotEnoughMemory

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# How admission would fare on a device: fits now; fits once idle models are evicted; waits for
# memory that running work holds; refused (more than the budget or the device could ever give).
VERDICTS = ("now", "evicts", "waits", "refused")


@dataclass
class ModelCost:
    name: str
    device: str
    resident: bool
    load_bytes: int        # 0 when resident
    run_bytes: int         # the predicted run peak above the loaded model, margin included
    basis: str             # how the run peak was predicted (engine/predict.Prediction.basis)
    load_s: float | None   # its last loads' median, when it has to load; None when unknown
    parked: bool = False   # evicted from a GPU into host RAM: its load is a copy back (engine/parking.py)
    load_extra_bytes: int = 0   # its load's transient beyond the run peak, reserved while it loads


@dataclass
class Cost:
    endpoint: str
    size: str | None
    known: bool                        # the endpoint ran here before: its models are known
    models: list[ModelCost] = field(default_factory=list)
    need_bytes: dict[str, int] = field(default_factory=dict)      # device -> what a run adds there
    headroom_bytes: dict[str, int] = field(default_factory=dict)  # device -> room now, no eviction
    evicts: list[str] = field(default_factory=list)               # idle models that would go
    verdict: str = "now"
    reason: str = ""                   # why it waits or is refused
    seconds: float | None = None       # expected run time, loads not included
    load_seconds: float = 0.0          # loads of the models not resident (known ones)
    runs_seen: int = 0                 # timed runs behind `seconds`

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(engine, endpoint: str, size: str | None, bucket: str | None = None,
             models: list[str] | None = None) -> Cost:
    """The cost of a request to `endpoint` whose inputs have this size key (request_size);
    `bucket` is the size key the endpoint's runs open with where it differs (a chunk's length);
    `models` the models this request will use where its inputs choose them (else those learned)."""
    bucket = bucket if bucket is not None else size
    pool, default = engine.pool, engine.devices.default
    learned = engine.timings.models(endpoint, default) if models is None else models
    names = [n for n in dict.fromkeys(learned) if n in engine.registry]
    cost = Cost(endpoint, size, known=bool(names))
    if not names:
        return cost
    with pool.reading():
        for name in names:
            spec = engine.registry.get(name)
            try:
                device = pool.placement(spec, bucket)
            except NotEnoughMemory as exc:
                cost.verdict, cost.reason = "refused", str(exc)
                return cost
            device = str(device) if isinstance(device, DeviceMap) else device
            resident = name in pool.loaded_models()
            parked = not resident and device != "cpu" and pool.parked(name)
            # A model that loads first pays its first call's lazy set-up too (FootprintStore.predict).
            prediction = engine.footprints.predict(spec, device, bucket, first_call=not resident,
                                                   endpoint=endpoint)
            load = 0 if resident else engine.footprints.load_bytes(spec, device)
            extra = 0 if resident else pool.load_reserve(spec, device, prediction.bytes)
            cost.models.append(ModelCost(name, device, resident, load, prediction.bytes, prediction.basis,
                                         None if resident else engine.timings.load_seconds(name, device), parked,
                                         extra))
        for device in dict.fromkeys(m.device for m in cost.models):
            here = [m for m in cost.models if m.device == device]
            # As admission reserves it (Pool._take): loads with their transients, then the largest run.
            need = sum(m.load_bytes + m.load_extra_bytes for m in here) + max(m.run_bytes for m in here)
            cost.need_bytes[device] = need
            _admit(pool, cost, device, need, keep={m.name for m in here})
    device = cost.models[0].device
    cost.seconds = engine.timings.seconds(endpoint, size, device)
    cost.runs_seen = engine.timings.runs(endpoint, device)
    cost.load_seconds = round(sum(m.load_s or 0.0 for m in cost.models), 3)
    return cost


def _admit(pool, cost: Cost, device: str, need: int, keep: set[str]) -> None:
    """How admission would fare on `device` (within pool.reading()), by the pool's own eviction plan."""
    headroom = pool.headroom(device)
    cost.headroom_bytes[device] = headroom
    capacity = pool.capacity(device)
    if need > capacity:
        cost.verdict = "refused"
        cost.reason = (f"needs about {rounded_bytes(need)} on {device}, more than the engine may ever hold there "
                       f"({rounded_bytes(capacity)}: the budget or the device, less the reserve)")
        return
    evicts = pool.eviction_plan(device, need, keep)
    if evicts:
        cost.evicts += evicts
        if VERDICTS.index(cost.verdict) < VERDICTS.index("evicts"):
            cost.verdict = "evicts"
    elif evicts is None and cost.verdict != "refused":
        idle = pool.idle_bytes(device, keep)
        cost.verdict = "waits"
        cost.reason = (f"needs about {rounded_bytes(need)} on {device}: {rounded_bytes(headroom)} is free for it "
                       f"now and idle models hold {rounded_bytes(idle)}; the rest is held by work in progress, "
                       "so it waits for that to finish")


# ------------------------------------------------------------------------ request sizes

def request_size(values: Iterable[Any]) -> str | None:
    """The size key of a request's inputs, one rule for every endpoint: audio and video files by
    their length ('s:N'; a video's reference photo is an option of the video's work), else
    pictures by their pixels (the largest width times the largest height, 'px:N'), else text by
    its characters ('chars:N'); None when nothing has a size.
    `values` are the inputs' values as the app hands them over (arrays, file paths, text)."""
    widths, heights, seconds, chars = [], [], 0.0, 0
    for value in values:
        picture = _picture_size(value)
        if picture:
            widths.append(picture[0])
            heights.append(picture[1])
        elif _is_file(value):
            seconds += media_seconds(value) or 0.0
        elif isinstance(value, str):
            chars += len(value.strip())
    if seconds:
        return seconds_bucket(seconds)
    if widths:
        return size_key("px", max(widths) * max(heights))
    return size_key("chars", chars) if chars else None


def media_seconds(path) -> float | None:
    """The length of an audio or video file, None when it cannot be read."""
    from .media.audio import probe_audio
    from .media.ffmpeg import MediaError, header

    try:
        return probe_audio(path).duration_s
    except MediaError:
        try:
            return header(path).duration_s     # a video without sound
        except MediaError:
            return None


def _picture_size(value) -> tuple[int, int] | None:
    if isinstance(value, np.ndarray) and value.ndim >= 2:
        return value.shape[1], value.shape[0]
    if isinstance(value, dict):   # an image editor's value: its background is the picture
        return _picture_size(value.get("background")) or _picture_size(value.get("composite"))
    if _is_file(value) and Path(value).suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(value) as image:   # reads the header only
                return image.size
        except (OSError, UnidentifiedImageError):
            return None
    return None


def _is_file(value) -> bool:
    return isinstance(value, (str, os.PathLike)) and len(str(value)) < 4096 and os.path.isfile(value)
