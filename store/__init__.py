"""The model store: models users bring, downloaded or found on disk, registered by name.

    store = ModelStore(data_dir, kinds=[StoreKind("sam", recognises), ...])
    entry = store.add("facebook/sam-vit-base", "auto", progress=lambda f, msg: ...)
    store.list(kind="sam")  # -> [{name, kind, source, path, bytes, sha256, added, ...}]
    store.remove("facebook/sam-vit-base")

Sources, all ending as a folder or a file on this machine: a hub id or hub URL (hub.py, into the
hub cache), any other https URL of one .safetensors file (http.py, resumable), a local folder or
.safetensors file (registered where it is; removing it never deletes it). Only safetensors are
fetched or accepted (safetensors.py). The store knows no model family: kinds come from the
capabilities (kinds.py), and whoever turns entries into engine models subscribes with
`connect(kind, added, removed)` (registry.py). build_engine makes one store per engine, keeps it
as engine.services["store"] and registers its download_model job kind (job.py).

Hub ONNX files (issue 20) are not registered models: each is declared by a capability as a HubFile
(manifest.py) and kept at manifest.local_path once its sha256, licence and graph are checked
(hub_files.py: status, fetch, bring, require; the download_hub_file job kind in hub_job.py).
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

from engine import JobCancelled, format_bytes

from . import disk, http, hub, hub_files
from .disk import folder_bytes
from .errors import ChecksumMismatch, DownloadInterrupted, ModelStoreError, Offline, Refused
from .job import JOB_CAPABILITY, JOB_MODEL, job_kind
from .hub_job import JOB_CAPABILITY as HUB_JOB_CAPABILITY, job_kind as hub_file_job_kind
from .kinds import CONFIG, CONFIG_PATTERNS, Kinds, StoreKind
from .network import CONNECT_TIMEOUT_S, reachable
from .progress import Progress, Reporter
from .registry import Registry
from .safetensors import check_single_file, check_single_file_name, sha256_file
from .sources import Source, parse_source

__all__ = ["ModelStore", "StoreKind", "ModelStoreError", "Offline", "Refused", "ChecksumMismatch",
           "DownloadInterrupted", "JOB_CAPABILITY", "JOB_MODEL", "CONFIG_PATTERNS", "job_kind", "folder_bytes",
           "parse_source", "of", "hub_files", "HUB_JOB_CAPABILITY", "hub_file_job_kind"]

log = logging.getLogger(__name__)


class ModelStore:
    """Registered models (models.json under the data dir) and the means to add and remove them."""

    def __init__(self, data_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                 endpoint: str | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 kinds: list[StoreKind] = ()):
        from huggingface_hub import constants

        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "models"
        self.downloads = self.root / "downloads"
        self.cache_dir = Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE)
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.registry = Registry(self.data_dir / "models.json")
        self.kinds = Kinds(kinds)
        self.hub = hub.Hub(self.cache_dir, self.endpoint, connect_timeout_s, self.root)

    # ---- what is registered ----

    @property
    def registry_path(self) -> Path:
        return self.registry.path

    @property
    def problems(self) -> dict[str, str]:
        """name -> why its engine registration failed."""
        return self.registry.problems

    def list(self, kind: str | None = None) -> list[dict]:
        """Registered models, oldest first, each with `exists` (its files are still there)."""
        return self.registry.list(kind)

    def pending(self) -> list[dict]:
        """Downloads started and not finished (a job in flight, or one a crash cut off)."""
        return self.registry.pending()

    def get(self, name: str) -> dict:
        entry = self.registry.get(name)
        if entry is None:
            raise KeyError(f"no model named {name!r} in the model store")
        return entry

    def __contains__(self, name: str) -> bool:
        return self.registry.get(name) is not None

    def disk_usage(self) -> dict:
        """Bytes of registered models: downloaded by Wimmel (removing deletes them) and local
        (the user's own files), and what is free where downloads land."""
        return disk.usage(self.list(), self.cache_dir, self.downloads, self.registry_path)

    def kind_names(self) -> list[str]:
        """The kinds a model can be added as, besides "auto"."""
        return self.kinds.names()

    def add_kind(self, kind: StoreKind) -> None:
        self.kinds.add(kind)

    def connect(self, kind: str | None, added: Callable[[dict], Any],
                removed: Callable[[dict], Any] | None = None) -> None:
        """Call added(entry) for every registered model of `kind` (None: all) now and whenever one
        is added, removed(entry) when one is removed; a failing callback is kept in `problems`."""
        self.registry.connect(kind, added, removed)

    # ---- adding ----

    def _name(self, source: Source, name: str | None) -> str:
        name = (name or "").strip() or source.default_name()
        if not re.fullmatch(r"[\w.\-/@ +]{1,120}", name):
            raise ModelStoreError(f"{name!r} is not a usable name: letters, digits, and . - _ / @ + only.")
        return name

    def _existing(self, name: str, source: Source) -> dict | None:
        """The entry already registered under this name for this source (adding twice is harmless);
        a ModelStoreError when the name is taken by another source."""
        entry = self.registry.get(name)
        if entry is None:
            return None
        if entry["source"] == source.describe() or Path(entry["path"]) == source.path:
            return entry
        raise ModelStoreError(f"A model named {name!r} is already registered (from {entry['source']}); "
                              "remove it first or choose another name.")

    def check(self, source: str, kind: str = "auto", *, name: str | None = None, revision: str | None = None) -> dict:
        """Everything that can be decided at once, before a download is queued: the source parses,
        the name is free, the network is there (or the model is already in the hub cache), a local
        path is a usable model. Returns {name, type, remote, cached}; raises ModelStoreError/Offline."""
        parsed = parse_source(source, revision, self.endpoint)
        kind = self.kinds.normalise(kind)
        name = self._name(parsed, name)
        existing = self._existing(name, parsed)
        info = {"name": name, "type": parsed.type, "remote": parsed.remote, "cached": existing is not None,
                "source": parsed.describe()}
        if existing is not None or not parsed.remote:
            if not parsed.remote:
                self._check_local(parsed, kind)
            return info
        if parsed.type == "url":
            http.check_url_name(parsed)
            why = reachable(parsed.url, self.connect_timeout_s)
            if why:
                raise Offline(http.offline_message(parsed, why, self.downloads))
            return info
        if parsed.type == "hub_file":
            check_single_file_name(parsed.filename)
        problem = self.hub.problem()
        if problem is not None:
            info["cached"] = self.hub.cached(parsed, need_weights=kind != CONFIG) is not None
            if not info["cached"]:
                raise Offline(self.hub.offline_message(parsed, problem))
        return info

    def add(self, source: str, kind: str = "auto", *, name: str | None = None, revision: str | None = None,
            sha256: str | None = None, allow_patterns: list[str] | str | None = None, variant: str | None = None,
            config: str | None = None, progress: Progress | None = None,
            cancelled: Callable[[], None] | None = None, retries: int = 2) -> dict:
        """Register a model (downloading it first when it is remote) and return its entry.

        kind: 'auto' (from the files) or one of kind_names(). sha256: expected hash of a single
        file (a URL or local file). allow_patterns: hub files to fetch instead of the automatic
        choice (pickle files are dropped either way). config: for a single-file checkpoint, a
        folder with the family's configs. progress(fraction, message).
        """
        parsed = parse_source(source, revision, self.endpoint)
        kind = self.kinds.normalise(kind)
        name = self._name(parsed, name)
        existing = self._existing(name, parsed)
        if existing is not None:
            return existing
        report = Reporter(progress, cancelled)
        expected = (sha256 or "").strip().lower() or None
        if expected and not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise ModelStoreError("A sha256 is 64 hexadecimal digits.")
        try:
            if parsed.type in ("folder", "file"):
                entry = self._add_local(parsed, kind, expected, report)
            elif parsed.type == "url":
                entry = http.add_url(self, parsed, name, kind, expected, report, retries)
            elif parsed.type == "hub_file":
                entry = hub.add_file(self, parsed, name, kind, expected, report)
            else:
                entry = hub.add_repo(self, parsed, name, kind, allow_patterns, variant, report)
        except (Offline, DownloadInterrupted):
            raise  # the partial download stays noted: the next attempt resumes it
        except Exception as exc:
            if not isinstance(exc, JobCancelled):
                self.forget_pending(name)
            raise
        entry.update(name=name, added=time.time())
        if config:
            entry["config"] = str(Path(config).expanduser().resolve())
        self.registry.put(entry)
        report(1.0, f"added {name}", force=True)
        log.info("model store: added %s (%s, %s) from %s", name, entry["kind"], format_bytes(entry["bytes"]),
                 entry["source"])
        self.registry.announce(entry, "added")
        return dict(entry, exists=True)

    def forget_pending(self, name: str) -> None:
        self.registry.forget_pending(name)

    def _check_local(self, source: Source, kind: str) -> str:
        """A local file or folder is a usable model of the kind; returns the kind ("auto" resolved)."""
        path = source.path
        if source.type == "file":
            check_single_file(path)
            return self.kinds.check_one_file(kind, lambda single, kind: (
                f"{path.name}: a single .safetensors file is registered as a {single} checkpoint; a {kind} model "
                "is a folder (config.json + weights)."))
        return self.kinds.check_folder(path, kind)

    def _add_local(self, source: Source, kind: str, expected: str | None, report: Reporter) -> dict:
        kind = self._check_local(source, kind)
        path = source.path
        sha = None
        if expected:
            if source.type != "file":
                raise ModelStoreError("A sha256 checks one file; a folder has no single hash.")
            sha = sha256_file(path, report.counter(path.stat().st_size, "checking sha256"))
            if sha != expected:
                raise ChecksumMismatch(f"{path.name}: sha256 is {sha}, not the {expected} given; the file is "
                                       "not the one expected (corrupt or another version).")
        return {"kind": kind, "source": str(path), "source_type": source.type, "path": str(path),
                "bytes": folder_bytes(path), "sha256": sha, "owned": False}

    # ---- removing ----

    def remove(self, name: str) -> dict:
        """Unregister a model. Files Wimmel downloaded are deleted; a user's own folder or file, and
        hub cache files that were there before, are left alone. Returns the entry with `freed_bytes`."""
        with self.registry.lock:
            data = self.registry.read()
            entry = data["models"].pop(name, None)
            if entry is None and name in data["pending"]:
                # An unfinished download: drop it and its partial file.
                record = data["pending"].pop(name)
                self.registry.write(data)
                freed = disk.delete_part(Path(record["part"]), self.downloads) if record.get("part") else 0
                return dict(record, freed_bytes=freed, pending=True)
            if entry is None:
                raise KeyError(f"no model named {name!r} in the model store")
            others = list(data["models"].values())
            self.registry.write(data)
        freed = disk.delete_files(entry, others, self.cache_dir, self.downloads) if entry.get("owned") else 0
        log.info("model store: removed %s, %s freed", name, format_bytes(freed))
        self.registry.announce(entry, "removed")
        return dict(entry, freed_bytes=freed)


def of(engine) -> ModelStore:
    """The engine's model store (build_engine makes it: engine.services["store"])."""
    try:
        return engine.services["store"]
    except KeyError:
        raise ModelStoreError("This engine has no model store: build it with build_engine (store=True).") from None
