"""Issue 18 item 3, the engine side: jobs have owners; in the compute lane owners take turns (one
person's 20 jobs do not starve another's one) while grouping by model holds; per-owner limits on
queued jobs and bytes; an admin's pause / resume and cancel_owner."""
import sqlite3
import threading
from pathlib import Path

import pytest

from engine import Engine, JobKind, UserFacingError, format_bytes
from engine.job_lanes import IO
from engine import job_shares
from engine.job_shares import Limits, Turns
from engine.jobs import QueueLimit, JobStore
from tiny_models import block_spec, forward

MODELS = ["alpha", "beta", "gamma"]
DATA = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/skimage/data"
COFFEE, ASTRONAUT = DATA / "coffee.png", DATA / "astronaut.png"   # real photos: 466706, 791555 bytes


def make_engine(tmp_path, loads=None, **job_options):
    specs = [block_spec(tmp_path, name, 16, loads=loads) for name in MODELS]
    return Engine(tmp_path / "data", budget="cpu=40MiB", reserve=0, specs=specs, wait_timeout_s=30,
                  job_options={"job_threads": 1, **job_options})


class Recorder:
    """Job kinds for each model that record the order jobs start in (by their "who" and "n"
    params); a job with params hold=True waits inside until `release` is set."""

    def __init__(self, engine):
        self.started: list[tuple[str, int]] = []
        self.inside, self.release = threading.Event(), threading.Event()
        for model in MODELS:
            engine.jobs.register(JobKind(f"use-{model}", model, self._run(model)))

    def _run(self, model):
        def run(ctx):
            self.started.append((ctx.params["who"], ctx.params["n"]))
            if ctx.params.get("hold"):
                self.inside.set()
                assert self.release.wait(30)
            for _ in range(2):
                ctx.check_cancelled()
                ctx.call(model, forward)
            out = ctx.work_dir / "result.txt"
            out.write_text(f"{model} {ctx.params['who']} {ctx.params['n']}")
            return str(out)

        return run


def submit(engine, who, n, model="alpha", owner=None, **params):
    return engine.jobs.submit(f"use-{model}", {"who": who, "n": n, **params}, owner=owner)


def wait_all(engine, ids):
    return [list(engine.jobs.follow(i, timeout_s=5))[-1] for i in ids]


def test_the_owner_is_stored_listed_filtered_and_kept_across_a_restart(tmp_path):
    engine = make_engine(tmp_path)
    Recorder(engine)
    ana = [submit(engine, "ana", i, owner="ana") for i in range(2)]
    ben = submit(engine, "ben", 0, owner="ben")
    local = submit(engine, "local", 0)
    assert engine.jobs.get(ana[0])["owner"] == "ana" and engine.jobs.get(local)["owner"] is None
    assert [j["owner"] for j in engine.jobs.list()] == [None, "ben", "ana", "ana"]   # newest first
    assert [j["id"] for j in engine.jobs.list("ana")] == ana[::-1]
    assert [j["id"] for j in engine.jobs.list(owner="ben")] == [ben]
    assert engine.jobs.list("nobody") == []
    engine.jobs.start()
    try:
        seen = list(engine.jobs.follow(ben, timeout_s=5))
    finally:
        engine.jobs.stop()
    assert seen[-1]["state"] == "done" and {j["owner"] for j in seen} == {"ben"}
    again = make_engine(tmp_path)   # a new process on the same data dir
    assert [j["owner"] for j in again.jobs.list()] == [None, "ben", "ana", "ana"]


def test_a_jobs_database_from_before_owners_gets_the_column(tmp_path):
    old = sqlite3.connect(str(tmp_path / "jobs.sqlite"))
    old.execute("""CREATE TABLE jobs (id TEXT PRIMARY KEY, seq INTEGER, capability TEXT, model TEXT,
        params TEXT, state TEXT, progress REAL, note TEXT, created REAL, started REAL, finished REAL,
        result TEXT, error TEXT, resumed_from_frame INTEGER, runs TEXT, checkpoint TEXT,
        passed_over INTEGER, attempts INTEGER, resumed_from TEXT, bug INTEGER, worker TEXT, moves INTEGER)""")
    old.execute("""INSERT INTO jobs VALUES ('abc', 1, 'use-alpha', 'alpha', '{}', 'queued', 0.0, '', 0, NULL,
        NULL, NULL, NULL, NULL, '[]', '{}', 0, 0, NULL, NULL, NULL, 0)""")
    old.commit()
    old.close()
    store = JobStore(tmp_path / "jobs.sqlite")
    assert store.get("abc")["owner"] is None and store.get("abc")["state"] == "queued"
    assert [j["id"] for j in store.all(owner=None)] == ["abc"] and store.all(owner="ana") == []


