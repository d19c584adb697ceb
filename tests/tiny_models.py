"""Small real torch models saved as safetensors, with specs that load them the way real ones load."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from engine import ModelSpec

MiB = 1024**2


class Block(torch.nn.Module):
    """A stack of square linear layers holding about `mib` MiB of float32 weights."""

    def __init__(self, mib: int, width: int = 512):
        super().__init__()
        layers = max(1, round(mib * MiB / (width * width * 4)))
        self.layers = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
        self.active = 0  # how many callers are inside forward right now
        self._lock = threading.Lock()
        self.max_active = 0

    def forward(self, x):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self.layers(x)
        finally:
            with self._lock:
                self.active -= 1


def save_block(folder: Path, name: str, mib: int) -> Path:
    path = Path(folder) / f"{name}.safetensors"
    if not path.exists():
        save_file(Block(mib).state_dict(), str(path))
    return path


def meta_loader(path: Path, build: Callable[[], torch.nn.Module], loads: list | None = None):
    """A spec's loader, the engine's way: build() on the meta device, then assign the file's
    (memory-mapped) tensors, so there is no second copy of the weights. Each load appends the
    file's stem to `loads` when given. The benchmarks load their models this way too."""
    def load(device: str) -> torch.nn.Module:
        with torch.device("meta"):
            model = build()
        model.load_state_dict(load_file(str(path), device=device), assign=True)
        if loads is not None:
            loads.append(path.stem)
        return model.eval()

    return load


def block_loader(path: Path, mib: int, loads: list | None = None):
    return meta_loader(path, lambda: Block(mib), loads)


def block_spec(folder: Path, name: str, mib: int, role: str = "heavy", *, loads: list | None = None,
               max_instances: int = 1, estimate_mib: int | None = None) -> ModelSpec:
    path = save_block(folder, name, mib)
    return ModelSpec(name=name, role=role, runtime="torch", loader=block_loader(path, mib, loads),
                     source=str(path), estimate_bytes=(estimate_mib or mib) * MiB,
                     device="cpu", max_instances=max_instances)


def forward(model: Block) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.ones(4, 512))


@contextlib.contextmanager
def leased_elsewhere(engine, name: str):
    """`name` leased by a thread of its own for the length of the block (a caller holding a lease
    is treated differently by the pool, so the test's own thread must not hold it)."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with engine.pool.lease(name):
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10), f"{name} was not leased"
    try:
        yield
    finally:
        release.set()
        thread.join(10)
