"""The budget caps what the process holds, not only the engine's ledger: memory the process keeps
beyond it (allocator caches, arenas, imports) counts against the budget (Residency.overhang), and
a load reserves its learned transient (engine/load_peaks.py) until it settles.

The process's own memory is read through Devices.process; here a stand-in adds a chosen amount
to what the loaded models hold, so that the rule is tested exactly (the bench oom-stress scenario
measures it on real models)."""
import dataclasses
import gc
import logging
import mmap
import time

import numpy as np
import pytest
import torch

from engine import Engine, NotEnoughMemory
from engine import pool as engine_pool
from engine.measure import Meter
from engine.load_peaks import LoadPeaks
from tiny_models import MiB, block_spec, forward, leased_elsewhere

BASE = 1 << 30


def _engine(tmp_path, specs):
    engine = Engine(tmp_path / "data", budget=f"cpu={300 * MiB}", reserve=0, specs=specs, wait_timeout_s=30)
    engine.extra = 0   # what the process holds beyond its models, as the stand-in reports it
    pool = engine.pool

    def process(device):
        loaded = sum(i.bytes for i in pool._instances if i.state != "loading")
        return BASE + loaded + engine.extra

    engine.devices._read_process = process
    pool._process_base = {"cpu": BASE}
    return engine


@pytest.fixture
def engine(tmp_path):
    return _engine(tmp_path, [block_spec(tmp_path, name, 100) for name in ("a", "b")])


def use(engine, name, **kw):
    with engine.pool.lease(name, **kw) as model:
        forward(model)


def test_without_memory_beyond_the_ledger_both_models_stay(engine):
    use(engine, "a")
    use(engine, "b")
    assert engine.pool.loaded_models() == {"a", "b"} and not engine.pool.eviction_log
    assert engine.pool.overhang("cpu") == 0


def test_memory_held_beyond_the_ledger_makes_room_by_evicting(engine):
    use(engine, "a")
    engine.extra = 150 * MiB   # 100 (a) + 100 (b) + 150 would pass the 300 MiB budget
    assert engine.pool.overhang("cpu") == 150 * MiB
    use(engine, "b")
    assert engine.pool.loaded_models() == {"b"}, engine.pool.eviction_log


def test_memory_nothing_in_flight_can_free_does_not_stall_the_queue(engine, caplog):
    use(engine, "a")
    engine.extra = 400 * MiB   # more than the whole budget: no eviction can make room
    with caplog.at_level(logging.WARNING, logger="engine.pool"):
        use(engine, "b", timeout_s=5)
    assert "admitted on the ledger alone" in caplog.text
    assert engine.pool.loaded_models() == {"a", "b"}   # the ledger's 200 MiB fit: nothing evicted


def test_while_a_run_is_in_flight_a_newcomer_waits_for_it(engine):
    engine.extra = 400 * MiB
    with leased_elsewhere(engine, "a"):
        with pytest.raises(NotEnoughMemory):
            use(engine, "b", timeout_s=1.5)   # the run in flight may free what the process holds
    use(engine, "b", timeout_s=5)           # once it is done, the ledger decides
    assert "b" in engine.pool.loaded_models()


def _watched(spec, pool, seen):
    """`spec` whose load notes what the pool's ledger held on the CPU while it loaded."""
    def load(device):
        seen.append(pool().engine_bytes("cpu"))
        return spec.loader(device)
    return dataclasses.replace(spec, loader=load)


def _a_loaded_b_watched(tmp_path):
    """An engine with 100 MiB models a (loaded) and b (its load notes the ledger), and b's notes."""
    seen, holder = [], []
    a, b = (block_spec(tmp_path, name, 100) for name in ("a", "b"))
    engine = _engine(tmp_path, [a, _watched(b, lambda: holder[0], seen)])
    holder.append(engine.pool)
    use(engine, "a")
    return engine, seen


