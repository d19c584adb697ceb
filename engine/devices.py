"""Devices the engine may place models on, their memory as the whole machine sees it, and budgets.

Free memory is read for the whole device, every process counted: `torch.cuda.mem_get_info` (the
driver's view) on CUDA, `psutil.virtual_memory().available` for host RAM. torch's own
`memory_allocated` would miss other processes, ONNX Runtime and the CUDA context.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Callable

import psutil

from . import procfs

GiB = 1024**3
MiB = 1024**2

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": MiB, "g": 1000**3, "gb": 1000**3, "gib": GiB, "t": 1000**4, "tb": 1000**4,
          "tib": 1024**4}


def usable_cores() -> int:
    """Cores this process may run on: a container or taskset can allow fewer than the machine has,
    and thread pools sized from os.cpu_count() then oversubscribe."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def lower_thread_priority(steps: int) -> int | None:
    """Raise the calling thread's nice value by `steps` (at most to 19); returns the new value, None
    where threads have no priority of their own (not Linux) or the call fails. Threads and child
    processes (ffmpeg) this thread starts later inherit it; an unprivileged process cannot take it
    back, so call it only on threads that stay background work."""
    if steps <= 0 or not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return None
    import threading

    try:
        tid = threading.get_native_id()   # on Linux a thread id is a PRIO_PROCESS target of its own
        nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        return nice
    except OSError:
        return None


def parse_size(text: str) -> int:
    """'6GiB' -> 6442450944; plain numbers are bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a memory size: {text!r} (examples: 512MiB, 6GiB, 1.5GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def rounded_bytes(n: float) -> str:
    """A predicted size to the whole MiB (KiB below one): decimals would claim a precision no
    estimate has. '1,234 MiB'."""
    return f"{n / MiB:,.0f} MiB" if abs(n) >= MiB else f"{n / 1024:,.0f} KiB"


def parse_budget(text: str | None) -> dict[str, int]:
    """'cpu=6GiB,cuda:0=10GiB' -> {'cpu': ..., 'cuda:0': ...}."""
    budgets: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, size = part.partition("=")
        if not sep:
            raise ValueError(f"budget entry {part!r} is not DEVICE=SIZE (example: cpu=6GiB,cuda:0=10GiB)")
        budgets[normalize_device(name)] = parse_size(size)
    return budgets


def normalize_device(name: str) -> str:
    name = name.strip().lower()
    if name == "cuda":
        return "cuda:0"
    if name == "cpu" or re.fullmatch(r"cuda:\d+", name):
        return name
    raise ValueError(f"unknown device {name!r}: use cpu or cuda:N")


def cuda_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class Memory:
    free: int
    total: int

    @property
    def used(self) -> int:
        return self.total - self.free


def read_memory(device: str) -> Memory:
    """Free and total bytes on a device, counting every process."""
    if device == "cpu":
        found = procfs.available_and_total()   # what psutil reads on Linux, without its cost
        if found is None:
            vm = psutil.virtual_memory()
            found = int(vm.available), int(vm.total)
        return Memory(free=found[0], total=found[1])
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return Memory(free=int(free), total=int(total))


_MACHINE = read_memory   # the real reader, told apart from tests' stand-ins


def process_memory(device: str) -> int | None:
    """What this process itself holds on a device (its RSS on the CPU), or None where that cannot
    be read apart from other processes (a GPU: its arenas and caching allocators are not all
    visible; free memory, every process counted, still bounds it there)."""
    if device != "cpu":
        return None
    found = procfs.rss()
    return found if found is not None else int(psutil.Process().memory_info().rss)


class Devices:
    """The device list with a budget each. The budget caps what the engine itself holds there.

    `names` and `read_memory` stand in for the machine's devices (tests fake several GPUs with
    them); by default they are the CPU and every CUDA device torch sees, read as above.
    """

    def __init__(self, budgets: dict[str, int] | None = None, default: str = "auto", *,
                 names: list[str] | None = None, read_memory: Callable[[str], Memory] = read_memory,
                 read_process: Callable[[str], int | None] | None = None):
        self._read_memory = read_memory
        # Stand-in devices (tests) have no process of their own unless they give one.
        self._read_process = read_process or (process_memory if read_memory is _MACHINE
                                              else (lambda device: None))
        self.names = list(names) if names is not None else ["cpu"] + [f"cuda:{i}" for i in range(cuda_count())]
        budgets = dict(budgets or {})
        unknown = set(budgets) - set(self.names)
        if unknown:
            raise ValueError(f"budget names devices that are not here: {sorted(unknown)}; "
                             f"found {self.names}")
        self.budgets = {name: budgets.get(name, read_memory(name).total) for name in self.names}
        self.gpus = [name for name in self.names if name != "cpu"]
        # `--device cuda:1` (or cpu) pins every 'auto' model there; 'auto' spreads them over the GPUs.
        self.pinned = default != "auto"
        if default == "auto":
            default = self.gpus[0] if self.gpus else "cpu"
        default = normalize_device(default)
        if default not in self.names:
            raise ValueError(f"--device {default} is not available here; found {self.names}")
        self.default = default

    def memory(self, device: str) -> Memory:
        return self._read_memory(device)

    def budget(self, device: str) -> int:
        return self.budgets[device]

    def process(self, device: str) -> int | None:
        """This process's own memory on `device` (process_memory), None where unknown."""
        return self._read_process(device)

    def room(self, device: str) -> int:
        """What a model could take there without evicting: free memory within the budget."""
        return min(self.memory(device).free, self.budget(device))

    def place(self, preference: str, room: Callable[[str], int] | None = None) -> str:
        """Device for a model. 'cpu' or 'cuda:N' pin it; 'auto' takes the pinned default device, or
        with several GPUs the one with the most room (`room(device)`: the pool passes free memory,
        every process counted, within the budget less what the engine holds; default `self.room`).
        A tie goes to the lower index."""
        if preference == "auto":
            if self.pinned or len(self.gpus) < 2:
                return self.default
            return max(self.gpus, key=room or self.room)
        device = normalize_device(preference)
        return device if device in self.names else "cpu"
