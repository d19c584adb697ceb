"""Out-of-memory: recognised from every runtime, recovered by freeing, then degrading, then failing.

Every OOM here is the runtime's own exception, produced for real: torch's CPU allocator refusing
64 TiB, ONNX Runtime's arena refusing 4 TiB, Python refusing a 1 PiB bytearray, and the class
torch raises for CUDA (constructed, as no GPU is needed for the test).
"""
import dataclasses
import random
import threading
import weakref

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper

from engine import Engine, ModelSpec, NotEnoughMemory, OutOfMemory, is_oom
from tiny_models import MiB, block_spec, forward, leased_elsewhere

HUGE_SHAPE = np.array([2**24, 2**24], dtype=np.int64)  # 2**48 float32: 1 PiB, beyond any address space
SMALL_SHAPE = np.array([4, 8], dtype=np.int64)


def make_engine(tmp_path, specs, budget=None, **kwargs):
    kwargs.setdefault("wait_timeout_s", 30)
    return Engine(tmp_path / "data", budget=budget, reserve=0, specs=specs, **kwargs)


# ---- real out-of-memory exceptions ----

def constant_of_shape_session() -> onnxruntime.InferenceSession:
    """An ONNX model with one ConstantOfShape node: output shape = the 'shape' input."""
    node = helper.make_node("ConstantOfShape", ["shape"], ["out"])
    graph = helper.make_graph(
        [node], "constant_of_shape",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", "cols"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # The onnx package stamps its newest IR version; an older onnxruntime refuses it. IR 9 loads
    # in every onnxruntime since 1.15.
    model.ir_version = 9
    onnx.checker.check_model(model)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # the failed allocation is expected: keep its log line quiet
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


_SESSION = []


def session() -> onnxruntime.InferenceSession:
    if not _SESSION:
        _SESSION.append(constant_of_shape_session())
    return _SESSION[0]


def torch_cpu_oom():
    torch.empty(2**48)  # 1 PiB of float32: fails even where the kernel overcommits


def onnxruntime_oom():
    session().run(None, {"shape": HUGE_SHAPE})


def python_memory_error():
    bytearray(2**50)  # 1 PiB


def torch_cuda_oom():
    # What the CUDA caching allocator raises; constructed, as the test needs no GPU.
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total "
                                 "capacity of 7.79 GiB of which 1.12 GiB is free.")


RAISERS = {"torch_cpu": torch_cpu_oom, "onnxruntime": onnxruntime_oom,
           "memory_error": python_memory_error, "torch_cuda": torch_cuda_oom}


