"""Leases, residency, eviction order, budgets and waiting, on real small torch models."""
import threading
import time

import pytest
import torch

from engine import Engine, ModelSpec, NotEnoughMemory
from engine import pool as pool_module
from engine.measure import rss, trim_heap
from engine.runtimes.compiled import accelerate
from engine.runtimes.torch_runtime import tensor_bytes
from tiny_models import Block, MiB, block_spec, forward, leased_elsewhere


def make_engine(tmp_path, specs, budget=None, **kwargs):
    kwargs.setdefault("wait_timeout_s", 30)
    return Engine(tmp_path / "data", budget=budget, reserve=0, specs=specs, **kwargs)


def use(engine, name):
    """Lease and run a model without a run record, so no run-peak reservation is learned."""
    with engine.pool.lease(name) as model:
        forward(model)


def counted_collections(monkeypatch) -> list:
    """gc.collect still collects, and each call is noted in the list returned."""
    import gc

    calls, real = [], gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or real(*a))
    return calls


def test_lease_gives_exclusive_use_under_many_threads(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "shared", 4, role="interactive", max_instances=2)])
    errors, instances = [], set()

    def worker():
        try:
            for _ in range(25):
                with engine.pool.lease("shared") as model:
                    instances.add(id(model))
                    forward(model)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 1 <= len(instances) <= 2
    models = [i.model for i in engine.pool._instances]
    assert len(models) == len(instances)
    # No instance was ever inside forward for two callers at once.
    assert all(m.max_active == 1 for m in models)


def test_second_instance_only_where_allowed_and_waiter_resumes_on_release(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "solo", 4, role="interactive"),
                                    block_spec(tmp_path, "duo", 4, role="interactive", max_instances=2)])
    held, release = threading.Event(), threading.Event()

    def holder(name):
        with engine.pool.lease(name):
            held.set()
            release.wait(10)

    # duo: a second caller gets a second instance at once.
    t = threading.Thread(target=holder, args=("duo",))
    t.start()
    held.wait(10)
    with engine.pool.lease("duo", timeout_s=5) as second:
        assert second is not None
    release.set()
    t.join()
    assert len([i for i in engine.pool._instances if i.spec.name == "duo"]) == 2

    # solo: the second caller waits until the first lease ends, then resumes.
    held.clear(), release.clear()
    t = threading.Thread(target=holder, args=("solo",))
    t.start()
    held.wait(10)
    acquired = threading.Event()
    waiter = threading.Thread(target=lambda: (engine.pool.lease("solo", timeout_s=30).__enter__(), acquired.set()))
    waiter.start()
    assert not acquired.wait(0.5), "a second lease of a single-instance model must wait"
    release.set()
    assert acquired.wait(10), "the waiting lease must resume when the first one ends"
    t.join(), waiter.join()
    assert len([i for i in engine.pool._instances if i.spec.name == "solo"]) == 1


def test_lease_times_out_with_a_clear_message(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "busy", 4)])
    with engine.pool.lease("busy"):
        errors = []
        t = threading.Thread(target=lambda: _catch(errors, lambda: engine.pool.lease("busy", timeout_s=0.3).__enter__()))
        t.start()
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], NotEnoughMemory)
    assert "came free within" in str(errors[0])


def _catch(errors, fn):
    try:
        fn()
    except Exception as exc:
        errors.append(exc)


def test_eviction_order_heavy_lru_then_micro_then_interactive(tmp_path):
    specs = [block_spec(tmp_path, "inter", 16, role="interactive"),
             block_spec(tmp_path, "micro", 16, role="micro"),
             block_spec(tmp_path, "heavy_old", 16), block_spec(tmp_path, "heavy_new", 16),
             block_spec(tmp_path, "x", 16), block_spec(tmp_path, "y", 16), block_spec(tmp_path, "z", 16)]
    engine = make_engine(tmp_path, specs, budget=f"cpu={4 * 16 + 8}MiB")
    for name in ["inter", "micro", "heavy_old", "heavy_new"]:  # interactive is the least recently used
        use(engine, name)
    use(engine, "x")  # evicts heavy_old: idle heavy, least recently used
    with engine.pool.lease("x"), engine.pool.lease("heavy_new"):
        use(engine, "y")  # heavies are busy: micro goes next
        with engine.pool.lease("y"):
            engine.infer("t", "z", forward)  # only the interactive one is left idle
    evicted = [line.split(" (")[0] for line in engine.pool.eviction_log]
    assert evicted == ["heavy_old", "micro", "inter"]
    run = engine.runs.latest(1)[0]
    assert run.evictions == ["inter"]


