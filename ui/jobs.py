"""Start a long job from a tab and follow it with a progress bar, for every tab alike."""
from __future__ import annotations

import gradio as gr

from engine import Engine

from .errors import job_error, user_errors
from .users import current_user


def start_job(engine: Engine, capability: str, params: dict, inputs: dict, progress: gr.Progress) -> str:
    """Queue a job as the current user's and follow it; an input the job could never use is
    refused before it queues."""
    with user_errors("start the job"):
        # QueueLimit (the user has too much queued) is a UserFacingError: a plain message.
        job_id = engine.jobs.submit(capability, params, inputs=inputs, owner=current_user())
    return follow_job(engine, job_id, progress)


def follow_job(engine: Engine, job_id: str, progress: gr.Progress) -> str:
    """Wait for a job with a progress bar; the result file, or a gr.Error saying what went wrong."""
    job = None
    for job in engine.jobs.follow(job_id):
        progress(job["progress"], desc=f"{job['note'] or job['state']} (job {job_id})")
    if job["state"] == "done":
        return job["result"]
    if job["state"] == "cancelled":
        raise gr.Error(f"Job {job_id} was cancelled.")
    raise gr.Error(f"Job {job_id} failed: {job_error(job)}")
