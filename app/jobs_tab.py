"""Jobs tab: every long job with its state and progress; cancel, retry, download."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from engine import Engine, UserFacingError, format_bytes
from ui.errors import job_error
from ui.handlers import handler
from ui.times import local_time


API_FIELDS = ("id", "capability", "state", "progress", "created", "started", "finished", "result", "error",
              "resumed_from", "resumed_from_frame", "worker", "moves", "lane")


def _public(job: dict) -> dict:
    """A job as the API shows it: a bug's exception text stays in the server's log and jobs.sqlite."""
    return {**{k: job[k] for k in API_FIELDS}, "error": job_error(job)}


def _peak(job: dict) -> str:
    peaks = [r.get("peak_device_bytes") or 0 for r in job["runs"]]
    return format_bytes(max(peaks)) if peaks else ""


def _resumed(job: dict) -> str:
    if job["resumed_from"]:
        return job["resumed_from"]
    # A job resumed before resumed_from existed recorded only a frame.
    return f"frame {job['resumed_from_frame']}" if job["resumed_from_frame"] else ""


def job_rows(jobs: list[dict]) -> pd.DataFrame:
    columns = ["id", "capability", "lane", "state", "progress", "created", "started", "finished", "model",
               "peak memory", "resumed from", "worker (moves)", "note / error"]
    return pd.DataFrame([{
        "id": j["id"], "capability": j["capability"], "lane": j.get("lane", "compute"), "state": j["state"],
        "progress": f"{j['progress'] * 100:.0f}%", "created": local_time(j["created"]),
        "started": local_time(j["started"]), "finished": local_time(j["finished"]), "model": j["model"],
        "peak memory": _peak(j), "resumed from": _resumed(j),
        "worker (moves)": f"{j['worker']} ({j.get('moves') or 0})" if j.get("worker") else "this process",
        "note / error": job_error(j) or j["note"] or "",
    } for j in jobs], columns=columns)


# ---------------------------------------------------------------------------------- handlers

def list_jobs(engine: Engine) -> dict:
    """All jobs, newest first: id, capability, state, progress (0-1), created / started /
    finished (unix time), result (file path), error, resumed_from (where a resumed job picked
    up: "frame 48", "120.0 s" or "chunk 2"), resumed_from_frame (video jobs: the frame), worker
    (the cluster worker that ran it last, null when it ran in the app's own process) and moves (how
    often it moved to another worker after losing one) and lane ("compute", or "io" for model
    downloads, which run on threads of their own)."""
    return {"jobs": [_public(j) for j in engine.jobs.list()]}


def _act(action, job_id: str | None) -> dict:
    try:
        job = action((job_id or "").strip())
    except KeyError:
        raise UserFacingError(f"There is no job {job_id!r}.") from None
    return _public(job)


def cancel_job(engine: Engine, job_id: str) -> dict:
    """Cancel a job: a queued one at once, a running one at its next chunk.

    Args:
        job_id: the job's id, as list_jobs gives it.
    """
    return _act(engine.jobs.cancel, job_id)


def retry_job(engine: Engine, job_id: str) -> dict:
    """Queue a failed or cancelled job again; it resumes from its last finished chunk.

    Args:
        job_id: the job's id, as list_jobs gives it.
    """
    return _act(engine.jobs.retry, job_id)


def render(engine: Engine, listing: dict, selected: str | None):
    """The table, the job picker and the picked job's result file."""
    jobs = engine.jobs.list()
    ids = [j["id"] for j in jobs]
    chosen = next((j for j in jobs if j["id"] == selected), None)
    result = chosen["result"] if chosen and chosen["state"] == "done" else None
    return job_rows(jobs), gr.update(choices=ids, value=selected if selected in ids else None), result


# ---------------------------------------------------------------------------------- layout

def build(engine: Engine, demo: gr.Blocks) -> None:
    listed = handler(engine, list_jobs, "list the jobs")
    shown = handler(engine, render, "show the jobs")
    gr.Markdown("Long jobs run here one after another, grouped by the model they need. They survive a "
                "closed browser and a restart; an interrupted job resumes from its last finished chunk.")
    table = gr.Dataframe(label="Jobs", interactive=False, wrap=True)
    with gr.Row():
        pick = gr.Dropdown(label="Job", choices=[], allow_custom_value=True, scale=2)
        cancel = gr.Button("Cancel", variant="stop", scale=1)
        retry = gr.Button("Retry", scale=1)
    download = gr.File(label="Result", interactive=False)
    answer = gr.JSON(label="Last action", visible=False)
    with gr.Accordion("Raw list (the list_jobs API)", open=False):
        listing = gr.JSON(label="list_jobs")
        refresh = gr.Button("Refresh")

    outputs = [table, pick, download]
    refresh.click(listed, None, listing, api_name="list_jobs", concurrency_limit=4).then(
        shown, [listing, pick], outputs, api_visibility="private", show_progress="hidden")
    timer = gr.Timer(2.0)
    gr.on([timer.tick, demo.load], listed, None, listing, api_visibility="private",
          show_progress="hidden", concurrency_limit=4).then(
        shown, [listing, pick], outputs, api_visibility="private", show_progress="hidden")
    pick.change(shown, [listing, pick], outputs, api_visibility="private", show_progress="hidden")
    cancel.click(handler(engine, cancel_job, "cancel the job"), pick, answer, api_name="cancel_job").then(
        shown, [listing, pick], outputs, api_visibility="private")
    retry.click(handler(engine, retry_job, "retry the job"), pick, answer, api_name="retry_job").then(
        shown, [listing, pick], outputs, api_visibility="private")
