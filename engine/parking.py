"""Parking: an evicted torch model on a CUDA GPU kept in pinned host RAM and brought back by a copy.

Loading a model means reading its file, building the module and copying the weights to the GPU;
bringing back a parked one is only the host-to-device copy (tens of GB/s from pinned memory). The
pool (engine/residency.py) parks instead of dropping where `Parking.parkable` allows it and the
CPU's budget has the room, counts parked bytes against the CPU (headroom on "cpu"), drops parked
models oldest first when the CPU needs the room, and restores a parked model instead of calling
its spec's loader when that model is loaded again on a CUDA device.

Parked: a plain `torch.nn.Module` whose every parameter and buffer is on the instance's one CUDA
device, whose spec has no unloader (an unloader tears down what the pool cannot see), holding no
gradient and no tensor outside its parameters and buffers (such a tensor would stay on the GPU
behind the pool's back); a model may opt out with `parkable = False`. Anything else (ONNX
Runtime sessions, pipelines with memory tiers, CTranslate2, a model split over GPUs) is evicted
as before.

On a CPU-only machine parking does not apply: a CPU model's weights already are in host RAM, so
there is nothing to copy back, and evicting a CPU model exists to free host RAM, which a parked
copy would keep.

Host memory: one pageable buffer per model, registered with the CUDA driver (cudaHostRegister),
the tensors laid out in it as views. Not `Tensor.pin_memory()`: torch's caching host allocator
rounds every block up to a power of two (a 600 MiB model would hold 1 GiB of the CPU's budget)
and keeps freed blocks cached, out of the pool's sight. Where registering fails the copy stays
pageable (slower, still no reload).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

ALIGN = 512  # each tensor's offset in the host buffer: aligned for any dtype and for DMA
NOT_ON_CPU = ("does not apply on a CPU-only machine: a CPU model's weights already are in host RAM, so "
              "there is nothing to copy back, and evicting it exists to free host RAM, which a parked "
              "copy would keep")


@dataclass(eq=False)
class Parked:
    """One evicted model held in host RAM."""
    name: str          # the spec's name
    model: Any         # the module, its tensors now views into `buffer`
    buffer: Any        # the host buffer (a uint8 tensor)
    bytes: int         # what it holds on the CPU
    device: str        # where it was (and is restored to by default)
    pinned: bool       # registered with the driver, so the copies run at full speed
    parked_at: float = field(default_factory=time.monotonic)
    park_s: float = 0.0
    restoring: bool = False  # a load is copying it back: neither dropped nor claimed again
    restored_s: float | None = None  # how long the copy back took, once done


class Parking:
    """The moves, on CUDA (the default); tests swap the few device primitives for a simulated GPU
    (`_applies`, `_on`, `_pin`, `_unpin`, `_to_device`, `_sync`)."""

    # ---- device primitives (CUDA)

    def _applies(self, device: str) -> bool:
        if not str(device).startswith("cuda"):
            return False
        import torch

        return torch.cuda.is_available()

    def _on(self, tensor, device: str) -> bool:
        import torch

        return tensor.device == torch.device(device)

    def _pin(self, buffer) -> bool:
        import torch

        # Portable (1): pinned for every GPU's context, so a restore onto another GPU runs at full speed.
        try:
            code = int(torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel(), 1))
        except (AssertionError, RuntimeError, AttributeError) as exc:  # no cudart binding in this build
            log.warning("cannot pin host memory (%s): parking in pageable memory", exc)
            return False
        if code != 0:
            log.warning("cudaHostRegister of %d bytes failed (error %d): parking in pageable memory",
                        buffer.numel(), code)
        return code == 0

    def _unpin(self, buffer) -> None:
        import torch

        torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())

    def _to_device(self, tensor, device: str):
        return tensor.to(device, non_blocking=True)

    def _sync(self, device: str) -> None:
        import torch

        torch.cuda.synchronize(device)

    # ---- the moves

    def parkable(self, model: Any, device: Any, spec: Any = None) -> str | None:
        """None where `model` (loaded by `spec`, a ModelSpec) can be parked from `device`, else why not."""
        if hasattr(device, "shares"):  # a DeviceMap: restoring would need the same split
            return "split over several devices"
        if not self._applies(device):
            return NOT_ON_CPU if str(device) == "cpu" else f"{device} is not a CUDA device"
        if spec is not None and spec.runtime != "torch":
            return f"runs on {spec.runtime}"
        if spec is not None and spec.unloader is not None:
            return "its spec has an unloader"
        import torch

        if not isinstance(model, torch.nn.Module):
            return f"not a torch module ({type(model).__name__})"
        if getattr(model, "parkable", True) is False:
            return "the model opts out (parkable = False)"
        tensors = _tensors(model)
        if not tensors:
            return "no weights"
        for t in tensors:
            if t.layout != torch.strided or t.is_quantized or not self._on(t, device):
                return f"a tensor is not a plain one on {device}"
        if any(p.grad is not None for p in model.parameters()):
            return "it holds gradients"
        for module in model.modules():
            for key, value in vars(module).items():
                if isinstance(value, torch.Tensor):
                    return f"{type(module).__name__} holds a tensor outside its parameters and buffers"
                # A runner of its own (an ONNX Runtime session, a compiled graph: see
                # runtimes/compiled.Accelerated) holds device memory that no copy would move.
                if hasattr(value, "get_providers") or (key in ("_runner", "session") and value is not None):
                    return f"{type(module).__name__} runs through {type(value).__name__}, not its own tensors"
        return None

    def park(self, name: str, model: Any, device: str) -> Parked:
        """Copy the model's tensors into one host buffer and point the module at them there (its
        device memory is freed once nothing else refers to it)."""
        import torch

        started = time.monotonic()
        tensors = _tensors(model)
        offsets, total = {}, 0
        for t in tensors:
            offsets[id(t)] = total
            total += _aligned(t)
        buffer = torch.empty(total, dtype=torch.uint8)
        pinned = self._pin(buffer)
        views = {}
        try:
            for t in tensors:
                start = offsets[id(t)]
                view = buffer[start:start + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
                view.copy_(t.detach(), non_blocking=pinned)
                views[id(t)] = view
            self._sync(device)
        except BaseException:
            if pinned:
                self._unpin(buffer)
            raise
        with torch.no_grad():
            model._apply(lambda t: views.get(id(t), t))  # what Module.to() does, with our own copies
        return Parked(name, model, buffer, total, str(device), pinned, park_s=time.monotonic() - started)

    def restore(self, parked: Parked, device: str | None = None) -> Any:
        """The parked model back on `device` (by default where it was), by one copy per tensor."""
        import torch

        device = str(device or parked.device)
        with torch.no_grad():
            model = parked.model._apply(lambda t: self._to_device(t, device))
        self._sync(device)
        return model

    def release(self, parked: Parked) -> None:
        """Give the host buffer back (after a restore, or when the parked model is dropped)."""
        if parked.buffer is not None and parked.pinned:
            self._unpin(parked.buffer)
        parked.buffer = parked.model = None


def _aligned(tensor) -> int:
    return -(-tensor.numel() * tensor.element_size() // ALIGN) * ALIGN


def host_bytes(model) -> int:
    """What parking `model` would hold in host RAM: its tensors laid out one after another."""
    return sum(_aligned(t) for t in _tensors(model))


def _tensors(model) -> list:
    """The module's parameters and buffers, each once (tied weights are one Parameter)."""
    seen, out = set(), []
    for t in list(model.parameters()) + [b for b in model.buffers() if b is not None]:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


