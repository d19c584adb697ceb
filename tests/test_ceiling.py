"""The budget caps what the process holds, not only the engine's ledger: memory the process keeps
beyond it (allocator caches, arenas, imports) counts against the budget (Residency.overhang).

The process's own memory is read through Devices.process; here a stand-in adds a chosen amount
to what the loaded models hold, so that the rule is tested exactly (the bench oom-stress scenario
measures it on real models)."""
import logging

import pytest

from engine import Engine, NotEnoughMemory
from tiny_models import MiB, block_spec, forward, leased_elsewhere

BASE = 1 << 30


@pytest.fixture
def engine(tmp_path):
    specs = [block_spec(tmp_path, name, 100) for name in ("a", "b")]
    engine = Engine(tmp_path / "data", budget=f"cpu={300 * MiB}", reserve=0, specs=specs, wait_timeout_s=30)
    engine.extra = 0   # what the process holds beyond its models, as the stand-in reports it
    pool = engine.pool

    def process(device):
        loaded = sum(i.bytes for i in pool._instances if i.state != "loading")
        return BASE + loaded + engine.extra

    engine.devices._read_process = process
    pool._process_base = {"cpu": BASE}
    return engine


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