def test_one_owners_twenty_jobs_do_not_starve_anothers_one(tmp_path):
    engine = make_engine(tmp_path)   # one compute worker
    jobs = Recorder(engine)
    engine.jobs.start()
    try:
        first = submit(engine, "A", 0, owner="A", hold=True)
        assert jobs.inside.wait(30)   # A's first job runs; A queues 19 more, then B its one
        ids = [first] + [submit(engine, "A", i, owner="A") for i in range(1, 20)]
        ids.append(submit(engine, "B", 0, model="beta", owner="B"))   # a cold model, even
        jobs.release.set()
        done = wait_all(engine, ids)
    finally:
        jobs.release.set()
        engine.jobs.stop()
    assert [j["state"] for j in done] == ["done"] * 21
    # The bound: a new owner's job is the next pick. B's one job starts right after A's first.
    assert jobs.started[:3] == [("A", 0), ("B", 0), ("A", 1)]
    assert [n for who, n in jobs.started if who == "A"] == list(range(20))   # A's own order holds


def test_owners_take_turns_whatever_order_they_queued_in(tmp_path):
    engine = make_engine(tmp_path)
    jobs = Recorder(engine)
    ids = [submit(engine, who, i, owner=who) for who in "ABC" for i in range(4)]   # A's all first
    engine.jobs.start()
    try:
        wait_all(engine, ids)
    finally:
        engine.jobs.stop()
    owners = [who for who, _ in jobs.started]
    assert owners == list("ABC" * 4)   # every window of 3 picks holds each owner once
    assert all(j["passed_over"] == 0 for j in engine.jobs.list())   # nobody's own job was skipped


def test_grouping_by_model_holds_across_owners(tmp_path):
    loads = []
    engine = make_engine(tmp_path, loads, max_passed_over=100)
    jobs = Recorder(engine)
    ids = []
    for i in range(12):   # A and B each queue alpha, beta, gamma, alpha... interleaved
        for who in "AB":
            ids.append(submit(engine, who, i, model=MODELS[i % 3], owner=who))
    engine.jobs.start()
    try:
        done = wait_all(engine, ids)
    finally:
        engine.jobs.stop()
    assert [j["state"] for j in done] == ["done"] * 24
    assert all(open(j["result"]).read() == f"{j['model']} {j['params']['who']} {j['params']['n']}" for j in done)
    # Each owner's turn goes to a job of the warm model: every model loads once, as for one owner.
    assert len(loads) == 3, loads
    owners = [who for who, _ in jobs.started]
    assert all(owners[k] != owners[k + 1] for k in range(23))   # and the owners still alternate


def test_the_fairness_bound_holds_within_each_owners_jobs(tmp_path):
    engine = make_engine(tmp_path, max_passed_over=2)
    jobs = Recorder(engine)
    ids = [submit(engine, who, i, model=MODELS[i % 3], owner=who) for i in range(9) for who in "AB"]
    engine.jobs.start()
    try:
        done = wait_all(engine, ids)
    finally:
        engine.jobs.stop()
    assert [j["state"] for j in done] == ["done"] * 18
    assert max(j["passed_over"] for j in done) == 2   # reached, never crossed
    owners = [who for who, _ in jobs.started]
    assert all(owners[k] != owners[k + 1] for k in range(17))