def test_a_learned_load_transient_is_reserved_while_the_model_loads(tmp_path):
    engine, seen = _a_loaded_b_watched(tmp_path)
    # b's load went 150 MiB above the 100 MiB it keeps: 100 (a) + 100 + 150 passes the 300 MiB budget.
    engine.pool.load_peaks.record("b", "cpu", 250 * MiB, 100 * MiB)
    use(engine, "b")
    assert engine.pool.loaded_models() == {"b"}, engine.pool.eviction_log
    assert seen == [100 * MiB + 150 * MiB]   # its estimate and its transient, a gone
    assert engine.pool.engine_bytes("cpu") == engine.pool.resident_bytes("cpu")   # settled: no transient left


def test_the_run_reservation_covers_part_of_the_load_transient(tmp_path):
    engine, seen = _a_loaded_b_watched(tmp_path)
    engine.footprints.record_run("b", "cpu", None, 60 * MiB)   # reserved from admission, unused while it loads
    engine.pool.load_peaks.record("b", "cpu", 180 * MiB, 100 * MiB)
    use(engine, "b")
    # 100 (a) + 100 + max(60 run, 80 transient) = 280 fits; adding both (340) would have evicted a.
    assert seen == [100 * MiB + 100 * MiB + 60 * MiB + 20 * MiB]
    assert engine.pool.loaded_models() == {"a", "b"}, engine.pool.eviction_log


def test_load_transients_keep_the_largest_and_persist(tmp_path):
    peaks = LoadPeaks(tmp_path / "load_peaks.json")
    assert peaks.record("m", "cpu", 250 * MiB, 100 * MiB) == 150 * MiB
    assert peaks.record("m", "cpu", 200 * MiB, 100 * MiB) == 100 * MiB   # measured, not kept: smaller
    assert peaks.record("m", "cuda:0", 90 * MiB, 100 * MiB) == 0          # kept more than its peak
    again = LoadPeaks(tmp_path / "load_peaks.json")
    assert again.extra("m", "cpu") == 150 * MiB and again.extra("m", "cuda:1") == 0
    assert again.extra("unknown", "cpu") == 0


def test_a_load_alone_learns_its_transient_from_the_process(tmp_path, monkeypatch):
    """Measured for real (the kernel's RSS high-water mark): a load that touches a 64 MiB buffer
    after its weights and drops it before it returns."""
    # A meter of its own: a probe another test left open would make this load look crowded.
    monkeypatch.setattr(engine_pool, "METER", Meter())
    # Earlier tests' engines, in reference cycles, hold their models' pages until a collection:
    # one that came during this load gave back 800 MiB, and its peak read 0 above its start.
    gc.collect()
    spec = block_spec(tmp_path, "c", 100)

    def load(device):
        model = spec.loader(device)
        sum(float(p.detach().sum()) for p in model.parameters())   # its (memory-mapped) weights resident
        # 64 MiB, written: a file buffer the load lets go. Mapped by hand, so its pages are new
        # whatever the heap holds: a malloc'd buffer can land on freed heap that earlier tests
        # left resident, and then raises no RSS at all (full-suite runs learned 16 KiB).
        scratch = mmap.mmap(-1, 64 * MiB)
        np.frombuffer(scratch, np.uint8)[:] = 1
        time.sleep(0.1)
        scratch.close()
        return model

    engine = Engine(tmp_path / "data", budget=f"cpu={1024 * MiB}", reserve=0,
                    specs=[dataclasses.replace(spec, loader=load)])
    use(engine, "c")
    extra = engine.pool.load_peaks.extra("c", "cpu")
    assert 60 * MiB <= extra <= 76 * MiB, extra / MiB
    assert LoadPeaks(tmp_path / "data" / "load_peaks.json").extra("c", "cpu") == extra


