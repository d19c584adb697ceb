"""The cost of a request told before it runs (engine/costs.py, engine/timings.py, ui/costs.py):
learned from runs, persisted, and right about what a run will load and evict.

The models are small real torch models (tests/tiny_models.py) whose bytes are exact; the process's
own memory is read through a stand-in that reports what the models hold, so that the budget's
arithmetic is exact here (the real app's estimate is tested through its API in test_app.py)."""
import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from engine import Engine, JobKind
from engine.costs import estimate, request_size
from engine.runs import Request, RunRecord
from engine.timings import KEEP, TimingStore
from tiny_models import MiB, block_spec, forward, leased_elsewhere
from ui.costs import NOT_YET, cost_text, last_run_text

MEDIA = Path(__import__("gradio").__file__).parent / "media_assets"
BASE = 1 << 30


def make_engine(tmp_path, budget_mib: int, names=("a", "b")) -> Engine:
    specs = [block_spec(tmp_path, name, 100) for name in names]
    engine = Engine(tmp_path / "data", budget=f"cpu={budget_mib * MiB}", reserve=0, specs=specs, wait_timeout_s=5)
    pool = engine.pool
    # The process holds exactly what its models hold: no allocator noise in the budget's arithmetic.
    engine.devices._read_process = lambda device: BASE + sum(i.bytes for i in pool._instances
                                                             if i.state != "loading")
    pool._process_base = {"cpu": BASE}
    return engine


def request(engine, endpoint: str, model: str, size: str = "px:10000") -> RunRecord:
    """One request to `endpoint` that runs `model`, as the app makes it."""
    with Request(endpoint, size).current(), engine.run(f"{endpoint} run", bucket=size) as run:
        run.call(model, forward)
    return run.record


def test_an_endpoint_never_run_here_is_not_guessed(tmp_path):
    engine = make_engine(tmp_path, 1024)
    cost = estimate(engine, "grow", "px:10000")
    assert not cost.known and cost.models == [] and cost.seconds is None
    assert cost_text(cost) == NOT_YET


def test_a_run_teaches_its_endpoint_and_records_predicted_against_measured(tmp_path):
    engine = make_engine(tmp_path, 1024)
    first = request(engine, "grow", "a")
    assert (first.endpoint, first.size) == ("grow", "px:10000")
    assert first.run_bytes_predicted is not None and first.run_bytes_measured is not None
    assert first.seconds_predicted is None            # nothing was known before the first run
    second = request(engine, "grow", "a", "px:20000")
    assert second.seconds_predicted is not None and second.seconds_predicted > 0

    cost = estimate(engine, "grow", "px:40000")
    assert cost.known and [m.name for m in cost.models] == ["a"]
    model = cost.models[0]
    assert model.resident and model.load_bytes == 0 and model.device == "cpu"
    assert model.run_bytes == engine.footprints.predict(engine.registry.get("a"), "cpu", "px:40000").bytes
    assert cost.need_bytes == {"cpu": model.run_bytes}
    assert cost.verdict == "now" and cost.evicts == []
    assert cost.seconds is not None and cost.seconds > 0 and cost.runs_seen == 2
    text = cost_text(cost)
    assert text.startswith("**Before you run:** a 40,000 pixel picture needs about") and "a is loaded" in text
    said = last_run_text(second.to_dict())
    assert said.startswith("Last run:") and "expected" in said and "predicted" in said


def test_it_names_the_load_first_and_the_models_evicted_for_it_as_the_run_then_does(tmp_path):
    # 180 MiB holds one 100 MiB model, not two: running b evicted a; a's request must evict b.
    engine = make_engine(tmp_path, 180)
    request(engine, "use_a", "a")
    request(engine, "use_b", "b")
    assert engine.pool.loaded_models() == {"b"}

    cost = estimate(engine, "use_a", "px:10000")
    model = cost.models[0]
    assert not model.resident
    assert model.load_bytes == engine.footprints.get("a", "cpu").load_bytes >= 100 * MiB
    assert model.load_s is not None and model.load_s > 0          # learned from a's load
    assert cost.verdict == "evicts" and cost.evicts == ["b"]
    # As admission reserves it: the load, the part of its learned transient above the run, the run.
    spec = engine.registry.get("a")
    assert model.load_extra_bytes == engine.pool.load_reserve(spec, "cpu", model.run_bytes)
    assert cost.need_bytes["cpu"] == model.load_bytes + model.load_extra_bytes + model.run_bytes
    assert "loading a first" in cost_text(cost) and "it unloads b (idle)" in cost_text(cost)

    ran = request(engine, "use_a", "a")
    assert ran.evictions == cost.evicts
    assert ran.loads and ran.load_s > 0