def caught(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the point is to look at it
        return exc
    raise AssertionError(f"{fn.__name__} did not raise")


def ort_spec(name: str) -> ModelSpec:
    return ModelSpec(name=name, role="heavy", runtime="onnxruntime",
                     loader=lambda device: constant_of_shape_session(), source="constant_of_shape.onnx",
                     estimate_bytes=1 * MiB, device="cpu")


def state(engine, name):
    return {row["name"]: row["state"] for row in engine.pool.snapshot()}[name]


# ---- recognising OOM ----

def test_real_torch_cpu_allocation_failure_is_oom():
    exc = caught(torch_cpu_oom)
    assert type(exc) is RuntimeError
    assert "DefaultCPUAllocator: can't allocate memory" in str(exc)
    assert is_oom(exc)


def test_real_onnxruntime_allocation_failure_is_oom():
    exc = caught(onnxruntime_oom)
    assert type(exc).__module__.startswith("onnxruntime")
    assert type(exc).__name__ == "Fail"
    assert not isinstance(exc, (RuntimeError, MemoryError))  # only its message tells
    assert "Failed to allocate memory for requested buffer" in str(exc)
    assert is_oom(exc)


def test_real_memory_error_and_torch_out_of_memory_error_are_oom():
    exc = caught(python_memory_error)
    assert type(exc) is MemoryError
    assert is_oom(exc)
    exc = caught(torch_cuda_oom)
    assert type(exc) is torch.OutOfMemoryError
    assert is_oom(exc)
    assert is_oom(torch.OutOfMemoryError())  # no message at all: the class alone decides


def shape_mismatch():
    torch.nn.Linear(512, 512)(torch.ones(4, 3))


def not_a_number():
    int("four")


def ort_wrong_input_type():
    session().run(None, {"shape": np.array([4.0, 8.0], dtype=np.float32)})


NOT_OOM = {"value_error": not_a_number, "shape_mismatch": shape_mismatch,
           "onnxruntime_invalid_argument": ort_wrong_input_type}


@pytest.mark.parametrize("kind", sorted(NOT_OOM))
def test_other_real_errors_are_not_oom(kind):
    exc = caught(NOT_OOM[kind])
    assert not is_oom(exc), f"{type(exc).__name__}: {exc}"


def test_negative_error_types_are_what_the_runtimes_raise():
    assert type(caught(not_a_number)) is ValueError
    exc = caught(shape_mismatch)
    assert type(exc) is RuntimeError and "mat1 and mat2 shapes cannot be multiplied" in str(exc)
    assert type(caught(ort_wrong_input_type)).__module__.startswith("onnxruntime")


# ---- through the engine ----

@pytest.mark.parametrize("kind", ["value_error", "shape_mismatch"])
def test_non_oom_errors_propagate_unchanged_without_retries(tmp_path, kind):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 4)])
    raised, calls = [], []

    def work(model):
        calls.append(1)
        try:
            if kind == "shape_mismatch":
                with torch.inference_mode():
                    model(torch.ones(4, 3))  # the model's real forward, wrong input width
            else:
                not_a_number()
        except BaseException as exc:
            raised.append(exc)
            raise

    with pytest.raises((ValueError, RuntimeError)) as info:
        engine.infer("t", "a", work)
    assert info.value is raised[0], "the engine must re-raise the very exception, not a wrapper"
    assert not isinstance(info.value, OutOfMemory)
    assert calls == [1]
    record = engine.runs.latest(1)[0]
    assert record.status == "error"
    assert record.retries == 0 and record.ooms == 0 and record.steps == []
    assert record.error.startswith(type(raised[0]).__name__ + ": ")
    if kind == "shape_mismatch":
        assert "mat1 and mat2 shapes cannot be multiplied" in record.error


@pytest.mark.parametrize("kind", sorted(RAISERS))
def test_oom_on_first_call_is_recovered_by_freeing_memory(tmp_path, kind):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 4)])
    calls = []

    def work(model):
        calls.append(1)
        if len(calls) == 1:
            RAISERS[kind]()
        return forward(model)

    out = engine.infer("t", "a", work)
    assert torch.equal(out, forward(engine.pool._instances[0].model))
    assert len(calls) == 2
    record = engine.runs.latest(1)[0]
    assert record.status == "ok" and record.error is None
    assert record.ooms == 1 and record.retries == 1
    assert len(record.steps) == 1 and record.steps[0].startswith("freed memory")
    assert record.models == ["a"]


def test_onnxruntime_model_that_runs_out_of_memory_is_recovered(tmp_path):
    engine = make_engine(tmp_path, [ort_spec("ort")])
    shapes = [HUGE_SHAPE, SMALL_SHAPE]

    def work(sess):
        return sess.run(None, {"shape": shapes.pop(0)})[0]

    out = engine.infer("t", "ort", work)
    assert out.shape == (4, 8) and float(out.sum()) == 0.0
    record = engine.runs.latest(1)[0]
    assert record.status == "ok"
    assert record.ooms == 1 and record.retries == 1
    assert record.steps[0].startswith("freed memory")


def oom_times(n, then=forward, raiser=torch_cpu_oom):
    """A run function that hits a real OOM on its first n calls, then runs `then`."""
    calls = []

    def work(model):
        calls.append(1)
        if len(calls) <= n:
            raiser()
        return then(model)

    return work


