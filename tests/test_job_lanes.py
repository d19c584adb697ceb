"""Issue 18, lanes: a model download (the store's real download_model job, from a local HTTP server
that stalls halfway) runs in the io lane and holds no compute job behind it; the io lane keeps its
own limit; grouping by model still holds in the compute lane with io jobs beside it."""
import hashlib
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import store as ms
from engine import Engine, JobKind
from engine.cluster import Cluster
from engine.job_lanes import COMPUTE, IO
from tabs.catalog import connect_store
from tiny_models import block_spec, forward

MODELS = ["alpha", "beta", "gamma"]
TESTS = Path(__file__).resolve().parent
PHOTO = TESTS.parent / ".venv/lib/python3.11/site-packages/skimage/data/coffee.png"


def make_engine(tmp_path, loads=None, **job_options):
    specs = [block_spec(tmp_path, name, 16, loads=loads) for name in MODELS]
    return Engine(tmp_path / "data", budget="cpu=40MiB", reserve=0, specs=specs, wait_timeout_s=30,
                  job_options={"job_threads": 1, **job_options})


def model_job(model):
    def run(ctx):
        for _ in range(2):
            ctx.call(model, forward)
        out = ctx.work_dir / "result.txt"
        out.write_text(f"{model} {ctx.params.get('n')}")
        return str(out)

    return JobKind(capability=f"use-{model}", model=model, run=run)


def finished(engine, job_id, within_s=60):
    """The job once it ends; fails (instead of hanging) when it has not ended within_s."""
    deadline = time.monotonic() + within_s
    for job in engine.jobs.follow(job_id, timeout_s=1):
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {within_s} s"


