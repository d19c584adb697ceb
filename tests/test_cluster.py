"""Issue 17: long jobs on Ray worker actors (a real local Ray cluster, two CPU workers): routed by
the model they need, and resumed on the other worker, frame-identical, after one is killed."""
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from analysers.face_detector import FACE_DETECTOR
from engine import JobKind, UserFacingError
from engine.cluster import Cluster
from tabs import catalog
from tiny_models import block_spec, forward
from video_helpers import decode_all, face_video

TESTS = Path(__file__).resolve().parent
TINY = "tiny-block"
CHUNK = 8


def tiny_steps(ctx):
    """A second model's job (a tiny torch model from tiny_models.py): four checkpointed steps."""
    for step in range(ctx.checkpoint.get("steps_done", 0), 4):
        ctx.check_cancelled()
        if step == ctx.params.get("fail_at"):
            raise UserFacingError(f"step {step} refused")
        ctx.call(TINY, forward)
        ctx.save_checkpoint(steps_done=step + 1)
    out = ctx.work_dir / "result.txt"
    out.write_text(f"{TINY} {ctx.params['n']}")
    return str(out)


def engine(data_dir, device="cpu", budget=None, tiny_dir=None):
    """The engine of a worker and of the head: the app's face detector and its video job, plus
    the tiny model. Workers import it by name (test_cluster:engine): Cluster.start puts this
    folder on their PYTHONPATH; the tiny model's weights are a file every worker here can read."""
    built = catalog.worker_engine(data_dir, device=device, budget=budget, chunk_frames=CHUNK,
                                  models=[FACE_DETECTOR])
    built.register(block_spec(Path(tiny_dir), TINY, 16))
    built.jobs.register(JobKind("tiny_steps", TINY, tiny_steps))
    return built


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    kwargs = {"budget": "cpu=2GiB", "tiny_dir": str(root)}
    started = Cluster.start("local", cpu_workers=2, engine_factory="test_cluster:engine", engine_kwargs=kwargs,
                            data_dir=root / "workers", python_path=[str(TESTS)])
    head = engine(root / "head", **kwargs)
    # A kind no worker has (the app's model downloads): the head's own job thread runs it.
    head.jobs.register(JobKind("on_head", TINY, lambda ctx: str(_written(ctx.work_dir / "head.txt", str(os.getpid())))))
    head.jobs.attach(started)
    head.jobs.start()
    yield started, head
    head.jobs.stop()
    started.shutdown()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return face_video(tmp_path_factory.mktemp("video") / "faces.mp4", frames=64, fps=24)


def _written(path, text):
    path.write_text(text)
    return path


def finished(head, job_id):
    return list(head.jobs.follow(job_id, timeout_s=5))[-1]


def test_workers_report_node_device_pid_and_memory(cluster):
    workers = cluster[0].workers()
    assert [w["id"] for w in workers] == ["cpu-0", "cpu-1"]
    assert all(w["alive"] and w["device"] == "cpu" and w["job"] is None for w in workers)
    assert len({w["pid"] for w in workers}) == 2 and os.getpid() not in {w["pid"] for w in workers}
    assert all(w["memory"]["cpu"]["budget"] == 2 * 1024**3 for w in workers)


def test_jobs_of_two_models_are_routed_to_the_worker_that_holds_their_model(cluster, video):
    workers, head = cluster
    inputs = {"video": video}
    rounds = []
    for n in range(3):
        # A pair at a time, both workers free: each job goes to the worker that holds its model
        # (the first pair: nobody holds either, each goes to a worker with the most room).
        ids = [head.jobs.submit("blur_faces_video", {"mode": "blur"}, inputs=inputs),
               head.jobs.submit("tiny_steps", {"n": n})]
        rounds.append([finished(head, i) for i in ids])
    assert all(j["state"] == "done" and j["moves"] == 0 for pair in rounds for j in pair)
    face_worker, tiny_worker = rounds[0][0]["worker"], rounds[0][1]["worker"]
    assert {face_worker, tiny_worker} == {"cpu-0", "cpu-1"}
    assert [pair[0]["worker"] for pair in rounds] == [face_worker] * 3
    assert [pair[1]["worker"] for pair in rounds] == [tiny_worker] * 3
    # Each model was loaded once, on its own worker; the results came back to the head's folders.
    loads = [list(r["loads"]) for pair in rounds for j in pair for r in j["runs"]]
    assert loads == [[FACE_DETECTOR], [TINY], [], [], [], []]
    models = {w["id"]: w["models"] for w in workers.workers()}
    assert models == {face_worker: [FACE_DETECTOR], tiny_worker: [TINY]}
    assert [Path(pair[1]["result"]).read_text() for pair in rounds] == [f"{TINY} {n}" for n in range(3)]
    assert all(Path(pair[0]["result"]).is_relative_to(head.jobs.root) for pair in rounds)
    assert all(len(decode_all(pair[0]["result"])) == 64 for pair in rounds)


