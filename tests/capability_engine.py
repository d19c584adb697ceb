"""A real engine for one capability's tests: built the way the app builds one
(tabs.catalog.build_engine), but with only the models and job kinds the test names, no model store,
and its job workers running until the module's tests are done."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine import Engine, JobKind, ModelSpec
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
