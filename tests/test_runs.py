"""Run records: one for every call, with its models, timings, memory peaks, warnings and errors."""
import dataclasses
import json
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

from engine import Engine
from engine.runs import RunRecord
from tiny_models import MiB, block_spec, forward

FIELDS = {f.name for f in dataclasses.fields(RunRecord)}


def make_engine(tmp_path, specs, budget=None, **kwargs):
    kwargs.setdefault("wait_timeout_s", 30)
    return Engine(tmp_path / "data", budget=budget, reserve=0, specs=specs, **kwargs)


def logged(tmp_path):
    path = tmp_path / "data" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def warn_here(message, category=UserWarning):
    """Warn from this very line and say which line that is."""
    line = sys._getframe().f_lineno + 1
    warnings.warn(message, category)
    return f"{__file__}:{line}"


def test_a_record_for_every_call(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 8)])
    first = engine.infer("embed", "net", forward)
    second = engine.infer("embed", "net", forward)
    assert torch.equal(first, second)

    newest, oldest = engine.runs.latest()
    assert (oldest.id, newest.id) == (1, 2), "latest() is newest first"
    for record in (oldest, newest):
        assert record.capability == "embed"
        assert record.models == ["net"]
        assert record.device == "cpu"
        assert record.status == "ok" and record.error is None
        assert record.compute_s > 0
        assert record.wall_s >= record.compute_s
        assert record.wall_s >= record.load_s + record.compute_s
        assert record.peak_rss_bytes > 0
        assert record.peak_device_bytes > 0  # on the CPU, the process's RSS
        assert record.queue_wait_s >= 0
        assert record.ooms == 0 and record.retries == 0 and record.steps == []
        assert record.evictions == [] and record.warnings == []
        assert record.profile is None
    assert oldest.load_s > 0, "the first call loads the model"
    assert newest.load_s == 0, "the second call finds it loaded"
    assert newest.started >= oldest.started

    lines = logged(tmp_path)
    assert len(lines) == 2
    assert [line["id"] for line in lines] == [1, 2]  # appended in the order runs finished
    for line, record in zip(lines, (oldest, newest)):
        assert set(line) == FIELDS
        assert line == record.to_dict()
        assert line["models"] == ["net"] and line["device"] == "cpu" and line["status"] == "ok"
    assert lines[0]["load_s"] > 0 and lines[1]["load_s"] == 0
    assert engine.runs.latest(1) == [newest]
    assert engine.status()["runs"] == [newest.to_dict(), oldest.to_dict()]


def test_a_pipeline_run_records_every_model(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "detector", 4), block_spec(tmp_path, "restorer", 4)])
    with engine.run("restore", bucket="0.25MP") as run:
        faces = run.call("detector", forward)
        with torch.inference_mode():
            out = run.call("restorer", lambda model: model(faces))
    assert out.shape == (4, 512)
    (record,) = engine.runs.latest()
    assert record.capability == "restore"
    assert record.models == ["detector", "restorer"]
    assert record.bucket == "0.25MP"
    assert record.status == "ok"
    assert record.load_s > 0 and record.compute_s > 0
    assert record.wall_s >= record.compute_s
    (line,) = logged(tmp_path)
    assert line["models"] == ["detector", "restorer"]
    fp = engine.footprints
    assert "0.25MP" in fp.get("detector", "cpu").run_peak_bytes
    assert "0.25MP" in fp.get("restorer", "cpu").run_peak_bytes