def test_oom_free_step_evicts_idle_heavy_models(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 4), block_spec(tmp_path, "b", 32)])
    engine.infer("warm", "b", forward)
    assert state(engine, "b") == "idle"
    assert engine.pool.resident_bytes("cpu") >= 32 * MiB

    engine.infer("t", "a", oom_times(1))
    record = engine.runs.latest(1)[0]
    assert record.status == "ok" and record.ooms == 1
    assert record.evictions == ["b"]
    assert record.steps[0].startswith("freed memory: evicted b")
    assert state(engine, "b") == "not loaded"
    assert state(engine, "a") == "idle"  # the model in use is never evicted
    assert engine.pool.resident_bytes("cpu") < 8 * MiB
    assert any(line.startswith("b (heavy") and line.endswith("out of memory")
               for line in engine.pool.eviction_log)


def test_interactive_models_survive_the_first_free_step_but_not_the_second(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 4), block_spec(tmp_path, "b", 8),
                                    block_spec(tmp_path, "m", 4, role="micro"),
                                    block_spec(tmp_path, "i", 8, role="interactive")])
    for name in ["b", "m", "i"]:
        engine.infer("warm", name, forward)

    # One OOM: level 1 frees idle heavy and micro models; the interactive one stays.
    engine.infer("t", "a", oom_times(1))
    record = engine.runs.latest(1)[0]
    assert record.ooms == 1 and record.status == "ok"
    assert sorted(record.evictions) == ["b", "m"]
    assert [state(engine, n) for n in ["b", "m", "i"]] == ["not loaded", "not loaded", "idle"]

    # Two OOMs: the second free step (level 2) takes the idle interactive model too.
    seen = []

    def work(model):
        seen.append(state(engine, "i"))
        return oom_twice(model)

    oom_twice = oom_times(2)
    engine.infer("t", "a", work)
    record = engine.runs.latest(1)[0]
    assert seen == ["idle", "idle", "not loaded"]
    assert record.ooms == 2 and record.retries == 2 and record.status == "ok"
    assert record.steps[0].startswith("freed memory: no idle model to evict")
    assert record.steps[1].startswith("freed memory: evicted i")
    assert record.evictions == ["i"]
    assert state(engine, "i") == "not loaded"


class TiledWork:
    """A tiled run: a tile up to `fits` pixels a side allocates tile*tile floats; a larger one makes
    the plan ask for the whole 2**22 x 2**22 image at once, 64 TiB, which the allocator refuses."""

    def __init__(self, tile=512, fits=256, max_degrades=8):
        self.tile, self.fits, self.max_degrades = tile, fits, max_degrades
        self.tiles_tried, self.degrade_calls = [], []

    def __call__(self, model):
        self.tiles_tried.append(self.tile)
        numel = self.tile * self.tile if self.tile <= self.fits else 2**48
        buffer = torch.zeros(numel)  # real allocation: a real DefaultCPUAllocator error when huge
        return forward(model).sum() + buffer.sum()

    def degrade(self, n):
        self.degrade_calls.append(n)
        if n > self.max_degrades:
            return None
        self.tile //= 2
        return f"tile {self.tile}"


def test_degrade_after_the_free_steps_then_succeed(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 4)])
    work = TiledWork(tile=512, fits=256)
    out = engine.infer("t", "a", work, degrade=work.degrade, bucket="1MP")
    assert torch.isfinite(out)
    assert work.tiles_tried == [512, 512, 512, 256]
    assert work.degrade_calls == [1]
    record = engine.runs.latest(1)[0]
    assert record.status == "ok"
    assert record.ooms == 3 and record.retries == 3
    assert [s.split(":")[0] for s in record.steps] == ["freed memory", "freed memory", "degraded"]
    assert record.steps[2] == "degraded: tile 256"
    # A degraded run's peak is not the plan's: it teaches no footprint.
    assert engine.footprints.get("a", "cpu").run_peak_bytes == {}


