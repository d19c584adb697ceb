"""Jobs tab: every long job with its state and progress; cancel, retry, download.

With logins each user sees and acts on their own jobs only; an admin sees everyone's (with an
owner column), pauses and resumes the queue and cancels all jobs of a user (ui.users)."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from engine import Engine, UserFacingError, format_bytes
from ui.errors import job_error
from ui.handlers import handler
from ui.times import local_time
from ui.users import current_user, is_admin


API_FIELDS = ("id", "capability", "state", "progress", "created", "started", "finished", "result", "error",
              "resumed_from", "resumed_from_frame", "worker", "moves", "lane", "owner")


def _public(job: dict) -> dict:
    """A job as the API shows it: a bug's exception text stays in the server's log and jobs.sqlite."""
    return {**{k: job.get(k) for k in API_FIELDS}, "error": job_error(job)}


def _visible_jobs(engine: Engine) -> list[dict]:
    """The jobs the current user may see: all for an admin, else their own."""
    user = current_user()
    if is_admin(user):
        return engine.jobs.list()
    return engine.jobs.list(owner=user)


def _own_job(engine: Engine, job_id: str) -> str:
    """The job id, if the current user may act on it; a job of another user reads as no job at
    all, so ids cannot be probed."""
    job_id = (job_id or "").strip()
    user = current_user()
    try:
        job = engine.jobs.get(job_id)
    except KeyError:
        job = None
    if job is None or not (is_admin(user) or job.get("owner") == user):
        raise UserFacingError(f"There is no job {job_id!r}.")
    return job_id


def _admin_only(what: str) -> None:
    if not is_admin(current_user()):
        raise UserFacingError(f"Only an admin can {what}.")


def _peak(job: dict) -> str:
    peaks = [r.get("peak_device_bytes") or 0 for r in job["runs"]]
    return format_bytes(max(peaks)) if peaks else ""


def _resumed(job: dict) -> str:
    if job["resumed_from"]:
        return job["resumed_from"]
    # A job resumed before resumed_from existed recorded only a frame.
    return f"frame {job['resumed_from_frame']}" if job["resumed_from_frame"] else ""


def job_rows(jobs: list[dict], owners: bool = False) -> pd.DataFrame:
    # The lane is said only where it is not the usual one: one column fewer keeps the table readable.
    columns = ["id", *(["owner"] if owners else []), "capability", "state", "progress", "created",
               "started", "finished", "model",
               "peak memory", "worker (moves)", "note / error"]
    return pd.DataFrame([{
        "id": j["id"], "owner": j.get("owner") or "",
        "capability": j["capability"] + (f" ({j['lane']} lane)" if j.get("lane", "compute") != "compute" else ""),
        "state": j["state"] + (f", resumed at {_resumed(j)}" if _resumed(j) else ""),
        "progress": f"{j['progress'] * 100:.0f}%", "created": local_time(j["created"]),
        "started": local_time(j["started"]), "finished": local_time(j["finished"]), "model": j["model"],
        "peak memory": _peak(j),
        "worker (moves)": f"{j['worker']} ({j.get('moves') or 0})" if j.get("worker") else "this process",
        "note / error": job_error(j) or j["note"] or "",
    } for j in jobs], columns=columns)


# ---------------------------------------------------------------------------------- handlers

def list_jobs(engine: Engine) -> dict:
    """Your jobs (an admin's: everyone's), newest first: id, capability, state, progress (0-1),
    created / started / finished (unix time), result (file path), error, resumed_from (where a resumed job picked
    up: "frame 48", "120.0 s" or "chunk 2"), resumed_from_frame (video jobs: the frame), worker
    (the cluster worker that ran it last, null when it ran in the app's own process) and moves (how
    often it moved to another worker after losing one) and lane ("compute", or "io" for model
    downloads, which run on threads of their own) and owner (who started it)."""
    return {"jobs": [_public(j) for j in _visible_jobs(engine)]}


def _act(engine: Engine, action, job_id: str | None) -> dict:
    job_id = _own_job(engine, job_id)
    try:
        job = action(job_id)
    except KeyError:
        raise UserFacingError(f"There is no job {job_id!r}.") from None
    return _public(job)


def cancel_job(engine: Engine, job_id: str) -> dict:
    """Cancel one of your jobs: a queued one at once, a running one at its next chunk.

    Args:
        job_id: the job's id, as list_jobs gives it.
    """
    return _act(engine, engine.jobs.cancel, job_id)


def retry_job(engine: Engine, job_id: str) -> dict:
    """Queue one of your failed or cancelled jobs again; it resumes from its last finished chunk.

    Args:
        job_id: the job's id, as list_jobs gives it.
    """
    return _act(engine, engine.jobs.retry, job_id)


def pause_queue(engine: Engine) -> dict:
    """Admins only: start no further jobs until resume_queue; running jobs go on.

    Returns:
        {"paused": true}.
    """
    _admin_only("pause the queue")
    engine.jobs.pause()
    return {"paused": engine.jobs.paused}


def resume_queue(engine: Engine) -> dict:
    """Admins only: start queued jobs again after pause_queue.

    Returns:
        {"paused": false}.
    """
    _admin_only("resume the queue")
    engine.jobs.resume()
    return {"paused": engine.jobs.paused}


def cancel_user_jobs(engine: Engine, user: str) -> dict:
    """Admins only: cancel every queued and running job of one user.

    Args:
        user: the user's login name, as list_jobs gives it in owner.

    Returns:
        {"user": the name, "cancelled": how many jobs were cancelled}.
    """
    _admin_only("cancel another user's jobs")
    user = (user or "").strip()
    if not user:
        raise UserFacingError("Name the user whose jobs to cancel.")
    return {"user": user, "cancelled": engine.jobs.cancel_owner(user)}


def render(engine: Engine, listing: dict, selected: str | None):
    """The table, the job picker and the picked job's result file."""
    jobs = _visible_jobs(engine)
    ids = [j["id"] for j in jobs]
    chosen = next((j for j in jobs if j["id"] == selected), None)
    result = chosen["result"] if chosen and chosen["state"] == "done" else None
    return (job_rows(jobs, owners=is_admin(current_user())),
            gr.update(choices=ids, value=selected if selected in ids else None), result)


def admin_view(engine: Engine):
    """The admin controls, shown to admins only (the endpoints check again)."""
    admin = is_admin(current_user())
    paused = admin and engine.jobs.paused
    return gr.update(visible=admin), gr.update(value=f"**The queue is {'paused' if paused else 'running'}.**")


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
    with gr.Row(visible=False) as admin_row:
        queue_state = gr.Markdown()
        pause = gr.Button("Pause queue", scale=1)
        resume = gr.Button("Resume queue", scale=1)
        owner = gr.Textbox(label="User", placeholder="login name", scale=2)
        cancel_owner = gr.Button("Cancel all jobs of this user", variant="stop", scale=1)
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
    admin = handler(engine, admin_view, "show the admin controls")
    demo.load(admin, None, [admin_row, queue_state], api_visibility="private", show_progress="hidden")
    for button, fn, action, inputs in ((pause, pause_queue, "pause the queue", None),
                                       (resume, resume_queue, "resume the queue", None),
                                       (cancel_owner, cancel_user_jobs, "cancel the user's jobs", owner)):
        button.click(handler(engine, fn, action), inputs, answer, api_name=fn.__name__).then(
            admin, None, [admin_row, queue_state], api_visibility="private", show_progress="hidden").then(
            shown, [listing, pick], outputs, api_visibility="private")