def test_memory_never_over_a_small_budget(tmp_path):
    budget = 72 * MiB
    specs = [block_spec(tmp_path, f"m{i}", 24) for i in range(5)]
    engine = make_engine(tmp_path, specs, budget=f"cpu={budget}")
    base = rss()
    peaks, errors = [], []

    def worker(seed):
        order = torch.Generator().manual_seed(seed)
        try:
            for _ in range(12):
                name = f"m{int(torch.randint(0, 5, (1,), generator=order))}"
                with engine.pool.lease(name, timeout_s=60) as model:
                    forward(model)
                    with engine.pool._cond:
                        peaks.append(engine.pool.engine_bytes("cpu"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert max(peaks) <= budget
    assert engine.pool.eviction_log, "five 24 MiB models in 72 MiB must have evicted some"
    # What the process really holds stays within the budget too (plus allocator slack).
    assert rss() - base <= budget + 16 * MiB


def test_unloading_really_frees_memory(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "big", 256)])
    trim_heap()   # heap earlier tests freed would be trimmed by the load's probe and hide its growth
    before = rss()
    engine.infer("t", "big", forward)
    loaded = rss()
    assert loaded - before >= 240 * MiB
    assert engine.pool.unload("big") == 1
    assert rss() - before <= 24 * MiB


def test_a_model_larger_than_the_budget_fails_at_once(tmp_path):
    loads = []
    engine = make_engine(tmp_path, [block_spec(tmp_path, "huge", 64, loads=loads)], budget="cpu=32MiB")
    with pytest.raises(NotEnoughMemory, match="budget"):
        engine.infer("t", "huge", forward)
    assert loads == []


def test_footprint_is_measured_persisted_and_used_after_restart(tmp_path):
    # The spec guesses 1 MiB; the model really holds 48 MiB.
    spec = lambda loads: block_spec(tmp_path, "liar", 48, estimate_mib=1, loads=loads)
    loads = []
    first = make_engine(tmp_path, [spec(loads)])
    first.infer("t", "liar", forward)
    measured = first.footprints.get("liar", "cpu").load_bytes
    assert 47 * MiB <= measured <= 64 * MiB
    assert "liar@cpu" in (tmp_path / "data" / "footprints.json").read_text()

    # A new engine on the same data dir knows the number before loading anything ...
    loads_after = []
    second = make_engine(tmp_path, [spec(loads_after)], budget="cpu=32MiB")
    assert second.footprints.load_bytes(second.registry.get("liar"), "cpu") == measured
    # ... and admission uses it: 48 MiB cannot enter a 32 MiB budget, so nothing is loaded.
    with pytest.raises(NotEnoughMemory, match="budget"):
        second.infer("t", "liar", forward)
    assert loads_after == []
    assert [row["state"] for row in second.pool.snapshot()] == ["not loaded"]


def test_memory_mapped_weights_are_billed_to_the_load_not_the_first_run(tmp_path):
    # safetensors maps the file: pages become resident on first read, which must not be learned
    # as the run's peak (it would then block admission under budgets the model really fits).
    engine = make_engine(tmp_path, [block_spec(tmp_path, "mapped", 64)])
    engine.infer("t", "mapped", forward)
    footprint = engine.footprints.get("mapped", "cpu")
    assert footprint.load_bytes >= 64 * MiB
    assert footprint.run_peak_bytes["any"] < 16 * MiB


