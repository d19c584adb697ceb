"""Every model the app ships (shared analysers and capabilities), and the one way to build an
engine from them: build_engine(options), used by launch.py, the tests, the benchmarks and the
notebook alike."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import analysers
from engine import Engine, JobKind, ModelSpec
from engine.doctor import Check
from engine.jobs import JOB_NICE
from engine.media.video_job import CHUNK_FRAMES

from store import ModelStore, StoreKind
from store import hub_file_job_kind
from store import job_kind as download_job_kind

from . import capabilities


def _sources(data_dir: str | None = None) -> list:
    """(specs, why unavailable) of every shared analyser and capability; a capability that loads
    hub files (hub_files() in its contract) looks for them in data_dir (None: the app's default)."""
    def specs_of(c):
        return functools.partial(c.specs, data_dir) if data_dir is not None and hasattr(c, "hub_files") else c.specs

    return ([(a.specs, a.unavailable_reason) for a in analysers.ANALYSERS]
            + [(specs_of(c), c.unavailable) for c in capabilities()])


@functools.lru_cache(maxsize=1)
def capability_of() -> dict[str, str]:
    """Model name -> the capability that serves it, as the UI names it ("Audio: Pitch"; a shared
    analyser: "shared (face_detector)"): every model the app ships, all installed, offline."""
    named = {}
    for analyser in analysers.ANALYSERS:
        named.update({s.name: f"shared ({analyser.__name__.rpartition('.')[2]})" for s in analyser.specs()})
    for c in capabilities():
        named.update({s.name: c.TITLE if c.GROUP is None else f"{c.GROUP}: {c.TITLE}" for s in c.specs()})
    return named


def default_specs(data_dir: str | None = None) -> list[ModelSpec]:
    return [spec for specs, _ in _sources(data_dir) for spec in specs()]


def hub_file_entries() -> list:
    """Every hub file (store.manifest.HubFile) the capabilities declare."""
    return [entry for c in capabilities() if hasattr(c, "hub_files") for entry in c.hub_files()]


def default_job_kinds(data_dir: str | None = None) -> list[JobKind]:
    """Every capability's job kinds; one that loads hub files checks them in data_dir at submit."""
    return [kind for c in capabilities()
            for kind in (c.job_kinds(data_dir) if data_dir is not None and hasattr(c, "hub_files") else c.job_kinds())]


def doctor_checks() -> list:
    """One doctor check per model: are its weights here, and what installs them."""
    def weights() -> list[Check]:
        checks = []
        for specs, why in _sources():
            reason = why()
            for spec in specs():
                checks.append(Check(f"weights: {spec.name}", "error" if reason else "ok",
                                    reason or spec.source, "./setup.sh" if reason else ""))
        return checks
    return [weights]


@dataclass
class EngineOptions:
    """What launch.py's flags say about the engine; tests and benchmarks set what they need."""
    data_dir: str = "data"
    budget: str | dict | None = None
    device: str = "auto"
    job_workers: int = 1
    io_workers: int = 2                         # io lane threads: model downloads (engine/job_lanes.py)
    max_queued_per_owner: int | None = None     # per login/session: queued+running jobs (None: no limit)
    max_upload_bytes_per_owner: int | None = None  # per login/session: bytes of queued jobs' input files
    job_threads: int | None = None              # torch threads per job on the CPU (None: cores - 1)
    job_nice: int = JOB_NICE                    # how much lower job threads run than clicks (0: the same)
    chunk_frames: int = CHUNK_FRAMES            # frames per chunk of video jobs (a job default)
    wait_timeout_s: float = 300.0
    specs: list[ModelSpec] | None = None        # None: every model of the catalog
    job_kinds: list[JobKind] | None = None      # None: every capability's job kinds
    store: bool = True                          # connect the model store (user-added models)
    start_jobs: bool = False                    # start the job workers (after every kind is known)
    extra: dict = field(default_factory=dict)   # further Engine keyword arguments


def build_engine(options: EngineOptions | None = None, **overrides) -> Engine:
    """An engine with every model spec and job kind registered, the model store connected, and
    (with start_jobs) its job workers running, so interrupted jobs resume."""
    options = options or EngineOptions()
    for key, value in overrides.items():
        setattr(options, key, value)
    engine = Engine(options.data_dir, budget=options.budget, device=options.device,
                    specs=default_specs(str(options.data_dir)) if options.specs is None else options.specs,
                    wait_timeout_s=options.wait_timeout_s,
                    job_options={"workers": options.job_workers, "io_workers": options.io_workers,
                                 "job_threads": options.job_threads,
                                 "job_nice": options.job_nice,
                                 "max_queued_per_owner": options.max_queued_per_owner,
                                 "max_upload_bytes_per_owner": options.max_upload_bytes_per_owner,
                                 "defaults": {"chunk_frames": options.chunk_frames}},
                    **options.extra)
    for kind in default_job_kinds(str(options.data_dir)) if options.job_kinds is None else options.job_kinds:
        engine.jobs.register(kind)
    if options.store:
        connect_store(engine)
    if options.start_jobs:
        engine.jobs.start()
    return engine


def connect_store(engine: Engine, **store_options) -> ModelStore:
    """The engine's model store (engine.services["store"]), made once, with the download_model job
    kind on the queue and every capability that takes user-added models (STORE_KIND) connected:
    its kind known to the store, and each stored model of it handed to store_added(engine, entry)
    now and as models are added, store_removed(engine, entry) as they are removed. Call before
    engine.jobs.start() so a download a restart cut off resumes at once."""
    if "store" in engine.services:
        return engine.services["store"]
    store = ModelStore(engine.data_dir, kinds=store_kinds(), **store_options)
    engine.services["store"] = store
    engine.jobs.register(download_job_kind(store))
    engine.jobs.register(hub_file_job_kind(engine.data_dir, hub_file_entries))
    for capability in _store_capabilities():
        store.connect(capability.STORE_KIND, functools.partial(capability.store_added, engine),
                      functools.partial(capability.store_removed, engine))
    return store


def _store_capabilities() -> list:
    return [c for c in capabilities() if getattr(c, "STORE_KIND", None)]


def store_kinds() -> list[StoreKind]:
    """The kinds of user-added model the capabilities take, in tab order ("auto" tries them so)."""
    return [StoreKind.of(c) for c in _store_capabilities()]


def worker_engine(data_dir: str, device: str = "auto", budget: str | dict | None = None,
                  chunk_frames: int = CHUNK_FRAMES, models: list[str] | None = None) -> Engine:
    """The engine of a Ray cluster worker (engine.cluster, engine_factory "tabs.catalog:worker_engine"):
    the app's specs (or just `models`) and job kinds on its one device; its own queue never starts,
    the head's sends it jobs. No model store: user-added models and downloads stay on the head."""
    specs, kinds = default_specs(data_dir), default_job_kinds(data_dir)
    if models is not None:   # the kinds too: a worker says it runs only what it can load
        specs = [spec for spec in specs if spec.name in models]
        kinds = [kind for kind in kinds if kind.model in models]
    return build_engine(EngineOptions(data_dir=data_dir, budget=budget, device=device, chunk_frames=chunk_frames,
                                      specs=specs, job_kinds=kinds, store=False, start_jobs=False))
