"""The job queue: persistence, grouping by model, fairness, cancel, failure, resume."""
import threading

import pytest

from engine import Engine, JobKind, UserFacingError
from tiny_models import block_spec, forward

MODELS = ["alpha", "beta", "gamma"]


def make_engine(tmp_path, loads=None, budget="cpu=40MiB", **job_options):
    specs = [block_spec(tmp_path, name, 16, loads=loads) for name in MODELS]
    return Engine(tmp_path / "data", budget=budget, reserve=0, specs=specs, wait_timeout_s=30,
                  job_options={"job_threads": 1, **job_options})


def model_job(model, steps=2):
    def run(ctx):
        for _ in range(steps):
            ctx.check_cancelled()
            ctx.call(model, forward)
        out = ctx.work_dir / "result.txt"
        out.write_text(f"{model} {ctx.params.get('n')}")
        return str(out)

    return JobKind(capability=f"use-{model}", model=model, run=run)


def wait_all(engine, ids):
    return [list(engine.jobs.follow(i))[-1] for i in ids]


def interleaved(engine, count=12):
    return [engine.jobs.submit(f"use-{MODELS[i % 3]}", {"n": i}) for i in range(count)]


@pytest.mark.parametrize("policy, bound, expected_loads", [("grouped", 100, 3), ("fifo", 100, 12)])
def test_grouping_loads_each_model_once_where_fifo_reloads(tmp_path, policy, bound, expected_loads):
    loads = []
    engine = make_engine(tmp_path, loads, policy=policy, max_passed_over=bound)
    for model in MODELS:
        engine.jobs.register(model_job(model))
    ids = interleaved(engine)  # all queued before the workers start: the scheduler sees them all
    engine.jobs.start()
    try:
        jobs = wait_all(engine, ids)
    finally:
        engine.jobs.stop()
    assert [j["state"] for j in jobs] == ["done"] * 12
    assert len(loads) == expected_loads, loads
    assert all(open(j["result"]).read() == f"{j['model']} {j['params']['n']}" for j in jobs)


def test_the_fairness_bound_holds(tmp_path):
    loads = []
    engine = make_engine(tmp_path, loads, max_passed_over=2)
    for model in MODELS:
        engine.jobs.register(model_job(model))
    ids = interleaved(engine)
    engine.jobs.start()
    try:
        jobs = wait_all(engine, ids)
    finally:
        engine.jobs.stop()
    assert max(j["passed_over"] for j in jobs) == 2  # the bound is reached and never crossed
    assert 3 < len(loads) < 12  # fairness costs some reloads, grouping still saves most


def test_jobs_persist_and_an_interrupted_job_resumes_from_its_checkpoint(tmp_path):
    chunks_run = []

    def chunked(ctx):
        start = ctx.checkpoint.get("chunks_done", 0)
        if start:
            ctx.resumed_from(start * 10)
        for chunk in range(start, 5):
            ctx.call("alpha", forward)
            chunks_run.append(chunk)
            ctx.save_checkpoint(chunks_done=chunk + 1)
            ctx.progress((chunk + 1) / 5)
        out = ctx.work_dir / "out.txt"
        out.write_text("ok")
        return str(out)

    first = make_engine(tmp_path)
    first.jobs.register(JobKind("chunked", "alpha", chunked))
    job_id = first.jobs.submit("chunked")
    # What a process killed after chunk 3 leaves behind: state running, three chunks saved.
    first.jobs.store.update(job_id, state="running", checkpoint={"chunks_done": 3}, progress=0.6)

    second = make_engine(tmp_path)  # a new process on the same data dir
    second.jobs.register(JobKind("chunked", "alpha", chunked))
    assert second.jobs.get(job_id)["state"] == "running"
    second.jobs.start()
    try:
        job = list(second.jobs.follow(job_id))[-1]
    finally:
        second.jobs.stop()
    assert job["state"] == "done" and job["resumed_from_frame"] == 30 and job["resumed_from"] == "frame 30"
    assert chunks_run == [3, 4]  # not from zero
    assert job["attempts"] == 1 and len(job["runs"]) == 1
    assert job["runs"][0]["models"] == ["alpha", "alpha"]


