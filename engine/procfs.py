"""Linux /proc files read through descriptors kept open: the engine reads its memory several
times per call (RSS, the RSS high-water mark, the machine's available memory), and opening a
file costs more than reading it (~25 us each on this 2-core VM). A descriptor is reopened in a
forked child, whose /proc/self is another process. Everywhere else `read` returns None and the
callers use psutil."""
from __future__ import annotations

import os
import threading

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcFile:
    def __init__(self, path: str, write: bool = False):
        self.path, self.write_mode = path, write
        self._fd: int | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def _descriptor(self) -> int | None:
        if self._pid != os.getpid():
            try:
                self._fd = os.open(self.path, os.O_WRONLY if self.write_mode else os.O_RDONLY)
            except OSError:
                self._fd = None
            self._pid = os.getpid()   # also when it failed: do not retry on every call
        return self._fd

    def read(self, size: int = 4096) -> bytes | None:
        with self._lock:
            fd = self._descriptor()
            if fd is None:
                return None
            try:
                return os.pread(fd, size, 0)   # /proc regenerates the text for each read at 0
            except OSError:
                return None

    def write(self, data: bytes) -> bool:
        with self._lock:
            fd = self._descriptor()
            if fd is None:
                return False
            try:
                os.write(fd, data)
                return True
            except OSError:
                return False


_STATM = ProcFile("/proc/self/statm")
_STATUS = ProcFile("/proc/self/status")
_CLEAR_REFS = ProcFile("/proc/self/clear_refs", write=True)
_MEMINFO = ProcFile("/proc/meminfo")


def rss() -> int | None:
    """Resident bytes of this process (statm's second field, in pages)."""
    text = _STATM.read(256)
    return int(text.split()[1]) * _PAGE if text else None


def _kib_field(text: bytes, name: bytes) -> int | None:
    at = text.find(name)
    if at < 0:
        return None
    return int(text[at + len(name):text.index(b"kB", at)].strip()) * 1024


def rss_high_water() -> int | None:
    """VmHWM: the most this process has had resident since start or since reset_high_water()."""
    text = _STATUS.read(4096)
    return _kib_field(text, b"VmHWM:") if text else None


def reset_high_water() -> bool:
    return _CLEAR_REFS.write(b"5")


def available_and_total() -> tuple[int, int] | None:
    """(MemAvailable, MemTotal) of the machine, as psutil.virtual_memory reports them on Linux."""
    text = _MEMINFO.read(8192)
    if not text:
        return None
    available, total = _kib_field(text, b"MemAvailable:"), _kib_field(text, b"MemTotal:")
    return (available, total) if available is not None and total is not None else None