def test_the_queued_jobs_limit_per_owner(tmp_path):
    engine = make_engine(tmp_path, max_queued_per_owner=2)
    jobs = Recorder(engine)
    engine.jobs.start()
    try:
        running = submit(engine, "ana", 0, owner="ana", hold=True)
        assert jobs.inside.wait(30)
        queued = submit(engine, "ana", 1, owner="ana")   # one running, one queued: both count
        with pytest.raises(QueueLimit) as refused:
            submit(engine, "ana", 2, owner="ana")
        assert str(refused.value) == ("You already have 2 jobs queued; the limit is 2. "
                                      "Wait for one to finish or cancel one.")
        assert isinstance(refused.value, UserFacingError)
        others = [submit(engine, "ben", 0, owner="ben")] + [submit(engine, "local", i) for i in range(3)]
        engine.jobs.cancel(queued)
        again = submit(engine, "ana", 3, owner="ana")   # room again
        with pytest.raises(QueueLimit, match="You already have 2 jobs queued"):
            engine.jobs.retry(queued)   # queued again, it would count again
        jobs.release.set()
        done = wait_all(engine, [running, again] + others)
    finally:
        jobs.release.set()
        engine.jobs.stop()
    assert [j["state"] for j in done] == ["done"] * 6
    assert len(engine.jobs.list("ana")) == 3   # the refused submit left no job behind
    assert len(list((tmp_path / "data" / "jobs").iterdir())) == 7   # nor a folder
    assert engine.jobs.retry(queued)["state"] == "queued"   # room once the others are done


def test_the_upload_bytes_limit_per_owner(tmp_path):
    engine = make_engine(tmp_path, max_upload_bytes_per_owner=1_000_000)
    engine.jobs.register(JobKind("photo", "alpha", lambda ctx: str(ctx.input("file"))))
    first = engine.jobs.submit("photo", inputs={"file": COFFEE}, owner="ana")
    with pytest.raises(QueueLimit) as refused:
        engine.jobs.submit("photo", inputs={"file": ASTRONAUT}, owner="ana")   # 466706 + 791555 bytes
    assert str(refused.value) == ("Your queued jobs already hold 455.77 KiB of files and this one adds "
                                  "773.00 KiB; the limit is 976.56 KiB. Wait for one to finish or cancel one.")
    assert format_bytes(COFFEE.stat().st_size) == "455.77 KiB"
    engine.jobs.submit("photo", inputs={"file": COFFEE}, owner="ben")   # ben's room is his own
    engine.jobs.submit("photo", inputs={"file": ASTRONAUT})             # local use has no limit
    second = engine.jobs.submit("photo", inputs={"file": DATA / "camera.png"}, owner="ana")   # fits
    engine.jobs.cancel(first)   # a cancelled job's files no longer count
    engine.jobs.submit("photo", inputs={"file": ASTRONAUT}, owner="ana")
    assert engine.jobs.get(second)["state"] == "queued"
    too_big = Engine(tmp_path / "other", job_options={"max_upload_bytes_per_owner": 400_000})
    too_big.jobs.register(JobKind("photo", "alpha", lambda ctx: ""))
    with pytest.raises(QueueLimit, match=r"^This job's files come to 455.77 KiB; the limit for one person's "
                                         r"queued files is 390.62 KiB. Try a shorter or smaller file.$"):
        too_big.jobs.submit("photo", inputs={"file": COFFEE}, owner="ana")


def test_a_submit_in_flight_holds_its_place_under_the_limits(tmp_path):
    """Two uploads of one owner at once: the second is refused while the first's files are still
    being copied (it is not in the store yet)."""
    limits = Limits(max_jobs=2, max_bytes=1_000_000)
    stored = [{"id": "old"}]
    with limits.admit("ana", "new", COFFEE.stat().st_size, lambda owner: stored, lambda i: tmp_path / i):
        with pytest.raises(QueueLimit, match="You already have 2 jobs queued; the limit is 2"):
            limits.admit("ana", "third", 0, lambda owner: stored, lambda i: tmp_path / i).__enter__()
        stored.append({"id": "new"})   # stored now, still held: counted once, not twice
        with pytest.raises(QueueLimit, match="You already have 2 jobs"):
            limits.admit("ana", "third", 0, lambda owner: stored, lambda i: tmp_path / i).__enter__()
    stored.pop()
    with limits.admit("ana", "third", ASTRONAUT.stat().st_size, lambda owner: stored, lambda i: tmp_path / i):
        pass   # the first was cancelled meanwhile: room again, for jobs and for its bytes
    with pytest.raises(ValueError, match="max_queued_per_owner"):
        Limits(max_jobs=0)