def test_cancel_a_queued_and_a_running_job(tmp_path):
    engine = make_engine(tmp_path)
    inside, release = threading.Event(), threading.Event()

    def blocking(ctx):
        inside.set()
        release.wait(10)
        ctx.check_cancelled()
        return "never"

    engine.jobs.register(JobKind("blocking", "alpha", blocking))
    running = engine.jobs.submit("blocking")
    queued = engine.jobs.submit("blocking")
    engine.jobs.start()
    try:
        assert inside.wait(10)
        assert engine.jobs.cancel(queued)["state"] == "cancelled"
        engine.jobs.cancel(running)
        release.set()
        job = list(engine.jobs.follow(running))[-1]
    finally:
        engine.jobs.stop()
    assert job["state"] == "cancelled" and job["result"] is None


def test_a_failing_job_records_its_error_and_the_next_job_runs(tmp_path):
    engine = make_engine(tmp_path)

    def bad(ctx):
        raise UserFacingError("This file has no video stream.")

    engine.jobs.register(JobKind("bad", "alpha", bad))
    engine.jobs.register(model_job("alpha"))
    failed = engine.jobs.submit("bad")
    good = engine.jobs.submit("use-alpha", {"n": 1})
    engine.jobs.start()
    try:
        bad_job, good_job = wait_all(engine, [failed, good])
    finally:
        engine.jobs.stop()
    assert bad_job["state"] == "failed" and bad_job["error"] == "This file has no video stream."
    assert bad_job["runs"][0]["status"] == "error"
    assert good_job["state"] == "done"
    # A failed job can be queued again.
    assert engine.jobs.retry(failed)["state"] == "queued"
    with pytest.raises(ValueError, match="only failed or cancelled"):
        engine.jobs.retry(good)


def test_inputs_are_copied_and_progress_is_followed(tmp_path):
    source = tmp_path / "upload.txt"
    source.write_text("hello")
    engine = make_engine(tmp_path)

    def echo(ctx):
        for i in range(4):
            ctx.progress((i + 1) / 4, f"step {i + 1}")
        return str(ctx.input("file"))

    engine.jobs.register(JobKind("echo", "alpha", echo))
    job_id = engine.jobs.submit("echo", inputs={"file": source})
    source.unlink()  # the upload may vanish; the job kept its copy
    engine.jobs.start()
    try:
        seen = list(engine.jobs.follow(job_id))
    finally:
        engine.jobs.stop()
    assert seen[-1]["state"] == "done" and open(seen[-1]["result"]).read() == "hello"
    assert [j["progress"] for j in seen] == sorted(j["progress"] for j in seen)
    assert engine.jobs.list()[0]["id"] == job_id


def test_an_input_the_job_could_never_use_is_refused_at_submit(tmp_path):
    from video_helpers import make_test_video
    from engine.media.video_job import readable_video

    engine = make_engine(tmp_path)
    ran = []
    engine.jobs.register(JobKind("frames", "alpha", lambda ctx: ran.append(ctx.id), check=lambda params, inputs: readable_video(inputs)))
    not_a_video = tmp_path / "holiday.mp4"
    not_a_video.write_text("this is not a video\n")
    cut_short = tmp_path / "cut.mp4"
    cut_short.write_bytes(make_test_video(tmp_path / "whole.mp4", frames=12, width=96, height=64).read_bytes()[:300])
    for bad in (not_a_video, cut_short):
        with pytest.raises(UserFacingError) as refused:
            engine.jobs.submit("frames", inputs={"video": bad})
        assert "video" in str(refused.value).lower() and str(bad) not in str(refused.value)
    assert engine.jobs.list() == [] and ran == []   # nothing queued, no folder left behind
    folders = tmp_path / "data" / "jobs"
    assert not folders.exists() or not any(folders.iterdir())
    good = engine.jobs.submit("frames", inputs={"video": tmp_path / "whole.mp4"})
    assert engine.jobs.get(good)["state"] == "queued"


