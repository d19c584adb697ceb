"""Start a long job from a tab and follow it with a progress bar, for every tab alike, without a
thread parked per waiting job.

A handler that queues a job returns `start_job(...)`: the job is submitted there (in the
handler's thread, as its user and request), and the handler hands back a JobStarted at once.
ui.handlers then follows the job on Gradio's event loop (follow_job: it sleeps between reads, so
a hundred people waiting on video jobs hold none of Gradio's 40 worker threads), and when the job
is done calls `then(result)`, a module-level function that shapes the handler's outputs from the
job's result file, in a worker thread for the moment it takes.
"""
from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import anyio
import gradio as gr

from engine import Engine
from engine.jobs import TERMINAL

from .errors import job_error, user_errors
from .users import current_user

POLL_S = 0.25      # how often a follower looks whether its job changed (a dict read)
REREAD_S = 2.0     # and reads the job even when it did not (a change made by another process)


@dataclass(frozen=True)
class JobStarted:
    """A queued job, handed back by a handler for ui.handlers to follow."""
    job_id: str
    progress: Any                                # the handler's gr.Progress
    then: Callable[[str], Any] | None = None     # the result file -> the handler's outputs


def start_job(engine: Engine, capability: str, params: dict, inputs: dict, progress: gr.Progress,
              then: Callable[[str], Any] | None = None) -> JobStarted:
    """Queue a job as the current user's; an input the job could never use is refused before it
    queues. The handler returns what this returns."""
    with user_errors("start the job"):
        # QueueLimit (the user has too much queued) is a UserFacingError: a plain message.
        job_id = engine.jobs.submit(capability, params, inputs=inputs, owner=current_user())
    return JobStarted(job_id, progress, then)


async def follow_job(engine: Engine, started: JobStarted) -> Any:
    """Wait for the job with a progress bar, then its outputs: `then(result)`, or the result file;
    a gr.Error saying what went wrong when it did not finish."""
    watch = _watch_of(engine)
    while True:
        job = await watch.changed(started.job_id)
        started.progress(job["progress"], desc=f"{job['note'] or job['state']} (job {started.job_id})")
        if job["state"] in TERMINAL:
            break
    if job["state"] == "cancelled":
        raise gr.Error(f"Job {started.job_id} was cancelled.", print_exception=False)
    if job["state"] != "done":
        raise gr.Error(f"Job {started.job_id} failed: {job_error(job)}", print_exception=False)
    if started.then is None:
        return job["result"]
    return await anyio.to_thread.run_sync(started.then, job["result"])


class JobWatch:
    """Reads the jobs that followers wait on, for all of them at once: every POLL_S, one
    worker-thread visit reads the jobs that changed (engine.jobs.version, a dict look) or were not
    read for REREAD_S, however many people follow them. The task ends when nobody waits."""

    def __init__(self, engine: Engine):
        self._engine = weakref.ref(engine)   # the module's table must not keep engines alive
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.read: dict[str, tuple[int, float]] = {}   # job id -> (version, when) of its last read
        self.task: asyncio.Task | None = None

    async def changed(self, job_id: str) -> dict:
        """The job, as soon as it is read again (at once for a job not read yet)."""
        future = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(job_id, []).append(future)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self.waiters:
                due = [job_id for job_id in self.waiters if self._due(job_id)]
                if due:
                    # A SQLite read may wait on a commit's lock: in a thread, never on the event loop.
                    for job_id, job in (await anyio.to_thread.run_sync(self._read, due)).items():
                        self._answer(job_id, job)
                await asyncio.sleep(POLL_S)
                for job_id in [j for j, futures in self.waiters.items() if all(f.done() for f in futures)]:
                    del self.waiters[job_id]   # its followers went away (a closed page cancels them)
        except Exception as exc:   # no follower may wait forever on a watch that stopped
            for job_id in list(self.waiters):
                self._answer(job_id, exc)
            raise

    def _answer(self, job_id: str, job: dict | Exception) -> None:
        for future in self.waiters.pop(job_id, []):
            if not future.done():
                future.set_exception(job) if isinstance(job, Exception) else future.set_result(job)

    @property
    def engine(self) -> Engine:
        return self._engine()

    def _due(self, job_id: str) -> bool:
        version, when = self.read.get(job_id, (None, 0.0))
        return version != self.engine.jobs.version(job_id) or time.monotonic() - when >= REREAD_S

    def _read(self, job_ids: list[str]) -> dict[str, dict | Exception]:
        jobs: dict[str, dict | Exception] = {}
        for job_id in job_ids:
            version = self.engine.jobs.version(job_id)   # before the read: a change after it is seen next tick
            try:
                jobs[job_id] = self.engine.jobs.get(job_id)
            except KeyError:
                jobs[job_id] = gr.Error(f"Job {job_id} was deleted.")
            if isinstance(jobs[job_id], dict) and jobs[job_id]["state"] not in TERMINAL:
                self.read[job_id] = (version, time.monotonic())
            else:
                self.read.pop(job_id, None)   # its followers stop here
        return jobs


_watches: dict[int, tuple[weakref.ref, JobWatch]] = {}   # id(engine) -> (the engine, its watch)


def _watch_of(engine: Engine) -> JobWatch:
    known = _watches.get(id(engine))
    if known is None or known[0]() is not engine:
        for key in [k for k, (ref, _) in _watches.items() if ref() is None]:
            del _watches[key]
        known = _watches[id(engine)] = (weakref.ref(engine), JobWatch(engine))
    return known[1]
