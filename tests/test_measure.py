"""The CPU probe's peak is what a run takes from the machine even where the heap already held
freed memory (engine/measure.py: settle before a probe that starts alone)."""
import pytest

from engine.measure import METER, TRIM_FREE_BYTES, heap_free, rss, settle

MiB = 1 << 20
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


def test_an_engine_fixes_the_mmap_threshold_so_that_a_freed_block_goes_back_at_once(tmp_path, monkeypatch):
    """Blocks of 4 MiB and more are mapped on their own, so freeing one unmaps it: it cannot stay
    behind in a fragmented heap. Read from the block's own header (glibc marks a chunk it mapped
    alone with IS_MMAPPED, bit 2 of the size word just before the pointer), so that no other
    thread's allocations can blur it, as they do malloc's totals."""
    import ctypes

    from engine import Engine
    from engine.measure import fix_mmap_threshold

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def mapped_alone(size: int) -> bool:
        block = libc.malloc(size)
        assert block
        try:
            return bool(ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 2)
        finally:
            libc.free(block)

    assert fix_mmap_threshold(64 * MiB) == 64 * MiB   # as glibc's moving one is after a 64 MiB free
    assert not mapped_alone(8 * MiB)                   # from the heap
    monkeypatch.setenv("WIMMEL_MMAP_THRESHOLD", "4MiB")
    Engine(tmp_path / "data", specs=[])
    assert mapped_alone(8 * MiB) and not mapped_alone(2 * MiB)