def test_a_jobs_database_from_before_resumed_from_gets_the_column(tmp_path):
    import sqlite3

    from engine.jobs import JobStore

    old = sqlite3.connect(str(tmp_path / "jobs.sqlite"))
    old.execute("""CREATE TABLE jobs (id TEXT PRIMARY KEY, seq INTEGER, capability TEXT, model TEXT,
        params TEXT, state TEXT, progress REAL, note TEXT, created REAL, started REAL, finished REAL,
        result TEXT, error TEXT, resumed_from_frame INTEGER, runs TEXT, checkpoint TEXT,
        passed_over INTEGER, attempts INTEGER)""")
    old.execute("""INSERT INTO jobs VALUES ('abc', 1, 'use-alpha', 'alpha', '{}', 'done', 1.0, '', 0, 0, 0,
        '/r', NULL, 24, '[]', '{}', 0, 1)""")
    old.commit()
    old.close()
    job = JobStore(tmp_path / "jobs.sqlite").get("abc")
    assert job["resumed_from_frame"] == 24 and job["resumed_from"] is None and job["state"] == "done"


def test_job_defaults_are_merged_under_each_jobs_own_params(tmp_path):
    engine = make_engine(tmp_path, defaults={"chunk_frames": 5, "n": 1})
    seen = {}

    def run(ctx):
        seen[ctx.params.get("tag")] = dict(ctx.params)
        out = ctx.work_dir / "result.txt"
        out.write_text("ok")
        return str(out)

    engine.jobs.register(JobKind("params", "alpha", run))
    engine.jobs.start()
    try:
        ids = [engine.jobs.submit("params", {"tag": "own", "chunk_frames": 9}),
               engine.jobs.submit("params", {"tag": "default"})]
        wait_all(engine, ids)
    finally:
        engine.jobs.stop()
    assert seen["own"]["chunk_frames"] == 9 and seen["own"]["n"] == 1
    assert seen["default"]["chunk_frames"] == 5
    # Stored as submitted: the defaults are the server's, applied when the job runs.
    assert "chunk_frames" not in engine.jobs.get(ids[1])["params"]


def test_a_video_job_cuts_its_chunks_by_the_job_default(tmp_path):
    from video_helpers import make_test_video
    from engine.media.video_job import process_video

    engine = make_engine(tmp_path, defaults={"chunk_frames": 4})
    engine.jobs.register(JobKind("copy", "alpha", lambda ctx: str(process_video(ctx, ctx.input("video"), lambda f: f))))
    video = make_test_video(tmp_path / "in.mp4", frames=10, width=64, height=48, audio=False)
    engine.jobs.start()
    try:
        job_id = engine.jobs.submit("copy", inputs={"video": video})
        (job,) = wait_all(engine, [job_id])
    finally:
        engine.jobs.stop()
    assert job["state"] == "done" and job["checkpoint"] == {"chunk_frames": 4, "chunks_done": 3}


def _nice_of(tid: int) -> int:
    # Field 19 of /proc/<tid>/stat, counted after the command name (which may hold spaces).
    import os

    return int(open(f"/proc/{os.getpid()}/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16])


def test_job_threads_run_below_interactive_calls_and_so_do_their_processes(tmp_path):
    import os
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread priority is Linux's")
    seen = {}

    def run(ctx):
        seen["job"] = _nice_of(threading.get_native_id())
        # ffmpeg and other child processes a job starts inherit the thread's priority.
        seen["child"] = int(subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"],
                                           capture_output=True, text=True, check=True).stdout)
        out = ctx.work_dir / "result.txt"
        out.write_text("ok")
        return str(out)

    base = _nice_of(threading.get_native_id())
    engine = make_engine(tmp_path, job_nice=7)
    engine.jobs.register(JobKind(capability="nice", model="alpha", run=run))
    engine.jobs.start()
    try:
        (job,) = wait_all(engine, [engine.jobs.submit("nice")])
    finally:
        engine.jobs.stop()
    assert job["state"] == "done", job["error"]
    assert seen == {"job": min(19, base + 7), "child": min(19, base + 7)}
    assert _nice_of(threading.get_native_id()) == base   # the calling (interactive) thread keeps its own
    with pytest.raises(ValueError, match="0 to 19"):
        make_engine(tmp_path, job_nice=-1)
