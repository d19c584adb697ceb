"""The CPU probe's peak is what a run takes from the machine even where the heap already held
freed memory (engine/measure.py: settle before a probe that starts alone)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.measure import METER, TRIM_FREE_BYTES, heap_free, rss, settle

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
CHUNK = 64 * 1024   # below glibc's mmap threshold: these come from the heap and stay there when freed

pytestmark = pytest.mark.skipif(heap_free() is None, reason="malloc statistics need glibc")


def _freed_heap(total: int) -> bytearray:
    """Allocate `total` bytes of heap in chunks and free them all but a guard allocated last, so
    that glibc keeps the freed memory (the top of the heap stays in use). Returns the guard."""
    chunks = [bytearray(CHUNK) for _ in range(total // CHUNK)]
    guard = bytearray(CHUNK)
    del chunks
    return guard


def test_settle_gives_freed_heap_back_and_only_when_there_is_enough_of_it():
    guard = _freed_heap(96 * MiB)
    assert heap_free() >= 64 * MiB
    held = rss()
    assert settle() is True
    assert held - rss() >= 48 * MiB, "the freed heap went back to the system"
    assert heap_free() >= 64 * MiB   # still free in malloc's arenas, but no longer resident
    assert settle() is False          # nothing worth a trim left
    reused = [bytearray(CHUNK) for _ in range(2 * TRIM_FREE_BYTES // CHUNK)]
    del reused                        # touched again, freed again: resident once more
    assert settle() is True
    del guard


def test_a_run_that_reuses_freed_heap_is_measured_at_what_it_allocates():
    guard = _freed_heap(96 * MiB)
    probe = METER.probe("cpu")
    work = [bytearray(CHUNK) for _ in range(48 * MiB // CHUNK)]   # would fit in the freed heap
    peaks = probe.stop()
    # Without the trim the 48 MiB reuse the 96 freed ones and RSS hardly moves.
    assert peaks.device_delta_bytes >= 40 * MiB
    assert not peaks.overlapped
    del work, guard


_MAPPED_ALONE = """
import ctypes, json, tempfile
from engine import Engine
from engine.measure import fix_mmap_threshold

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
word = ctypes.sizeof(ctypes.c_size_t)

def mapped_alone(size):   # kept allocated: a freed block would be a free chunk the next one reuses
    return bool(ctypes.c_size_t.from_address(libc.malloc(size) - word).value & 2)

set_high = fix_mmap_threshold(64 << 20)   # as glibc's moving threshold is after a 64 MiB free
before = mapped_alone(8 << 20)
Engine(tempfile.mkdtemp(), specs=[])
print(json.dumps([set_high, before, mapped_alone(8 << 20), mapped_alone(2 << 20)]))
"""


def test_an_engine_fixes_the_mmap_threshold_so_that_a_freed_block_goes_back_at_once():
    """Blocks of 4 MiB and more are mapped on their own, so freeing one unmaps it: it cannot stay
    behind in a fragmented heap. Read from each block's own header (glibc marks a chunk it mapped
    alone with IS_MMAPPED, bit 2 of the size word before the pointer), in a fresh process: in
    this one, free chunks that earlier tests left in the heap serve a request before mmap does."""
    env = {**os.environ, "WIMMEL_MMAP_THRESHOLD": "4MiB"}
    done = subprocess.run([sys.executable, "-c", _MAPPED_ALONE], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    set_high, before, after_8, after_2 = json.loads(done.stdout.strip().splitlines()[-1])
    assert set_high == 64 << 20 and not before   # 8 MiB from the heap under a 64 MiB threshold
    assert after_8 and not after_2                # the engine's 4 MiB: mapped alone, 2 MiB not