def test_a_warning_lands_in_its_own_run_only(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "left", 4), block_spec(tmp_path, "right", 4)])
    inside = {"left": threading.Event(), "right": threading.Event()}
    warned = {"left": threading.Event(), "right": threading.Event()}
    locations, errors = {}, []

    def work(me, other):
        def fn(model):
            # Both runs are inside their functions before either warns, and neither returns
            # before the other has warned: the two runs overlap for the whole exchange.
            inside[me].set()
            assert inside[other].wait(10)
            locations[me] = warn_here(f"test_runs overlap warning from {me}")
            warned[me].set()
            assert warned[other].wait(10)
            return forward(model)

        try:
            engine.infer(f"capability {me}", me, fn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with warnings.catch_warnings(record=True) as shown:
        threads = [threading.Thread(target=work, args=pair) for pair in [("left", "right"), ("right", "left")]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors

    records = {r.capability: r for r in engine.runs.latest()}
    for me in ("left", "right"):
        assert records[f"capability {me}"].warnings == [
            {"category": "UserWarning", "message": f"test_runs overlap warning from {me}",
             "location": locations[me]}]
    # The hook passes warnings on to whoever showed them before.
    assert sorted(str(w.message) for w in shown) == ["test_runs overlap warning from left",
                                                     "test_runs overlap warning from right"]
    for line in logged(tmp_path):
        assert len(line["warnings"]) == 1
        assert line["warnings"][0]["message"].endswith(line["models"][0])


def test_warning_category_and_location_and_none_outside_runs(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 4)])
    where = []

    def fn(model):
        where.append(warn_here("test_runs: a deprecated option was used", DeprecationWarning))
        return forward(model)

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        engine.infer("t", "net", fn)
        warn_here("test_runs: warned outside any run")  # must not reach a finished record
        engine.infer("t", "net", forward)
    second, first = engine.runs.latest()
    assert first.warnings == [{"category": "DeprecationWarning",
                               "message": "test_runs: a deprecated option was used",
                               "location": where[0]}]
    assert second.warnings == []


@pytest.mark.parametrize("profile", [True, False])
def test_profile_attaches_a_torch_profiler_table(tmp_path, profile):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 4)])
    engine.infer("t", "net", forward, profile=profile)
    (record,) = engine.runs.latest()
    assert record.status == "ok"
    if profile:
        assert isinstance(record.profile, str)
        assert "aten::" in record.profile
        assert "aten::mm" in record.profile or "aten::linear" in record.profile
        assert logged(tmp_path)[0]["profile"] == record.profile
    else:
        assert record.profile is None
        assert logged(tmp_path)[0]["profile"] is None


def test_an_error_is_recorded_and_logged(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 4)])

    def broken(model):
        forward(model)
        return 1 / 0

    with pytest.raises(ZeroDivisionError):
        engine.infer("divide", "net", broken)
    (record,) = engine.runs.latest()
    assert record.status == "error"
    assert record.error == "ZeroDivisionError: division by zero"
    assert record.models == ["net"]
    assert record.compute_s > 0 and record.wall_s >= record.compute_s
    assert record.ooms == 0 and record.retries == 0
    (line,) = logged(tmp_path)
    assert line["status"] == "error" and line["error"] == "ZeroDivisionError: division by zero"
    assert line["capability"] == "divide"

    # The engine stays usable after the error, and the next call gets a record of its own.
    engine.infer("divide", "net", forward)
    assert [r.status for r in engine.runs.latest()] == ["ok", "error"]
    assert [line["status"] for line in logged(tmp_path)] == ["error", "ok"]


def test_run_footprint_is_kept_per_bucket(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 4)])

    def activations(model):
        with torch.inference_mode():
            # ~64 MiB of activations: above glibc's largest mmap threshold (32 MiB), so they take
            # fresh pages however much freed heap earlier tests in this process left behind.
            return model(torch.ones(32_000, 512)).sum()

    engine.infer("t", "net", activations, bucket="1MP")
    peaks = engine.footprints.get("net", "cpu").run_peak_bytes
    assert set(peaks) == {"1MP"}
    assert peaks["1MP"] >= 32 * MiB
    (record,) = engine.runs.latest()
    assert record.bucket == "1MP"
    assert record.peak_rss_bytes >= peaks["1MP"]
    assert "1MP" in (tmp_path / "data" / "footprints.json").read_text()


def test_latest_returns_at_most_n_newest_first(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 4)])
    for _ in range(3):
        engine.infer("t", "net", forward)
    assert [r.id for r in engine.runs.latest()] == [3, 2, 1]
    assert [r.id for r in engine.runs.latest(2)] == [3, 2]
    assert [r.id for r in engine.runs.latest(1)] == [3]


