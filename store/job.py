"""The download_model job kind: an add that runs on the job queue, so it survives a closed browser
and, cut off by a restart, runs again and resumes its partial files (hub cache or .part file)."""
from __future__ import annotations

import json

from engine import JobContext, JobKind

from .errors import ModelStoreError
from .sources import NO_SOURCE

JOB_CAPABILITY = "download_model"
JOB_MODEL = "model-store"  # the job queue's grouping key: one download at a time
# ModelStore.add's options a job may carry besides source and kind.
OPTIONS = ("name", "revision", "sha256", "allow_patterns", "variant", "config")


def check(params: dict, inputs: dict) -> None:
    """A download_model request (at submit, and in the Models tab before anything else): a source,
    and no option ModelStore.add does not know."""
    if not str(params.get("source") or "").strip():
        raise ModelStoreError(NO_SOURCE)
    unknown = sorted(set(params) - {"source", "kind", *OPTIONS})
    if unknown:
        raise ModelStoreError(f"Bad download_model parameters: {', '.join(unknown)} "
                              f"(it takes source, kind, {', '.join(OPTIONS)}).")


def job_kind(store) -> JobKind:
    """Job kind download_model. params: source, kind, and optionally name, revision, sha256,
    allow_patterns, variant, config. The result is a JSON file with the registered entry."""

    def run(ctx: JobContext) -> str:
        params = ctx.params
        check({k: v for k, v in params.items() if k in ("source", "kind", *OPTIONS)}, {})
        options = {k: params[k] for k in OPTIONS if k in params}
        entry = store.add(params["source"], params.get("kind", "auto"), progress=ctx.progress,
                          cancelled=ctx.check_cancelled, **options)
        result = ctx.work_dir / "model.json"
        result.write_text(json.dumps(entry, indent=1))
        return str(result)

    return JobKind(JOB_CAPABILITY, JOB_MODEL, run, check=check, lane="io")  # never holds a video job behind it