class ParkingLot:
    """The parked models of one pool, oldest first. Call with the pool's lock held."""

    def __init__(self, parking: Parking | None):
        self.parking = parking
        self.parked: list[Parked] = []

    def bytes(self) -> int:
        return sum(p.bytes for p in self.parked)

    def droppable(self) -> list[Parked]:
        return [p for p in self.parked if not p.restoring]

    def claim(self, name: str, device: Any) -> Parked | None:
        """The parked copy of `name` to restore onto `device` (a CUDA one), marked as restoring."""
        if self.parking is None or hasattr(device, "shares") or not self.parking._applies(str(device)):
            return None
        found = next((p for p in self.parked if p.name == name and not p.restoring), None)
        if found is not None:
            found.restoring = True
        return found

    def bring_back(self, parked: Parked | None, device: str, loader: Callable[[str], Any]) -> Any:
        """The parked model restored onto `device`; else (nothing parked, or the restore failed
        other than for memory, which OOM recovery handles) `loader(device)`."""
        if parked is not None and parked.model is not None:
            started = time.monotonic()
            try:
                model = self.parking.restore(parked, device)
            except Exception as exc:
                from .oom import is_oom

                if is_oom(exc):
                    raise
                log.warning("restoring %s failed (%s): loading it instead", parked.name, exc)
                parked.model = None
            else:
                parked.restored_s = time.monotonic() - started
                return model
        return loader(device)

    def try_park(self, spec: Any, model: Any, device: Any, room: Callable[[], int],
                 drop: Callable[[Parked], None]) -> Parked | None:
        """Park the model when it qualifies and the CPU has the room (`room()`: the CPU's headroom),
        dropping older parked models for it; never a live CPU model. None: it was not parked."""
        if self.parking is None:
            return None
        name = spec.name
        why = self.parking.parkable(model, device, spec)
        if why is not None:
            log.debug("%s is not parked: %s", name, why)
            return None
        need = host_bytes(model)
        older = self.droppable()
        if need > room() + sum(p.bytes for p in older):
            log.info("%s is not parked: the CPU's budget has no room for its %d bytes", name, need)
            return None
        for p in older:
            if room() >= need:
                break
            drop(p)
        try:
            parked = self.parking.park(name, model, device)
        except Exception as exc:  # noqa: BLE001 - a park that fails is an eviction, as before parking
            log.warning("parking %s failed (%s): evicted instead", name, exc)
            return None
        self.parked.append(parked)
        return parked

    def remove(self, parked: Parked) -> None:
        if parked in self.parked:
            self.parked.remove(parked)
        if self.parking is not None:
            self.parking.release(parked)

    def rows(self) -> list[dict]:
        """The parked models for Residency.snapshot."""
        return [{"name": p.name, "device": "cpu", "bytes": p.bytes, "state": "parked", "parked_from": p.device,
                 "backend": "pinned host RAM" if p.pinned else "pageable host RAM"} for p in self.parked]