def test_a_worker_killed_mid_job_leaves_the_job_to_resume_on_the_other_one(cluster, video):
    workers, head = cluster
    reference = finished(head, head.jobs.submit("blur_faces_video", {"mode": "pixelate"}, inputs={"video": video}))
    job_id = head.jobs.submit("blur_faces_video", {"mode": "pixelate"}, inputs={"video": video})
    for job in head.jobs.follow(job_id, timeout_s=5):
        if job["checkpoint"].get("chunks_done", 0) >= 2:
            break
    assert job["state"] == "running", job
    killed = next(w for w in workers.workers() if w["job"] == job_id)
    os.kill(killed["pid"], signal.SIGKILL)
    done = finished(head, job_id)
    assert done["state"] == "done" and done["moves"] == 1 and done["worker"] != killed["id"]
    # At most the chunk in flight was lost: it resumed from a chunk at or after the one seen.
    assert done["resumed_from_frame"] >= CHUNK * job["checkpoint"]["chunks_done"]
    assert done["resumed_from_frame"] % CHUNK == 0
    assert np.array_equal(decode_all(done["result"]), decode_all(reference["result"]))
    # Ray restarted the killed worker: a new process, empty pool, counted once.
    deadline = time.monotonic() + 60
    while True:  # polling the restart from outside; no result depends on this delay
        again = next(w for w in workers.workers() if w["id"] == killed["id"])
        if again["alive"] and again["pid"] not in (None, killed["pid"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again["alive"] and again["pid"] != killed["pid"] and again["restarts"] == 1


def test_a_job_fails_on_its_worker_in_plain_words_and_cancel_reaches_a_running_one(cluster, video):
    workers, head = cluster
    failed = finished(head, head.jobs.submit("tiny_steps", {"n": 0, "fail_at": 2}))
    assert failed["state"] == "failed" and failed["error"] == "step 2 refused" and failed["bug"] == 0
    assert failed["checkpoint"] == {"steps_done": 2} and failed["worker"] in ("cpu-0", "cpu-1")
    assert failed["runs"] and failed["runs"][-1]["models"] == [TINY, TINY]

    job_id = head.jobs.submit("blur_faces_video", {"mode": "blur"}, inputs={"video": video})
    for job in head.jobs.follow(job_id, timeout_s=5):
        if job["checkpoint"].get("chunks_done", 0) >= 1:
            break
    head.jobs.cancel(job_id)
    cancelled = finished(head, job_id)
    assert cancelled["state"] == "cancelled" and cancelled["checkpoint"]["chunks_done"] < 64 // CHUNK
    assert all(w["job"] is None for w in workers.workers())


def test_a_kind_no_worker_has_runs_on_the_head(cluster):
    done = finished(cluster[1], cluster[1].jobs.submit("on_head"))
    assert done["state"] == "done" and done["worker"] is None
    assert Path(done["result"]).read_text() == str(os.getpid())


def test_routing_sends_a_job_to_the_free_worker_holding_its_model_and_keeps_the_fairness_bound():
    from engine.cluster import View, pick

    def job(seq, model, state="queued", passed_over=0):
        return {"id": str(seq), "seq": seq, "model": model, "capability": f"use-{model}", "state": state,
                "passed_over": passed_over}

    kinds = {"use-a", "use-b", "use-c"}
    views = {"w1": View({"a"}, "a", 100, kinds), "w2": View({"b"}, "b", 500, kinds)}
    waiting = [job(1, "b"), job(2, "c"), job(3, "a")]
    # w1 leaves b to w2 (which holds it) and c to w2 (more room), and takes its own a.
    assert pick("w1", waiting, views, {"w1", "w2"}) == (waiting[2], [])
    assert pick("w2", waiting, views, {"w1", "w2"})[0] == waiting[0]
    # With w2 busy, w1 takes whatever waits, its own model first, counting the older ones passed over.
    assert pick("w1", waiting, views, {"w1"}) == (waiting[2], waiting[:2])
    starving = [job(1, "b", passed_over=4), job(2, "a")]
    assert pick("w1", starving, views, {"w1"})[0] == starving[0]
    cut_off = [job(1, "a"), job(2, "c", state="interrupted")]
    assert pick("w1", cut_off, views, {"w1"})[0] == cut_off[1]
    # A worker without a job's kind never takes it.
    assert pick("w1", [job(1, "d")], views, {"w1"}) == (None, [])


def test_an_old_jobs_database_gets_the_worker_and_moves_columns(tmp_path):
    import sqlite3

    from engine.jobs import JobStore

    old = sqlite3.connect(str(tmp_path / "jobs.sqlite"))
    old.execute("""CREATE TABLE jobs (id TEXT PRIMARY KEY, seq INTEGER, capability TEXT, model TEXT,
        params TEXT, state TEXT, progress REAL, note TEXT, created REAL, started REAL, finished REAL,
        result TEXT, error TEXT, resumed_from_frame INTEGER, runs TEXT, checkpoint TEXT,
        passed_over INTEGER, attempts INTEGER, resumed_from TEXT, bug INTEGER)""")
    old.execute("""INSERT INTO jobs VALUES ('abc', 1, 'use-alpha', 'alpha', '{}', 'done', 1.0, '', 0, 0, 0,
        '/r', NULL, 24, '[]', '{}', 0, 1, 'frame 24', 0)""")
    old.commit()
    old.close()
    job = JobStore(tmp_path / "jobs.sqlite").get("abc")
    assert job["worker"] is None and job["moves"] == 0 and job["resumed_from"] == "frame 24"