def test_a_module_exported_to_onnx_runtime_is_billed_its_session_not_only_its_tensors(tmp_path):
    # The face detector and the face embedder run as torch modules exported to ONNX Runtime:
    # the session keeps its own copy of the weights beside the module's tensors.
    def load(device):
        return accelerate(Block(32).eval(), [(torch.ones(4, 512),)], "onnx", tmp_path / "onnx", "block-32")

    engine = make_engine(tmp_path, [ModelSpec(name="exported", role="heavy", runtime="torch", loader=load,
                                              source="test", estimate_bytes=32 * MiB, device="cpu")])
    engine.infer("t", "exported", forward)
    with engine.pool.lease("exported") as model:
        tensors = tensor_bytes(model)
        assert model.mode == "onnx" and 31 * MiB <= tensors <= 33 * MiB
    # The first load also paid the exporter's imports (the process's for good); a second load,
    # from the cached file, is the model's own: its tensors and the session's copy of them
    # (about twice the tensors; the heap's growth, so allow for noise).
    engine.pool.unload("exported")
    engine.infer("t", "exported", forward)
    assert tensors + 24 * MiB <= engine.footprints.get("exported", "cpu").load_bytes <= 3 * tensors


def test_a_learned_run_peak_larger_than_the_budget_does_not_lock_a_model_out(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "m", 16)], budget="cpu=48MiB")
    engine.footprints.record_run("m", "cpu", None, 200 * MiB)  # one odd input once peaked high
    engine.infer("t", "m", forward)  # the weights fit: it loads and runs
    assert engine.runs.latest(1)[0].status == "ok"