def test_it_says_when_a_run_would_wait_for_work_in_progress(tmp_path):
    engine = make_engine(tmp_path, 180)
    request(engine, "use_a", "a")
    request(engine, "use_b", "b")
    with leased_elsewhere(engine, "b"):
        cost = estimate(engine, "use_a", "px:10000")
        assert cost.verdict == "waits" and cost.evicts == []
        assert "work in progress" in cost.reason and cost.reason in cost_text(cost)


def test_what_was_learned_persists_and_a_smaller_budget_is_refused_before_the_run(tmp_path):
    engine = make_engine(tmp_path, 1024)
    request(engine, "use_a", "a")
    saved = json.loads((tmp_path / "data" / "timings.json").read_text())
    assert saved["endpoints"]["use_a@cpu"]["models"] == ["a"] and "a@cpu" in saved["loads"]

    smaller = make_engine(tmp_path, 60)            # a new start, same data dir, a budget under a's 100 MiB
    cost = estimate(smaller, "use_a", "px:10000")
    assert cost.known and cost.verdict == "refused"
    assert "more than the engine may ever hold there" in cost.reason
    assert "would be refused" in cost_text(cost)


def test_a_job_carries_its_request_to_its_runs(tmp_path):
    engine = make_engine(tmp_path, 1024)
    engine.jobs.register(JobKind("use-a", "a", lambda ctx: ctx.call("a", forward) is not None))
    engine.jobs.start()
    try:
        with Request("use_a_video", "s:12.5").current():
            job_id = engine.jobs.submit("use-a")
        job = list(engine.jobs.follow(job_id))[-1]
    finally:
        engine.jobs.stop()
    assert job["state"] == "done"
    record = job["runs"][-1]
    assert (record["endpoint"], record["size"]) == ("use_a_video", "s:12.5")
    cost = estimate(engine, "use_a_video", "s:25")
    assert cost.known and [m.name for m in cost.models] == ["a"] and cost.seconds is not None


def record(endpoint: str, size: str, seconds: float, device: str = "cpu") -> RunRecord:
    out = RunRecord(id=0, capability=endpoint, started=0.0, models=["m"], device=device, endpoint=endpoint,
                    size=size, wall_s=seconds, status="ok")
    return out


def test_times_are_fitted_over_sizes_and_kept_per_device_kind(tmp_path):
    store = TimingStore(tmp_path / "timings.json")
    for pixels in (100_000, 200_000, 400_000):
        for noise in (-0.05, 0.0, 0.05):            # the median of the readings is the point
            store.learn(record("ep", f"px:{pixels}", 0.2 + pixels * 1e-6 + noise))
    assert store.seconds("ep", "px:1000000", "cpu") == pytest.approx(1.2, rel=0.02)
    assert store.seconds("ep", "px:200000", "cpu") == pytest.approx(0.4, rel=0.02)
    assert store.seconds("ep", "px:100000", "cuda:0") is None     # never ran on a GPU
    assert store.models("ep", "cuda:0") == ["m"]                   # its models are the same there

    store.learn(record("one", "s:10", 2.0))
    assert store.seconds("one", "s:5", "cpu") == 2.0               # smaller: at most the one reading
    assert store.seconds("one", "s:20", "cpu") == pytest.approx(4.0)   # larger: scaled by its size
    for _ in range(KEEP + 3):
        store.learn(record("one", "s:10", 3.0))
    assert store.seconds("one", "s:10", "cpu") == 3.0              # the last KEEP readings only
    store.learn(RunRecord(id=0, capability="x", started=0.0, device="cpu", status="error", wall_s=9.0))
    assert store.models("x", "cpu") == []                          # a failed run teaches nothing

    again = TimingStore(tmp_path / "timings.json")                 # what a restart reads
    assert again.seconds("ep", "px:1000000", "cpu") == pytest.approx(1.2, rel=0.02)


def test_request_size_reads_pictures_sound_and_text(tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    assert request_size([str(photo)]) == "px:262144"
    assert request_size([np.zeros((720, 1280, 3), np.uint8)]) == "px:921600"
    # Two photos (compare): the largest width times the largest height, as the handlers open their runs.
    assert request_size([np.zeros((100, 300, 3)), np.zeros((400, 200, 3))]) == "px:120000"
    assert request_size([{"background": np.zeros((64, 32, 3)), "layers": []}]) == "px:2048"
    seconds = float(request_size([str(MEDIA / "audio" / "cate_blanch.mp3")]).split(":")[1])
    assert 5 < seconds < 60
    # A video's work follows its length; a photo sent with it (a person to keep) is an option.
    assert request_size([str(MEDIA / "audio" / "cate_blanch.mp3"), str(photo)]) == f"s:{seconds:g}"
    assert request_size(["Hello there.  "]) == "chars:12"
    assert request_size([None, ""]) is None
