"""Lanes (issue 18): long jobs run in lanes, each with job threads of its own, so a multi-GB model
download never holds the video and audio jobs queued behind it.

- A job's lane is its kind's (JobKind.lane): "compute" (the default: jobs that run models) or
  "io" (model downloads and other jobs that mostly wait on the network or the disk).
- The compute lane keeps the scheduler's grouping by model and its fairness bound. Its threads
  are the queue's `workers` (--job-workers), or one per worker with a Ray cluster attached.
- The io lane has `io_workers` threads, always in this process (the cluster's head, where the
  model store lives); there they also run the compute kinds that no cluster worker has.
- Model limits still hold inside a lane: the store's downloads share one model key, so they run
  one at a time however many io threads there are; other io kinds run beside them.
- Passed-over counts and the last model used are per lane: a job never waits on another lane's.
- Within the compute lane, owners take turns (engine.job_shares); the io lane stays in order.
- Paused (JobQueue.pause, an admin's control): no compute job starts, anywhere (not even on the
  cluster head's io threads); running jobs finish. The io lane keeps going: downloads hold no GPU
  or CPU that users share, and installing a model is what an admin may well do while paused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

COMPUTE, IO = "compute", "io"
LANES = (COMPUTE, IO)


@dataclass(frozen=True)
class Seat:
    """One job thread: its lane, and the cluster worker it feeds jobs to (None: runs them here)."""
    lane: str
    worker: str | None = None


def seats(workers: int, io_workers: int, cluster=None) -> list[Seat]:
    """The queue's job threads: the compute lane's (`workers` here, or one per cluster worker),
    then the io lane's `io_workers`, which run here even with a cluster."""
    compute = [Seat(COMPUTE, w) for w in cluster.worker_ids()] if cluster is not None else [Seat(COMPUTE)] * workers
    return compute + [Seat(IO)] * io_workers


def lane_of(kinds: dict, job: dict) -> str:
    """A job's lane, from its kind; a kind this process does not know is compute's (a compute
    thread then fails the job, or a cluster worker that has the kind runs it)."""
    kind = kinds.get(job["capability"])
    return kind.lane if kind is not None else COMPUTE


def in_lane(lane: str, waiting: list[dict], kinds: dict) -> list[dict]:
    return [j for j in waiting if lane_of(kinds, j) == lane]


def waiting_for(seat: Seat, waiting: list[dict], kinds: dict, cluster=None, paused: bool = False) -> list[dict]:
    """The waiting jobs (oldest first) a thread of `seat` may take: its lane's. On a cluster's head
    the io lane also takes the oldest compute job of a kind no worker has (cluster.route(None)),
    as the head's one job thread did before lanes. Paused: no compute job at all."""
    if paused and seat.lane == COMPUTE:
        return []
    mine = in_lane(seat.lane, waiting, kinds)
    if cluster is not None and seat.worker is None and not paused:
        stranded, _ = cluster.route(None, in_lane(COMPUTE, waiting, kinds), set(), "grouped", 0)
        if stranded is not None:
            mine = sorted(mine + [stranded], key=lambda j: j["seq"])
    return mine


def choose(waiting: list[dict], busy: dict[str, int], limit: Callable[[str], int], warm: set,
           policy: str, max_passed_over: int) -> tuple[dict | None, list[dict]]:
    """(the job a thread here takes from one lane's waiting jobs, oldest first, or None; the jobs
    it passed over). Grouped: stay with a warm model unless a job starves; at most limit(model)
    jobs of a model run at once (`busy` counts those running here)."""
    ready = [j for j in waiting if busy.get(j["model"], 0) < limit(j["model"])]
    if not ready:
        return None, []
    if policy == "fifo":
        return ready[0], []
    # Jobs cut off by a crash go first: they already hold finished chunks and a place in line.
    interrupted = [j for j in ready if j["state"] == "interrupted"]
    starving = [j for j in ready if j["passed_over"] >= max_passed_over]
    if interrupted or starving:
        pick = (interrupted or starving)[0]
    else:
        pick = next((j for j in ready if j["model"] in warm), ready[0])
    return pick, [j for j in ready if j["seq"] < pick["seq"]]