def test_an_eviction_collects_garbage_only_when_the_model_was_not_freed_by_dropping_it(tmp_path, monkeypatch):
    import weakref

    class Cyclic(torch.nn.Module):
        """A model that refers to itself, as some wrappers do: only gc.collect frees it."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(8 * MiB // 4))
            self.me = [self]

    seen = {}

    def cyclic_loader(device):
        seen["cyclic"] = model = Cyclic()
        return model

    specs = [block_spec(tmp_path, "plain", 8),
             ModelSpec(name="cyclic", role="heavy", runtime="torch", loader=cyclic_loader, source="built here",
                       estimate_bytes=8 * MiB, device="cpu"),
             block_spec(tmp_path, "next", 8)]
    engine = make_engine(tmp_path, specs, budget="cpu=12MiB")
    collections = counted_collections(monkeypatch)
    use(engine, "plain")
    use(engine, "next")            # evicts plain: freed by dropping it, no collection
    assert engine.pool.eviction_log[-1].startswith("plain") and collections == []
    with engine.pool.lease("cyclic") as model:   # evicts next, again without a collection
        assert model.weight.numel()
    cyclic = weakref.ref(seen.pop("cyclic"))
    del model
    use(engine, "plain")           # evicts cyclic: held by its own cycle, so a collection runs
    assert engine.pool.eviction_log[-1].startswith("cyclic") and len(collections) == 1
    assert cyclic() is None


def test_an_evicted_model_whose_insides_are_in_a_cycle_is_collected(tmp_path, monkeypatch):
    """The model object goes with its last reference, but a part of it that refers to itself (as
    MediaPipe's and spaCy's nets here do) keeps its weights until a collection: the process gave
    back under half of the model's bytes, so one runs."""
    import weakref

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(64 * MiB // 4))   # written: resident
            self.me = [self]

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

    seen = {}

    def loader(device):
        model = Outer()
        seen["inner"] = weakref.ref(model.inner)
        return model

    specs = [ModelSpec(name="outer", role="heavy", runtime="torch", loader=loader, source="built here",
                       estimate_bytes=64 * MiB, device="cpu"),
             block_spec(tmp_path, "plain", 8)]
    engine = make_engine(tmp_path, specs, budget="cpu=70MiB")
    collections = counted_collections(monkeypatch)
    with engine.pool.lease("outer"):
        pass
    use(engine, "plain")           # evicts outer: dropped, yet its inner part is still there
    assert engine.pool.eviction_log[-1].startswith("outer") and len(collections) == 1
    assert seen["inner"]() is None


def test_a_load_measured_while_another_model_is_in_use_keeps_the_clean_footprint(tmp_path):
    import numpy as np

    from engine import ModelSpec

    other_threads = []   # what "another run" allocates while the load is measured

    def blob_loader(device):
        if busy.is_set():
            other_threads.append(np.ones(64 * MiB // 8))
        return {"weights": np.ones(8 * MiB // 8)}   # not torch: only a memory delta can size it

    busy = threading.Event()
    specs = [ModelSpec(name="blob", role="heavy", runtime="other", runtime_reason="a test blob outside every runtime", loader=blob_loader, source="built here",
                       estimate_bytes=8 * MiB, device="cpu"),
             block_spec(tmp_path, "torch", 4, role="interactive")]
    engine = make_engine(tmp_path, specs)
    with engine.pool.lease("blob"):
        pass
    clean = engine.footprints.get("blob", "cpu").load_bytes
    assert 6 * MiB < clean < 40 * MiB
    engine.pool.unload("blob")
    with engine.pool.lease("torch"):   # another model in use while blob loads again
        busy.set()
        with engine.pool.lease("blob"):
            pass
    assert other_threads, "the loader ran while the other model was leased"
    assert engine.footprints.get("blob", "cpu").load_bytes == clean   # the 64 MiB were not billed to blob
    assert [i["bytes"] for i in engine.pool.snapshot() if i["name"] == "blob"][0] == clean


def test_a_waiter_for_most_of_the_budget_goes_before_newcomers_but_not_before_resident_interactive_calls(tmp_path):
    specs = [block_spec(tmp_path, "inter", 8, role="interactive"), block_spec(tmp_path, "hog", 32),
             block_spec(tmp_path, "big", 48), block_spec(tmp_path, "small", 8)]
    engine = make_engine(tmp_path, specs, budget=f"cpu={76 * MiB}")
    use(engine, "inter")
    order, errors = [], []

    def lease(name, timeout_s=30):
        try:
            with engine.pool.lease(name, timeout_s=timeout_s) as model:
                order.append(name)
                forward(model)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    big = threading.Thread(target=lease, args=("big",))
    small = threading.Thread(target=lease, args=("small",))
    with leased_elsewhere(engine, "hog"):
        # 76 MiB less inter (8) and the leased hog (32) leaves 36: big (48) waits for the hog.
        big.start()
        time.sleep(pool_module.FAIR_WAIT_S + 0.5)
        small.start()  # 8 MiB would fit, but big came first
        time.sleep(1.0)
        assert order == [] and not errors
        asked = time.monotonic()
        lease("inter")  # loaded, idle, and its run evicts nothing: it answers at once
        assert order == ["inter"] and time.monotonic() - asked < 0.5
    for thread in (big, small):
        thread.join(30)
    assert not errors
    assert sorted(order[1:]) == ["big", "small"]
    # Waiting for the hog, big evicted nothing in vain: inter stayed loaded throughout.
    assert [line.split(" (")[0] for line in engine.pool.eviction_log] == ["hog"]


def test_a_waiter_that_could_not_fit_even_in_all_the_engine_holds_does_not_hold_others_back(tmp_path, monkeypatch):
    specs = [block_spec(tmp_path, "hog", 32), block_spec(tmp_path, "small", 8)]
    engine = make_engine(tmp_path, specs, budget=f"cpu={76 * MiB}")
    monkeypatch.setattr(pool_module, "FAIR_WAIT_S", 0.0)
    use(engine, "small")
    with leased_elsewhere(engine, "hog"):
        with engine.pool._cond:
            # As if another process held the memory: this waiter could not fit even if the
            # engine gave back all it holds, so others go on.
            waiter = pool_module._Waiter("cpu", 80 * MiB, time.monotonic() - 60)
            engine.pool._waiters.append(waiter)
        started = time.monotonic()
        use(engine, "small")
        assert time.monotonic() - started < 0.5
        with engine.pool._cond:
            waiter.need = 40 * MiB   # now it would fit once the hog is given back: small waits
        with pytest.raises(NotEnoughMemory, match="came free within"):
            with engine.pool.lease("small", timeout_s=1.5):
                pass


def test_a_resident_model_runs_when_its_learned_run_peak_cannot_fit_beside_it(tmp_path):
    # Alone in the pool, nothing to evict: a run peak larger than the budget leaves must get all
    # the room there is (OOM recovery covers the rest), not wait for memory that cannot come.
    engine = make_engine(tmp_path, [block_spec(tmp_path, "m", 32)], budget="cpu=48MiB", wait_timeout_s=3)
    use(engine, "m")
    engine.footprints.record_run("m", "cpu", "any", 64 * MiB)
    assert engine.footprints.predict(engine.registry.get("m"), "cpu", None).bytes >= 64 * MiB
    started = time.monotonic()
    use(engine, "m")
    assert time.monotonic() - started < 2
    assert [i.state for i in engine.pool._instances] == ["idle"]