def test_pause_holds_the_compute_lane_and_resume_starts_it(tmp_path, monkeypatch):
    engine = make_engine(tmp_path)
    jobs = Recorder(engine)
    engine.jobs.register(JobKind("fetch", "fetch-source", lambda ctx: str(ctx.input("file")), lane=IO))
    idle = threading.Event()   # the compute thread looked at the queue while paused and took nothing
    pick = engine.jobs._pick

    def watched(seat):
        job = pick(seat)
        if seat.lane == "compute" and job is None and engine.jobs.paused and engine.jobs.store.all(("queued",)):
            idle.set()
        return job

    monkeypatch.setattr(engine.jobs, "_pick", watched)
    engine.jobs.start()
    try:
        running = submit(engine, "ana", 0, owner="ana", hold=True)
        assert jobs.inside.wait(30)
        engine.jobs.pause()
        assert engine.jobs.paused
        waiting = submit(engine, "ben", 0, owner="ben")
        jobs.release.set()
        assert wait_all(engine, [running])[0]["state"] == "done"   # a running job finishes
        fetch = engine.jobs.submit("fetch", inputs={"file": COFFEE})
        assert wait_all(engine, [fetch])[0]["state"] == "done"     # the io lane goes on
        assert idle.wait(30)
        assert engine.jobs.get(waiting)["state"] == "queued" and jobs.started == [("ana", 0)]
        assert make_engine(tmp_path).jobs.paused   # a restart keeps the pause
        engine.jobs.resume()
        assert not engine.jobs.paused
        assert wait_all(engine, [waiting])[0]["state"] == "done"
    finally:
        jobs.release.set()
        engine.jobs.stop()
    assert jobs.started == [("ana", 0), ("ben", 0)]
    assert not make_engine(tmp_path).jobs.paused


def test_cancel_owner_cancels_every_queued_and_running_job_of_one_owner(tmp_path):
    engine = make_engine(tmp_path)
    jobs = Recorder(engine)
    engine.jobs.start()
    try:
        running = submit(engine, "ana", 0, owner="ana", hold=True)
        assert jobs.inside.wait(30)
        ana = [running] + [submit(engine, "ana", i, model=MODELS[i % 3], owner="ana") for i in range(1, 4)]
        ben = submit(engine, "ben", 0, owner="ben")
        assert engine.jobs.cancel_owner("ana") == 4
        assert engine.jobs.cancel_owner("nobody") == 0
        jobs.release.set()   # the running one stops at its next chunk boundary
        done = wait_all(engine, ana + [ben])
    finally:
        jobs.release.set()
        engine.jobs.stop()
    assert [j["state"] for j in done] == ["cancelled"] * 4 + ["done"]
    assert jobs.started == [("ana", 0), ("ben", 0)]
    assert engine.jobs.cancel_owner("ana") == 0   # nothing left to cancel


def test_turns_put_an_interrupted_job_first_and_forget_old_owners(monkeypatch):
    turns = Turns()
    waiting = [{"id": "a1", "seq": 1, "owner": "A", "state": "queued"},
               {"id": "b1", "seq": 2, "owner": "B", "state": "queued"},
               {"id": "c1", "seq": 3, "owner": "C", "state": "interrupted"}]
    assert [g[0]["id"] for g in turns.order(waiting)] == ["c1", "a1", "b1"]
    turns.picked("C")
    turns.picked("A")
    waiting[2]["state"] = "queued"
    assert [g[0]["id"] for g in turns.order(waiting)] == ["b1", "c1", "a1"]
    monkeypatch.setattr(job_shares, "KEEP_OWNERS", 4)
    for owner in ["D", "E", "F"]:
        turns.picked(owner)   # five owners remembered: the oldest half (C, A) is forgotten
    assert sorted(turns._last) == ["B", "D", "E", "F"] or sorted(turns._last) == ["D", "E", "F"]
    assert [g[0]["id"] for g in turns.order(waiting)] == ["a1", "b1", "c1"]   # all "never picked" now