class StallingServer:
    """One file over HTTP that sends its first half, then waits for `release` before the rest:
    a multi-GB download that is still in flight, as long as the test likes."""

    def __init__(self, body: bytes):
        self.halfway, self.release = threading.Event(), threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                outer.halfway.set()
                outer.release.wait(60)
                self.wfile.write(body[len(body) // 2:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights.safetensors"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_stalled_download_does_not_hold_a_compute_job_submitted_after_it(tmp_path):
    weights = tmp_path / "served.safetensors"
    save_file({"weight": torch.rand(256 * 1024, generator=torch.Generator().manual_seed(0))}, str(weights))
    body = weights.read_bytes()   # 1 MiB of real safetensors
    server = StallingServer(body)
    engine = make_engine(tmp_path)   # one compute worker, as --job-workers 1
    connect_store(engine)
    engine.jobs.register(model_job("alpha"))
    engine.jobs.start()
    try:
        download = engine.jobs.submit(ms.JOB_CAPABILITY, {"source": server.url, "kind": "auto",
                                                          "sha256": hashlib.sha256(body).hexdigest()})
        assert server.halfway.wait(30), "the download never started"
        compute = engine.jobs.submit("use-alpha", {"n": 1})
        done = finished(engine, compute)
        stalled = engine.jobs.get(download)
        server.release.set()
        downloaded = finished(engine, download)
    finally:
        server.close()
        engine.jobs.stop()
    assert done["state"] == "done" and open(done["result"]).read() == "alpha 1"
    # The compute job finished while the download was still halfway, on its own thread.
    assert stalled["state"] == "running" and 0 < stalled["progress"] < 1
    assert done["finished"] < downloaded["finished"]
    assert downloaded["state"] == "done", downloaded["error"]
    entry = json.loads(Path(downloaded["result"]).read_text())
    assert Path(entry["path"]).read_bytes() == body
    lanes = {j["id"]: j["lane"] for j in engine.jobs.list()}
    assert lanes == {download: IO, compute: COMPUTE}


def copy_job(name, model, started, release, done, seen):
    """An io job: waits for `release`, then copies its input (a real photo) as its result.
    `seen` records which other io jobs had already finished when it started."""
    def run(ctx):
        seen[name] = {other for other, event in done.items() if event.is_set()}
        started[name].set()
        assert release[name].wait(60)
        out = ctx.work_dir / "copy.png"
        shutil.copyfile(ctx.input("file"), out)
        done[name].set()
        return str(out)

    return JobKind(capability=name, model=model, run=run, lane=IO)


@pytest.mark.parametrize("io_workers", [1, 2])
def test_the_io_lane_runs_at_most_its_limit_at_once(tmp_path, io_workers):
    names = ["fetch-a", "fetch-b"]
    started, release, done = ({n: threading.Event() for n in names} for _ in range(3))
    seen: dict[str, set] = {}
    engine = make_engine(tmp_path, io_workers=io_workers)
    for name in names:   # different model keys: only the lane's limit can hold one behind the other
        engine.jobs.register(copy_job(name, f"{name}-source", started, release, done, seen))
    ids = [engine.jobs.submit(n, inputs={"file": PHOTO}) for n in names]
    release["fetch-b"].set()
    engine.jobs.start()
    try:
        assert started["fetch-a"].wait(30)   # the oldest first
        if io_workers == 2:
            # A second io thread: fetch-b runs and finishes while fetch-a still waits.
            assert done["fetch-b"].wait(30)
        release["fetch-a"].set()
        jobs = [finished(engine, i) for i in ids]
    finally:
        for event in release.values():
            event.set()
        engine.jobs.stop()
    assert [j["state"] for j in jobs] == ["done", "done"]
    assert all(Path(j["result"]).read_bytes() == PHOTO.read_bytes() for j in jobs)
    # With one io thread fetch-b started only once fetch-a had finished; with two, before.
    assert seen["fetch-b"] == ({"fetch-a"} if io_workers == 1 else set())
    if io_workers == 1:
        # With two threads fetch-b may reach its run first (it is not held), so only one thread
        # promises that fetch-a started with nothing finished.
        assert seen["fetch-a"] == set()


def test_grouping_by_model_holds_in_the_compute_lane_beside_io_jobs(tmp_path):
    loads = []
    engine = make_engine(tmp_path, loads, max_passed_over=100)
    for model in MODELS:
        engine.jobs.register(model_job(model))
    ran_io = []

    def fetch(ctx):
        ran_io.append(ctx.params["n"])
        out = ctx.work_dir / "copy.png"
        shutil.copyfile(ctx.input("file"), out)
        return str(out)

    engine.jobs.register(JobKind("fetch", "fetch-source", fetch, lane=IO))
    ids = []
    for i in range(12):   # alpha, beta, gamma, alpha... with an io job after every compute job
        ids.append(engine.jobs.submit(f"use-{MODELS[i % 3]}", {"n": i}))
        ids.append(engine.jobs.submit("fetch", {"n": i}, inputs={"file": PHOTO}))
    engine.jobs.start()
    try:
        jobs = [finished(engine, i) for i in ids]
    finally:
        engine.jobs.stop()
    assert [j["state"] for j in jobs] == ["done"] * 24
    assert len(loads) == 3, loads   # each model loaded once for its group, as without io jobs
    compute = [j for j in jobs if j["capability"] != "fetch"]
    assert all(open(j["result"]).read() == f"{j['model']} {j['params']['n']}" for j in compute)
    # io jobs are passed over only by io jobs: one model key, so they run in order, never skipped.
    assert ran_io == list(range(12)) and all(j["passed_over"] == 0 for j in jobs if j["capability"] == "fetch")
    assert max(j["passed_over"] for j in compute) > 0   # grouping did reorder the compute lane


def test_a_kind_names_its_lane_and_the_store_downloads_in_the_io_lane():
    assert JobKind("x", "m", lambda ctx: "").lane == COMPUTE
    assert ms.job.job_kind(None).lane == IO
    with pytest.raises(ValueError, match="lane must be one of"):
        JobKind("x", "m", lambda ctx: "", lane="disk")


def test_the_io_lane_needs_a_thread(tmp_path):
    with pytest.raises(ValueError, match="io_workers"):
        Engine(tmp_path / "data", job_options={"io_workers": 0})


STALL = threading.Event()   # holds the io job of the cluster test (on the head: this process)


def where(ctx):
    """An io kind every engine of the cluster test has: it writes the pid of the process it ran in."""
    if ctx.params.get("stall"):
        STALL.wait(60)
    out = ctx.work_dir / "pid.txt"
    out.write_text(str(os.getpid()))
    return str(out)


def lanes_engine(data_dir, device="cpu", budget=None, tiny_dir=None):
    """The engine of the cluster test's worker and head (engine_factory "test_job_lanes:lanes_engine"):
    a tiny model's compute kind and an io kind, both known to the worker too."""
    built = Engine(data_dir, budget=budget, device=device, reserve=0, wait_timeout_s=30,
                   specs=[block_spec(Path(tiny_dir), "alpha", 16)], job_options={"job_threads": 1})
    built.jobs.register(model_job("alpha"))
    built.jobs.register(JobKind("where", "where-source", where, lane=IO))
    return built


def test_with_a_cluster_io_jobs_stay_on_the_head_and_compute_jobs_go_to_the_worker(tmp_path):
    kwargs = {"budget": "cpu=256MiB", "tiny_dir": str(tmp_path)}
    workers = Cluster.start("local", cpu_workers=1, engine_factory="test_job_lanes:lanes_engine",
                            engine_kwargs=kwargs, data_dir=tmp_path / "workers", python_path=[str(TESTS)])
    head = lanes_engine(tmp_path / "head", **kwargs)
    head.jobs.attach(workers)
    head.jobs.start()
    try:
        io = head.jobs.submit("where", {"stall": True})
        for job in head.jobs.follow(io, timeout_s=5):   # until a thread has taken it
            if job["state"] == "running":
                break
        compute = head.jobs.submit("use-alpha", {"n": 2})
        done = finished(head, compute)
        stalled = head.jobs.get(io)
        STALL.set()
        io_done = finished(head, io)
    finally:
        STALL.set()
        head.jobs.stop()
        workers.shutdown()
    # The worker has the io kind too, yet the io job ran here; the compute job ran on the worker
    # while the io job was still held.
    assert stalled["state"] == "running" and stalled["worker"] is None
    assert done["state"] == "done" and done["worker"] == "cpu-0" and open(done["result"]).read() == "alpha 2"
    assert io_done["state"] == "done" and io_done["worker"] is None
    assert Path(io_done["result"]).read_text() == str(os.getpid())