def test_degrade_in_several_steps(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 4)])
    work = TiledWork(tile=1024, fits=128)
    engine.infer("t", "a", work, degrade=work.degrade)
    assert work.tiles_tried == [1024, 1024, 1024, 512, 256, 128]
    record = engine.runs.latest(1)[0]
    assert record.status == "ok" and record.ooms == 5
    assert record.steps[2:] == ["degraded: tile 512", "degraded: tile 256", "degraded: tile 128"]


def test_permanent_oom_raises_out_of_memory_naming_every_step(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 4), block_spec(tmp_path, "b", 8)])
    engine.infer("warm", "b", forward)
    work = TiledWork(tile=512, fits=0, max_degrades=2)  # nothing fits, ever
    with pytest.raises(OutOfMemory) as info:
        engine.infer("t", "a", work, degrade=work.degrade)
    exc = info.value
    assert work.degrade_calls == [1, 2, 3]
    assert work.tiles_tried == [512, 512, 512, 256, 128]
    assert len(exc.steps) == 4
    assert exc.steps[0].startswith("freed memory: evicted b")
    assert exc.steps[1].startswith("freed memory: no idle model to evict")
    assert exc.steps[2:] == ["degraded: tile 256", "degraded: tile 128"]
    message = str(exc)
    assert message.startswith("a ran out of memory even after: ")
    for step in exc.steps:
        assert step in message
    assert "DefaultCPUAllocator: can't allocate memory" in message  # the last error, shortened
    assert is_oom(exc.__cause__)
    record = engine.runs.latest(1)[0]
    assert record.status == "error"
    assert record.error.startswith("OutOfMemory: a ran out of memory even after")
    assert record.ooms == 5 and record.retries == 4
    assert record.steps == exc.steps
    assert record.evictions == ["b"]


