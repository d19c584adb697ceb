"""Peak memory of a stretch of work: process RSS and device memory.

RSS peaks come from the kernel's high-water mark (VmHWM), reset through /proc/self/clear_refs
when a probe starts with no other probe running: exact, whatever the sampling would miss. When
probes overlap, the reset would corrupt the other's peak, so a sampler thread fills in instead.
Device peaks on CUDA combine torch's allocator peak with the driver's used memory, sampled.

On the CPU a peak is RSS growth, which is blind to memory the process already holds: a run that
reuses heap an earlier load or run freed (glibc keeps it until trimmed) grows RSS by less than it
needs, and the next run, after something else took that heap, needs the difference again. So a
probe that starts alone on the CPU first gives such heap back (`settle`: malloc_trim once RSS
outside malloc's use grew by TRIM_FREE_BYTES since the last trim): the peak is then what the run
takes from the rest of the machine, the same after a load, a large run or a small one. ONNX
Runtime's own arena hides memory the same way (engine/runtimes/onnx_runtime.py weighs its modes).
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass

import psutil

from . import procfs
from .devices import read_memory

_PROC = psutil.Process()
# Coarse on purpose: exact peaks come from VmHWM and torch.cuda.max_memory_allocated; the
# sampler only fills in for overlapping probes, and a finer one costs compute time (GIL).
_SAMPLE_S = 0.02
# Resident free heap worth a malloc_trim before a probe (~0.1-4 ms, it walks the free chunks):
# below it the error left in a peak is under what RESIDUAL_FLOOR (engine/predict.py) ignores.
TRIM_FREE_BYTES = 8 << 20


def rss() -> int:
    value = procfs.rss()
    return value if value is not None else int(_PROC.memory_info().rss)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _mallinfo2():
    try:
        libc = ctypes.CDLL(None)
        function = libc.mallinfo2   # glibc 2.33 and later
    except (OSError, AttributeError, TypeError):   # musl, macOS; Windows has no CDLL(None)
        return None
    function.restype = _Mallinfo2
    return function


_MALLINFO2 = _mallinfo2()
_LIBC = ctypes.CDLL(None) if _MALLINFO2 is not None else None


def heap_free() -> int | None:
    """Bytes free in malloc's arenas (kept by the process, not in use; resident or not), or None
    off glibc."""
    return None if _MALLINFO2 is None else int(_MALLINFO2().fordblks)


_slack_after_trim: int | None = None   # RSS not in malloc's use, right after the last trim


def settle() -> bool:
    """Give freed heap back to the system (malloc_trim) once RSS not in malloc's use has grown by
    TRIM_FREE_BYTES since the last trim (free heap that is resident: mallinfo2 cannot tell a
    trimmed free chunk from a touched one, RSS can). True when it trimmed."""
    global _slack_after_trim
    in_use = heap_in_use()
    if in_use is None:
        return False
    slack = rss() - in_use
    if _slack_after_trim is not None:
        # The rest of RSS (file mappings, Python's own arenas) shrinks too: the baseline follows
        # it down, or heap freed meanwhile would hide under what those gave back.
        _slack_after_trim = min(_slack_after_trim, slack)
        if slack - _slack_after_trim < TRIM_FREE_BYTES:
            return False
    trim_heap()
    return True


def trim_heap() -> None:
    """malloc_trim now, whatever is free (settle decides when it is worth it)."""
    global _slack_after_trim
    if _LIBC is None:
        return
    _LIBC.malloc_trim(0)
    _slack_after_trim = rss() - heap_in_use()


# glibc serves blocks of this size and more from mmap, so that freeing one gives it back to the
# system at once. Its default threshold moves (up to 32 MiB) after each such block is freed, and
# blocks below it come from the heap, which loads and unloads of models left fragmented: with
# every model unloaded and the heap trimmed, RSS rose 8-14 MiB per round of 29 models, and stayed
# flat with the threshold fixed at 4 MiB (speed cost: bench mmap-threshold).
MMAP_THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3   # mallopt's parameter number (malloc.h)


def fix_mmap_threshold(nbytes: int | None = None) -> int | None:
    """Fix glibc's mmap threshold at `nbytes` (default: WIMMEL_MMAP_THRESHOLD, a size such as
    "4MiB", else MMAP_THRESHOLD); 0 leaves glibc's moving threshold. A setting of the process:
    the last call wins. Returns the threshold set, None where none was (0, or off glibc)."""
    if nbytes is None:
        from .devices import parse_size

        nbytes = parse_size(os.environ.get("WIMMEL_MMAP_THRESHOLD") or str(MMAP_THRESHOLD))
    if _LIBC is None or nbytes <= 0:
        return None
    return nbytes if _LIBC.mallopt(_M_MMAP_THRESHOLD, int(nbytes)) == 1 else None


def heap_in_use() -> int | None:
    """Bytes malloc has handed out and not had back (all arenas plus mmapped blocks), or None
    off glibc. Unlike RSS it grows when a load reuses heap that earlier work freed but the
    process kept: there RSS does not move, and a footprint measured by RSS alone reads 0."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


