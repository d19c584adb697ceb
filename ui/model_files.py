"""The "Get the model file" actions of a tab whose networks are hub files (store/hub_files.py):
download one as a job, or take a file the user has. The tabs of restore, swap, lip sync and
portrait animation all call these, and show their own status text after each."""
from __future__ import annotations

import functools
from typing import Callable

import gradio as gr

from engine import Engine, UserFacingError
from store import HUB_JOB_CAPABILITY, hub_files
from store.manifest import HubFile

from .jobs import JobStarted, start_job


def download(engine: Engine, entry: HubFile, status: Callable[[], str], progress: gr.Progress,
             accept_licence: bool = False, trust: bool = False) -> JobStarted | str:
    """The download of entry's file as a job (the tab follows it, then shows status()), or status()
    at once when the checked file is already here. Refusals (licence, hash policy, network) come
    now, before anything is queued."""
    if hub_files.check_fetch(entry, engine.data_dir, bool(accept_licence), bool(trust)):
        return status()
    params = {"name": entry.name, "accept_licence": bool(accept_licence), "trust_unlisted": bool(trust)}
    return start_job(engine, HUB_JOB_CAPABILITY, params, {}, progress, then=shown_after(status))


def shown_after(status: Callable[[], str]) -> Callable[[str], str]:
    """A download job's `then`: the tab's status text once the file is in place."""
    return functools.partial(_status_after, status)


def _status_after(status: Callable[[], str], _result: str) -> str:
    return status()


def bring(engine: Engine, entry: HubFile, file: str | None, accept_licence: bool = False,
          trust: bool = False) -> None:
    """Take the user's own .onnx file as entry's (checked, then put in place; theirs is left as it is)."""
    if not file:
        raise UserFacingError("Upload the .onnx file first.")
    hub_files.bring(entry, file, engine.data_dir, bool(accept_licence), trust_unlisted=bool(trust))
