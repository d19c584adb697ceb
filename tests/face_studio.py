"""What the face studio's tests share (restore, swap, lip sync, portrait animation): a test graph
taken as a hub file's as a user's own file is, an engine as the app builds one with the face
detector, a job followed to its end, and a job cut off after its first chunk, then resumed."""
from __future__ import annotations

from typing import Callable

from analysers import face_detector
from engine.job_context import JobContext
from store import hub_files
from tabs.catalog import build_engine


def bring(data, entry, graph):
    """The graph at `graph` taken by the store as entry's file, as the tab's upload does: licence
    accepted, and trusted (its sha256 is not one of the real file's)."""
    return hub_files.bring(entry, graph, data, accept_licence=True, trust_unlisted=True)


def engine_with(data, specs: list, job_kinds: list, chunk_frames: int):
    """The detector and a capability's specs and job kinds (told the data dir, so a missing file
    is refused at submit), running jobs, chunk_frames frames per chunk."""
    return build_engine(data_dir=data, specs=face_detector.specs() + specs, job_kinds=job_kinds,
                        store=False, start_jobs=True, chunk_frames=chunk_frames)


def finish(engine, job_id: str) -> dict:
    """The job once it has ended."""
    return list(engine.jobs.follow(job_id))[-1]


def cut_then_resume(engine, monkeypatch, submit: Callable[[], str]) -> tuple[dict, dict]:
    """(the job as it failed, the job resumed): submit() queues it; it dies right after its first
    chunk's segment and checkpoint are on disk, then is retried with nothing in the way."""
    save = JobContext.save_checkpoint

    def save_then_crash(ctx, **values):
        save(ctx, **values)
        if values.get("chunks_done") == 1:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(JobContext, "save_checkpoint", save_then_crash)
    job_id = submit()
    cut = finish(engine, job_id)
    assert cut["state"] == "failed" and "simulated crash" in cut["error"]
    assert cut["checkpoint"]["chunks_done"] == 1
    monkeypatch.setattr(JobContext, "save_checkpoint", save)
    engine.jobs.retry(job_id)
    resumed = finish(engine, job_id)
    assert resumed["state"] == "done", resumed["error"]
    return cut, resumed