def test_hundred_runs_with_random_ooms_all_complete(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 2),
                                    block_spec(tmp_path, "b", 2, role="interactive")])
    rng = random.Random(20240611)
    kinds = sorted(RAISERS)
    # Per run: which of its two calls hits a burst of OOMs (a quarter of the runs), how many in a
    # row before the call succeeds (3 needs a degrade step after the two free steps), and which
    # runtime raises them. Every OOM step costs a full gc.collect(), so the rate is kept modest.
    plans = []
    for _ in range(100):
        plan = {"a": 0, "b": 0, "kind": rng.choice(kinds)}
        if rng.random() < 0.25:
            plan[rng.choice("ab")] = rng.choice([1, 1, 1, 2, 3])
        plans.append(plan)
    injected = {"count": 0}
    lock = threading.Lock()
    errors = []

    def inject(raiser):
        with lock:
            injected["count"] += 1
        raiser()

    def degrade(n):
        return f"retry {n}" if n <= 1 else None

    def one_run(i):
        plan = plans[i]
        with engine.run(f"run {i}", bucket="any") as run:
            outs = []
            for name in ["a", "b"]:
                calls = []

                def work(model, calls=calls, n=plan[name]):
                    calls.append(1)
                    if len(calls) <= n:
                        inject(RAISERS[plan["kind"]])
                    return forward(model)

                outs.append(run.call(name, work, degrade=degrade))
                assert len(calls) == plan[name] + 1
        return outs

    def worker(indices):
        try:
            for i in indices:
                outs = one_run(i)
                assert all(o.shape == (4, 512) for o in outs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(range(k, 100, 2),)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    records = {r.capability: r for r in engine.runs.latest(500) if r.capability.startswith("run ")}
    assert len(records) == 100
    assert all(r.status == "ok" for r in records.values())
    expected = sum(p["a"] + p["b"] for p in plans)
    bursts = [p["a"] + p["b"] for p in plans]
    assert expected >= 25 and {1, 2, 3} <= set(bursts)  # the seed covers every recovery path
    assert injected["count"] == expected
    assert sum(r.ooms for r in records.values()) == expected
    for i, plan in enumerate(plans):
        record = records[f"run {i}"]
        assert record.ooms == plan["a"] + plan["b"], (i, plan, record)
        assert record.retries == record.ooms == len(record.steps)
        assert record.models == ["a", "b"]
        degraded = (plan["a"] == 3) + (plan["b"] == 3)
        assert sum(s.startswith("degraded: retry 1") for s in record.steps) == degraded


# ---- OOM while loading a model ----

def flaky_loader_spec(tmp_path, name, ooms):
    """A real block model whose loader hits a real torch CPU OOM on its first `ooms` attempts."""
    spec = block_spec(tmp_path, name, 4)
    attempts = []

    def load(device):
        attempts.append(1)
        if len(attempts) <= ooms:
            torch_cpu_oom()
        return spec.loader(device)

    return dataclasses.replace(spec, loader=load), attempts


def test_oom_while_loading_is_recovered_by_freeing_memory(tmp_path):
    spec, attempts = flaky_loader_spec(tmp_path, "a", ooms=1)
    engine = make_engine(tmp_path, [spec, block_spec(tmp_path, "b", 8)])
    engine.infer("warm", "b", forward)
    out = engine.infer("t", "a", forward)
    assert out.shape == (4, 512)
    assert len(attempts) == 2
    record = engine.runs.latest(1)[0]
    assert record.status == "ok"
    assert record.evictions == ["b"]  # the load's free step evicted the idle heavy model
    assert state(engine, "a") == "idle" and state(engine, "b") == "not loaded"


def test_oom_while_loading_is_recorded_on_the_run(tmp_path):
    spec, attempts = flaky_loader_spec(tmp_path, "a", ooms=1)
    engine = make_engine(tmp_path, [spec])
    engine.infer("t", "a", forward)
    record = engine.runs.latest(1)[0]
    assert len(attempts) == 2 and record.status == "ok"
    assert record.ooms == 1 and record.retries == 1
    # The step says it happened while loading, not while running.
    assert len(record.steps) == 1 and record.steps[0].startswith("loading a: freed memory")


# ---- what must not count as OOM ----

def test_a_lease_timeout_inside_a_run_is_not_treated_as_oom(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "outer", 4), block_spec(tmp_path, "busy", 4),
                                    block_spec(tmp_path, "idle", 4)])
    engine.infer("warm", "idle", forward)
    attempts = []

    def nested(model):
        attempts.append(1)
        with engine.pool.lease("busy", timeout_s=0.05):  # held by the other thread: times out
            return forward(model)

    with leased_elsewhere(engine, "busy"), pytest.raises(NotEnoughMemory, match="came free within"):
        engine.infer("t", "outer", nested)
    record = engine.runs.latest(1)[0]
    # The instance was busy, memory was plentiful: no free step, no retry, no eviction.
    assert attempts == [1]
    assert record.ooms == 0 and record.steps == [] and record.evictions == []
    assert state(engine, "idle") == "idle"


# ---- what the free step can free ----

def test_the_failed_attempts_memory_is_released_before_the_free_step(tmp_path):
    alive_at_free_step = []
    refs = []
    idle = dataclasses.replace(block_spec(tmp_path, "b", 4),
                               unloader=lambda model: alive_at_free_step.append(refs[0]() is not None))
    engine = make_engine(tmp_path, [block_spec(tmp_path, "a", 4), idle])
    engine.infer("warm", "b", forward)

    def work(model):
        activations = torch.ones(16 * MiB // 4)  # what the attempt held when it ran out of memory
        refs.append(weakref.ref(activations))
        if len(refs) == 1:
            torch_cpu_oom()
        return forward(model)

    engine.infer("t", "a", work)
    # The free step evicted b (its unloader ran inside the step): was the failed attempt's
    # 16 MiB tensor already unreachable by then?
    assert engine.runs.latest(1)[0].evictions == ["b"]
    assert alive_at_free_step == [False]