def test_latest_zero_returns_no_records(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 4)])
    engine.infer("t", "net", forward)
    assert engine.runs.latest(0) == []
    assert engine.status(runs=0)["runs"] == []


def test_profile_next_run_profiles_exactly_one_run(tmp_path):
    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 4)])
    engine.profile_next_run()
    engine.preload("net")  # preloads are not the run the user asked to profile
    engine.infer("t", "net", forward)
    engine.infer("t", "net", forward)
    later, profiled, preload = engine.runs.latest()
    assert preload.capability == "preload net" and preload.profile is None
    assert "aten::" in profiled.profile
    assert later.profile is None


def test_a_preload_teaches_no_run_peak(tmp_path):
    """A preload runs nothing. Its empty call's peak (about 0) once stood as the model's largest
    run peak, so the first real call of a size never seen was predicted, reserved and shown as
    0 KiB (the Voices tab's first diarization: "run peak 45 MiB (predicted 0 KiB)")."""
    spec = dataclasses.replace(block_spec(tmp_path, "net", 4), run_estimate_bytes=16 * MiB)
    engine = make_engine(tmp_path, [spec])
    engine.preload("net")
    assert engine.footprints.get("net", "cpu").run_peak_bytes == {}
    with engine.run("t", bucket="px:10000") as run:
        run.call("net", forward)
    assert run.record.run_bytes_predicted == 16 * MiB   # the spec's estimate, until measured
    assert engine.footprints.get("net", "cpu").first_peak_bytes.keys() == {"px:10000"}


def test_a_repeated_warning_lands_in_every_run_but_is_printed_once(tmp_path):
    from engine.runs import TALLY

    engine = make_engine(tmp_path, [block_spec(tmp_path, "net", 4)])
    message = f"test_runs: repeated warning {tmp_path.name}"   # unique: the tally is process-wide

    def fn(model):
        warnings.warn(message, FutureWarning)
        return forward(model)

    printed = []
    with warnings.catch_warnings():
        warnings.showwarning = lambda *args, **kwargs: printed.append(str(args[0]))
        for _ in range(3):
            engine.infer("t", "net", fn)
    assert [len(r.warnings) for r in engine.runs.latest(3)] == [1, 1, 1]
    assert printed.count(message) == 1
    entry, = [w for w in TALLY.summary() if w["message"] == message]
    assert entry["count"] == 3 and entry["category"] == "FutureWarning" and entry["source"] == "wimmel"
    assert entry["location"].startswith(str(Path(__file__)))
    assert engine.status()["warnings"][0]["count"] >= 3


def test_a_peak_measured_while_other_calls_ran_only_stands_in_until_a_clean_one(tmp_path):
    from engine.models import FootprintStore

    store = FootprintStore(tmp_path / "footprints.json")
    store.record_run("net", "cpu", "1MP", 818 * MiB, crowded=True)    # the only figure yet: used
    assert store.get("net", "cpu").run_peak_bytes["1MP"] == 818 * MiB
    store.record_run("net", "cpu", "1MP", 353 * MiB)                  # clean: replaces it, though smaller
    store.record_run("net", "cpu", "1MP", 900 * MiB, crowded=True)    # crowded again: ignored
    assert store.get("net", "cpu").run_peak_bytes["1MP"] == 353 * MiB
    store.record_run("net", "cpu", "1MP", 300 * MiB)                  # clean peaks keep the largest
    store.record_run("net", "cpu", "2MP", 700 * MiB, crowded=True)
    again = FootprintStore(tmp_path / "footprints.json")              # persisted, flags included
    assert again.get("net", "cpu").run_peak_bytes == {"1MP": 353 * MiB, "2MP": 700 * MiB}
    again.record_run("net", "cpu", "2MP", 500 * MiB)
    assert again.get("net", "cpu").run_peak_bytes["2MP"] == 500 * MiB