def _read_hwm() -> int | None:
    return procfs.rss_high_water()


def _reset_hwm() -> bool:
    return procfs.reset_high_water()


@dataclass
class Peaks:
    rss_bytes: int
    device_bytes: int | None  # peak used memory on the probe's device (RSS for the CPU)
    device_delta_bytes: int  # peak above what was used when the probe started
    overlapped: bool = False  # another probe ran meanwhile: its allocations may be in these peaks


class Probe:
    def __init__(self, meter: "Meter", device: str):
        self.meter, self.device = meter, device
        self.start_rss = rss()
        self.peak_rss = self.start_rss
        self.exact_hwm = False
        self.overlapped = False
        self.start_device = self._device_used()
        self.peak_device = self.start_device
        self._torch_start = None
        if device != "cpu":
            import torch

            self._torch_start = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)

    def _device_used(self) -> int:
        return self.peak_rss if self.device == "cpu" else read_memory(self.device).used

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, rss())
        if self.device == "cpu":
            self.peak_device = self.peak_rss
        else:
            self.peak_device = max(self.peak_device, self._device_used())

    def stop(self) -> Peaks:
        self.sample()
        self.meter._remove(self)
        if self.exact_hwm:
            hwm = _read_hwm()
            if hwm:
                self.peak_rss = max(self.peak_rss, hwm)
        if self.device == "cpu":
            self.peak_device = self.peak_rss
        else:
            import torch

            torch_peak = torch.cuda.max_memory_allocated(self.device) - self._torch_start
            self.peak_device = max(self.peak_device, self.start_device + torch_peak)
        return Peaks(self.peak_rss, self.peak_device, max(0, self.peak_device - self.start_device), self.overlapped)


class Meter:
    """Hands out probes; one sampler thread runs while any probe is open."""

    def __init__(self):
        self._lock = threading.Lock()
        self._probes: list[Probe] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def probe(self, device: str = "cpu") -> Probe:
        with self._lock:
            alone = not self._probes
            if alone and device == "cpu":
                settle()   # see the module docstring: the peak must not hide in freed heap
            # Reset the HWM before the probe reads its start, so the peak cannot predate it.
            reset = alone and _reset_hwm()
            for other in self._probes:
                other.exact_hwm = False  # the overlap makes any later HWM read ambiguous
                other.overlapped = True
            probe = Probe(self, device)
            probe.exact_hwm, probe.overlapped = reset, not alone
            self._probes.append(probe)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="wimmel-meter", daemon=True)
                self._thread.start()
            self._wake.set()
        return probe

    def _remove(self, probe: Probe) -> None:
        with self._lock:
            if probe in self._probes:
                self._probes.remove(probe)

    def _run(self) -> None:
        while True:
            with self._lock:
                probes = list(self._probes)
                if not probes:
                    self._wake.clear()
            if not probes:
                self._wake.wait()
                continue
            for probe in probes:
                probe.sample()
            time.sleep(_SAMPLE_S)


METER = Meter()