def test_a_model_not_loaded_reserves_its_first_call(tmp_path):
    seen, holder = [], []
    b = block_spec(tmp_path, "b", 100)
    engine = _engine(tmp_path, [block_spec(tmp_path, "a", 100), _watched(b, lambda: holder[0], seen)])
    holder.append(engine.pool)
    store, size = engine.footprints, "px:10000"
    store.record_load("b", "cpu", 100 * MiB)
    store.record_run("b", "cpu", size, 80 * MiB)   # the first call after a load (lazy set-up)
    store.record_run("b", "cpu", size, 20 * MiB)   # a later one
    spec = engine.registry.get("b")
    first, later = (store.predict(spec, "cpu", size, first_call=f).bytes for f in (True, False))
    assert first >= 80 * MiB > later
    use(engine, "b", bucket=size)
    assert seen == [100 * MiB + first]
    with engine.pool.lease("b", bucket=size):   # resident now: a later call's reservation
        assert engine.pool.engine_bytes("cpu") == engine.pool.resident_bytes("cpu") + later


def test_a_run_that_has_not_allocated_yet_lends_its_reservation_to_nobody(tmp_path):
    specs = [dataclasses.replace(block_spec(tmp_path, "a", 100), run_estimate_bytes=60 * MiB),
             block_spec(tmp_path, "b", 100)]
    engine = _engine(tmp_path, specs)
    engine.extra = 90 * MiB   # held beyond the ledger (arenas, free heap, imports)
    with leased_elsewhere(engine, "a"):
        # a's run reserved 60 MiB and took none of it yet: the 90 MiB are all beyond the ledger
        # (read against the reservation alone they were 30, and b's 100 MiB seemed to fit).
        assert engine.pool.overhang("cpu") == 90 * MiB
        with pytest.raises(NotEnoughMemory):
            use(engine, "b", timeout_s=1.5)   # 100 + 60 + 90 + 100 would pass the 300 MiB budget
        engine.extra += 40 * MiB   # the run allocates within its reservation: not overhang
        assert engine.pool.overhang("cpu") == 90 * MiB
    assert engine.pool.overhang("cpu") == 130 * MiB   # its run over, what it left behind is beyond the ledger


def _billing_engine(tmp_path, runtime="onnxruntime"):
    """a and b (100 MiB each, runs reserve 40 MiB, on `runtime`: a torch model's runs are not
    billed); the process reads as its models' load bytes plus `engine.extra`, the memory their
    runs left behind (an arena), whoever it is billed to."""
    specs = [dataclasses.replace(block_spec(tmp_path, name, 100), run_estimate_bytes=40 * MiB, runtime=runtime)
             for name in "ab"]
    engine = _engine(tmp_path, specs)
    pool = engine.pool
    engine.devices._read_process = lambda device: BASE + engine.extra + sum(
        i.bytes - i.kept for i in pool._instances if i.state != "loading")
    return engine


def test_what_a_run_alone_leaves_behind_is_billed_to_its_model(tmp_path):
    engine = _billing_engine(tmp_path)
    pool = engine.pool
    with pool.lease("a") as model:
        forward(model)
        engine.extra = 30 * MiB   # kept after the run, as ONNX Runtime's arena keeps its largest run
    # In the model's bytes, not the process's overhang: evicting a is known to free it.
    assert pool.overhang("cpu") == 0
    assert pool.resident_bytes("cpu") == 130 * MiB
    with pool.lease("a") as model:
        engine.extra = 200 * MiB   # no model keeps more than its largest run reservation (40 MiB)
    assert pool.resident_bytes("cpu") == 140 * MiB and pool.overhang("cpu") == 160 * MiB


def test_what_a_torch_run_leaves_behind_stays_the_process_s(tmp_path):
    engine = _billing_engine(tmp_path, runtime="torch")
    with engine.pool.lease("a") as model:
        forward(model)
        engine.extra = 30 * MiB   # torch's thread pools or caches: evicting a would not free them
    assert engine.pool.resident_bytes("cpu") == 100 * MiB and engine.pool.overhang("cpu") == 30 * MiB


def test_what_a_run_beside_another_leaves_behind_is_nobody_s(tmp_path):
    engine = _billing_engine(tmp_path)
    use(engine, "a")
    with leased_elsewhere(engine, "b"):
        with engine.pool.lease("a"):
            engine.extra = 50 * MiB   # b's or a's: which one cannot tell
    assert engine.pool.resident_bytes("cpu") == 200 * MiB
    assert engine.pool.overhang("cpu") == 50 * MiB
