"""A model too large for one GPU, split over several: the plan (which module on which device) and
the bytes each device holds (the article's lesson 8: split by budget, not by guess).

- `DeviceMap` is what a splittable spec's loader receives instead of a device. It is a `str`, the
  device the model's inputs go to (its first module's), so everything that only moves inputs,
  records a run's device or keys footprints by device kind keeps working unchanged; a loader that
  can split checks `isinstance(device, DeviceMap)` and passes `modules` on (transformers'
  `from_pretrained(device_map=...)`, accelerate's `dispatch_model`). A dataclass would have made
  every `device` in the engine a union to unwrap; a str subclass costs one isinstance where it
  matters. `shares` are the bytes planned per device: the pool admits and accounts by them.
- `plan(model_on_meta, rooms)` asks accelerate's `infer_auto_device_map` (it reads parameter
  sizes only: no GPU is touched, so it plans on a CPU machine too) and keeps the plan only when
  every module landed on one of the GPUs offered and each device's share fits its room.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterable

log = logging.getLogger(__name__)


class DeviceMap(str):
    """A split placement; its str value is the first device (where the inputs go)."""

    modules: dict[str, str]  # module name ('' = the whole model) -> 'cuda:N', in the model's order
    shares: dict[str, int]  # device -> bytes of weights planned there (measured after the load)

    def __new__(cls, modules: dict[str, str], shares: dict[str, int] | None = None):
        if not modules:
            raise ValueError("a device map needs at least one module")
        devices = list(dict.fromkeys(modules.values()))
        self = super().__new__(cls, devices[0])
        self.modules = dict(modules)
        self.shares = {d: int((shares or {}).get(d, 0)) for d in devices}
        return self

    def __reduce__(self):  # str's own would call DeviceMap('cuda:0')
        return DeviceMap, (self.modules, self.shares)

    def __repr__(self) -> str:
        return f"DeviceMap({self.label}: {', '.join(f'{d}={n}' for d, n in self.shares.items())})"

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.shares)

    @property
    def label(self) -> str:
        """'cuda:0+cuda:1': how the System tab shows where the model is."""
        return "+".join(self.devices)

    def with_shares(self, shares: dict[str, int]) -> "DeviceMap":
        """The same plan with measured shares (a device the plan named but nothing landed on keeps 0)."""
        return DeviceMap(self.modules, {d: shares.get(d, 0) for d in self.devices})


def _gpu_index(device: str) -> int:
    kind, _, index = device.partition(":")
    if kind != "cuda" or not index.isdigit():
        raise ValueError(f"a split goes over CUDA devices (cuda:N), not {device!r}")
    return int(index)


@contextlib.contextmanager
def _quiet_accelerate():
    # On a machine with fewer GPUs than the rooms name (a planner's test, fake GPUs) accelerate
    # warns "Device N is not available" once per device; the plan is sizes only, so it holds.
    logger = logging.getLogger("accelerate.utils.modeling")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def device_of(modules: dict[str, str], name: str) -> str | None:
    """The device a plan gives module or parameter `name`: its own entry's, else its nearest parent's."""
    found = [k for k in modules if k == "" or name == k or name.startswith(k + ".")]
    return modules[max(found, key=len)] if found else None


def plan(model: Any, rooms: dict[str, int], no_split: Iterable[str] = (), dtype: Any = None,
         follow: dict[str, str] | None = None) -> DeviceMap | None:
    """Plan `model` (a torch module, best on the meta device) over the GPUs in `rooms` (bytes each
    may take, in the order to fill them). None when it does not fit.

    `no_split`: module classes to keep whole on one device (transformers models list theirs in
    `_no_split_modules`: blocks with residual connections). `follow`: {entry: module} for a bare
    parameter that the parent's own forward combines with a module's output (a position embedding
    added to a patch embedding's): hooks move module inputs only, so it goes where that module goes.
    accelerate keeps room for the largest block on the first GPU, for CPU offload, which is never
    asked for here: when the plan as asked does not fit, it is asked again with the first room
    raised by that block, and kept only where every share still fits its real room."""
    from accelerate.utils import compute_module_sizes

    no_split = list(no_split)
    sizes = compute_module_sizes(model, dtype=dtype)
    blocks = [sizes[n] for n, m in model.named_modules() if type(m).__name__ in no_split]
    first = next(iter(rooms), None)
    for extra in (0, max(blocks, default=0)):
        asked = {d: room + (extra if d == first else 0) for d, room in rooms.items()}
        found = _plan(model, asked, rooms, sizes, no_split, dtype, follow or {})
        if found is not None:
            return found
    return None


def _plan(model, asked, rooms, sizes, no_split, dtype, follow) -> DeviceMap | None:
    from accelerate.utils import infer_auto_device_map

    by_index = {_gpu_index(d): d for d in asked}
    with _quiet_accelerate():
        found = infer_auto_device_map(model, max_memory={i: max(0, int(asked[d])) for i, d in by_index.items()},
                                      no_split_module_classes=no_split, dtype=dtype)
    if not found or any(not isinstance(v, int) or v not in by_index for v in found.values()):
        return None  # what did not fit went to 'disk' (or 'cpu'): no split over these rooms
    modules = {name: by_index[index] for name, index in found.items()}
    for name, leader in follow.items():
        if name in modules:
            modules[name] = device_of(modules, leader) or modules[name]
    shares: dict[str, int] = {}
    for name, device in modules.items():
        shares[device] = shares.get(device, 0) + int(sizes[name])
    if any(shares[d] > rooms[d] for d in shares):
        return None
    return DeviceMap(modules, shares)


def tensor_shares(model: Any) -> dict[str, int]:
    """Bytes of a torch module's parameters and buffers per device (shared storages counted once)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return {}
    seen, shares = set(), {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.device)
        if key not in seen:
            seen.add(key)
            device = str(tensor.device) if tensor.device.type != "cuda" else f"cuda:{tensor.device.index or 0}"
            shares[device] = shares.get(device, 0) + storage.nbytes()
    return shares
