"""The download_hub_file job kind: hub_files.fetch on the job queue's io lane, so a tab's download
of a hub ONNX file shows progress, can be cancelled from the Jobs tab, survives a closed browser,
and, cut off by a restart, runs again and resumes its partial file. It shares download_model's
grouping key: the store's downloads run one at a time.

A job names the file by its manifest name only (params: name, accept_licence, trust_unlisted):
the URLs, hashes and signature come from the capabilities' manifests through `entries`, never
from a request, so a client cannot make the server fetch anything else or write anywhere else."""
from __future__ import annotations

import json
import os
from typing import Callable, Iterable

from engine import JobContext, JobKind

from . import hub_files
from .errors import ModelStoreError
from .job import JOB_MODEL
from .manifest import HubFile

JOB_CAPABILITY = "download_hub_file"
PARAMS = ("name", "accept_licence", "trust_unlisted")


def job_kind(data_dir: str | os.PathLike, entries: Callable[[], Iterable[HubFile]]) -> JobKind:
    """Job kind download_hub_file for the engine whose data dir is data_dir. entries() gives every
    HubFile the capabilities declare. params: name, and optionally accept_licence and trust_unlisted
    (booleans, as hub_files.fetch takes them). The result is a JSON file with hub_files.status()."""

    def lookup(name: str) -> HubFile:
        known = {entry.name: entry for entry in entries()}
        if name not in known:
            raise ModelStoreError(f"No hub file is named {name!r}; the capabilities declare "
                                  f"{', '.join(sorted(known)) or 'none'}.")
        return known[name]

    def check(params: dict, inputs: dict) -> None:
        """At submit: known parameters, a declared file, its licence accepted, some URL answering
        (or the file already here): what would fail later fails now, with the plain message."""
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise ModelStoreError(f"Bad {JOB_CAPABILITY} parameters: {', '.join(unknown)} (it takes "
                                  f"{', '.join(PARAMS)}).")
        entry = lookup(str(params.get("name") or ""))
        hub_files.check_fetch(entry, data_dir, bool(params.get("accept_licence")),
                              bool(params.get("trust_unlisted")))

    def run(ctx: JobContext) -> str:
        # The queue's defaults (chunk_frames...) reach every job's params: only ours count.
        params = {k: ctx.params[k] for k in PARAMS if k in ctx.params}
        entry = lookup(str(params.get("name") or ""))
        result = hub_files.fetch(entry, data_dir, ctx.progress, bool(params.get("accept_licence")),
                                 trust_unlisted=bool(params.get("trust_unlisted")), cancelled=ctx.check_cancelled)
        out = ctx.work_dir / "hub_file.json"
        out.write_text(json.dumps(result, indent=1))
        return str(out)

    return JobKind(JOB_CAPABILITY, JOB_MODEL, run, check=check, lane="io")
