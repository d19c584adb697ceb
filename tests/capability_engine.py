"""A real engine for one capability's tests: built the way the app builds one
(tabs.catalog.build_engine), but with only the models and job kinds the test names, no model store,
and its job workers running until the module's tests are done; a job followed to its end, and a
job cut off after a checkpoint, then resumed."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from engine import Engine, JobContext, JobKind, ModelSpec
from tabs.catalog import build_engine


@contextmanager
def capability_engine(folder: Path, specs: list[ModelSpec], job_kinds: list[JobKind], *,
                      job_threads: int | None = None) -> Iterator[Engine]:
    """An engine on folder/data with these specs and job kinds, its job workers started, and
    stopped on exit. job_threads: torch threads per job (None: the app's default, cores - 1)."""
    engine = build_engine(data_dir=Path(folder) / "data", specs=specs, job_kinds=job_kinds, store=False,
                          start_jobs=True, job_threads=job_threads)
    try:
        yield engine
    finally:
        engine.jobs.stop()


def finish(engine: Engine, job_id: str) -> dict:
    """The job once it has ended."""
    return list(engine.jobs.follow(job_id))[-1]


def cut_then_resume(engine: Engine, monkeypatch, submit: Callable[[], str], key: str = "chunks_done",
                    at: int = 1) -> tuple[dict, dict]:
    """(the job as it failed, the job resumed): submit() queues it; it dies right after the
    checkpoint whose `key` reaches `at` is on disk (by default its first chunk's), then is retried
    with nothing in the way."""
    save = JobContext.save_checkpoint

    def save_then_crash(ctx, **values):
        save(ctx, **values)
        if values.get(key) == at:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(JobContext, "save_checkpoint", save_then_crash)
    job_id = submit()
    cut = finish(engine, job_id)
    assert cut["state"] == "failed" and "simulated crash" in cut["error"]
    assert cut["checkpoint"][key] == at
    monkeypatch.setattr(JobContext, "save_checkpoint", save)
    engine.jobs.retry(job_id)
    resumed = finish(engine, job_id)
    assert resumed["state"] == "done", resumed["error"]
    return cut, resumed
