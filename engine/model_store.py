"""The model manager: models users bring, downloaded or found on disk, registered by name.

    store = ModelStore(data_dir)
    entry = store.add("stabilityai/sd-turbo", "diffusion", progress=lambda f, msg: ...)
    store.list(kind="diffusion")  # -> [{name, kind, source, path, bytes, sha256, added, ...}]
    store.remove("stabilityai/sd-turbo")

Sources, all ending as a folder or a file on this machine:
- a hub id (`org/name`, `org/name@revision`): `snapshot_download` into the hub cache (HF_HOME /
  HF_HUB_CACHE), with the hub's own resume of partial files; only safetensors weights and the
  configs are fetched (a diffusers repo: the weights of the components in model_index.json,
  no variants, no root-level single-file checkpoints). Sizes and LFS sha256 come from
  `HfApi().model_info(files_metadata=True)`; each downloaded LFS file is checked against it.
- a hub "resolve" URL of one file: `hf_hub_download` (same cache, same resume, same check).
- any other https URL of one `.safetensors` file: a streamed download into
  <data>/models/downloads with resume (HTTP Range on a `.part` file) and a sha256 check when the
  user gives one.
- a local folder or `.safetensors` file: registered where it is; removing it never deletes it.

Pickle checkpoints (.ckpt/.bin/.pt/.pth/.pkl) are refused as single files and never fetched
from a repo; loaders read folders with `use_safetensors=True`.

Offline (HF_HUB_OFFLINE) or unreachable, `add` fails at once (a sub-second connection check, no
retries) with a message naming what to download and where to put it; a hub model already in
the hub cache is registered from there without the network.

The registry is a JSON file under the data dir (models.json). Whoever turns entries into engine
models subscribes with `connect(kind, added, removed)`; downloads run as the job kind
`download_model` (`job_kind(store)`, or `attach(engine)` which builds the store for an engine
and registers the kind), so they survive a closed browser and resume after a restart.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import struct
import threading
import time
import urllib.parse
import weakref
from pathlib import Path
from typing import Any, Callable

from .devices import format_bytes
from .files import write_json
from .jobs import JobContext, JobKind, UserFacingError

log = logging.getLogger(__name__)

KINDS = ("diffusion", "sam", "config", "other")  # config: a repo's .json/.txt only (what a single file needs)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
CONFIG_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken")  # configs, tokenizers, vocabularies
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|ema|non_ema)\.", re.I)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_HUB_HOSTS = ("huggingface.co", "hf.co", "www.huggingface.co")
JOB_CAPABILITY = "download_model"
JOB_MODEL = "model-store"  # the job queue's grouping key: one download at a time
CONNECT_TIMEOUT_S = 0.8
_NOT_SAFETENSORS = (".onnx", ".gguf", ".zip", ".gz", ".tar", ".h5", ".msgpack", ".pb", ".tflite")

Progress = Callable[[float, str], None]


class ModelStoreError(Exception):
    """A failure whose message is meant for the user as it is: what went wrong and what to do."""


class Offline(ModelStoreError):
    """No network (HF_HUB_OFFLINE or the host is unreachable); the message says what to fetch."""


class Refused(ModelStoreError):
    """A file Wimmel will not load: pickle checkpoints, non-safetensors single files."""


class ChecksumMismatch(ModelStoreError):
    pass


class DownloadInterrupted(ModelStoreError):
    """The connection dropped; the partial file is kept and the next attempt resumes it."""


# ---------------------------------------------------------------------------------- sources

class Source:
    """A parsed source: type 'hub' (repo), 'hub_file' (one file of a repo), 'url', 'folder', 'file'."""

    def __init__(self, type: str, text: str, *, repo: str | None = None, revision: str | None = None,
                 filename: str | None = None, url: str | None = None, path: Path | None = None):
        self.type, self.text, self.repo, self.revision = type, text, repo, revision
        self.filename, self.url, self.path = filename, url, path

    @property
    def remote(self) -> bool:
        return self.type in ("hub", "hub_file", "url")

    def default_name(self) -> str:
        if self.type == "hub":
            return self.repo + (f"@{self.revision}" if self.revision else "")
        if self.type == "hub_file":
            return f"{self.repo}/{Path(self.filename).stem}"
        if self.type == "url":
            return Path(urllib.parse.unquote(urllib.parse.urlparse(self.url).path)).stem or "model"
        return self.path.stem if self.type == "file" else self.path.name

    def describe(self) -> str:
        if self.type == "hub":
            return self.repo + (f"@{self.revision}" if self.revision else "")
        if self.type == "hub_file":
            return f"{self.repo}/{self.filename}" + (f"@{self.revision}" if self.revision else "")
        return self.url or str(self.path)


def _hub_hosts(endpoint: str | None) -> tuple[str, ...]:
    hosts = list(_HUB_HOSTS)
    if endpoint:
        hosts.append(urllib.parse.urlparse(endpoint).netloc)
    return tuple(hosts)


def parse_source(text: str, revision: str | None = None, endpoint: str | None = None) -> Source:
    """What the user typed: a hub id, a URL, or a path on this machine."""
    text = (text or "").strip().strip('"').strip("'")
    if not text:
        raise ModelStoreError("Give a source: a hub id (org/name), the URL of a .safetensors file, "
                              "or a folder or file on this machine.")
    if text.startswith(("http://", "https://")):
        url = urllib.parse.urlparse(text)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        if url.netloc in _hub_hosts(endpoint) and parts and parts[0] not in ("datasets", "spaces"):
            for marker in ("resolve", "blob"):
                if marker in parts[2:3] and len(parts) >= 5:
                    return Source("hub_file", text, repo="/".join(parts[:2]), revision=revision or parts[3],
                                  filename="/".join(parts[4:]))
            if len(parts) == 2 or (len(parts) >= 4 and parts[2] == "tree"):
                rev = revision or (parts[3] if len(parts) >= 4 else None)
                return Source("hub", text, repo="/".join(parts[:2]), revision=rev)
            raise ModelStoreError(f"{text} is a hub page, not a model: give the model's id (org/name) or the "
                                  "'resolve' URL of one .safetensors file.")
        return Source("url", text, url=text)
    if text.startswith("hf://"):
        text = text[len("hf://"):]
    path = Path(os.path.expanduser(text))
    if path.exists():
        return Source("folder" if path.is_dir() else "file", text, path=path.resolve())
    repo, _, rev = text.partition("@")
    if _HUB_ID.match(repo) and not text.startswith((".", "/", "~")):
        return Source("hub", text, repo=repo, revision=revision or rev or None)
    raise ModelStoreError(f"{text}: no such folder or file here, and not a hub id (org/name).")


# ---------------------------------------------------------------------------------- files

def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now and as huggingface_hub read it at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or env.strip().upper() in ("1", "ON", "YES", "TRUE")


def reachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the URL's host opens within timeout_s (DNS included), else why not.
    Behind an HTTP(S) proxy the proxy is what must answer."""
    parsed = urllib.parse.urlparse(url)
    proxy = (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
             or os.environ.get("all_proxy")) if parsed.scheme == "https" else (
        os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy"))
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    if proxy and not any(parsed.hostname and parsed.hostname.endswith(h.strip().lstrip("*.")) for h in
                         no_proxy.split(",") if h.strip()):
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else "http://" + proxy)
    host = parsed.hostname
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    # getaddrinfo has no timeout of its own: a thread bounds the whole check.
    thread = threading.Thread(target=attempt, name="wimmel-reachable", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    return result[0]


def safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file; Refused when the file is anything else."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8:
            (length,) = struct.unpack("<Q", head)
            if 2 <= length <= 100 * 1024**2:
                raw = f.read(length)
                if len(raw) == length and raw[:1] == b"{":
                    try:
                        return json.loads(raw)
                    except ValueError:
                        pass
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise Refused(f"{path.name} is a pickle checkpoint (PyTorch zip/pickle), which can run code when "
                      "loaded: Wimmel reads only .safetensors. Get the model's .safetensors file instead.")
    raise Refused(f"{path.name} is not a safetensors file.")


def check_single_file(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise Refused(f"{path.name} is a pickle checkpoint ({path.suffix}), which can run code when loaded: "
                      "Wimmel reads only .safetensors. Get the model's .safetensors file instead.")
    if path.suffix.lower() != ".safetensors":
        raise Refused(f"{path.name}: a single-file model must be a .safetensors checkpoint.")
    safetensors_header(path)


def sha256_file(path: str | os.PathLike, progress: Callable[[int], None] | None = None,
                chunk: int = 4 * 1024**2) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under a folder (symlinks followed: a hub snapshot links to its blobs)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def detect_kind(path: Path) -> str:
    """'diffusion' (model_index.json or a single .safetensors), 'sam' (config.json model_type sam), 'other'."""
    if path.is_file():
        return "diffusion"
    if (path / "model_index.json").exists():
        return "diffusion"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return "other"
    if config.get("model_type") == "sam" or "SamModel" in (config.get("architectures") or []):
        return "sam"
    return "other"


def check_folder(path: Path, kind: str) -> None:
    """The folder has safetensors weights and is the kind of model it claims to be."""
    if kind == "config":
        if not (path / "model_index.json").exists() and not (path / "config.json").exists():
            raise ModelStoreError(f"{path} has neither model_index.json nor config.json.")
        return
    weights = [p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                         p.relative_to(path).parts)]
    if not any(p.name.endswith(".safetensors") for p in weights):
        pickles = [p.name for p in weights if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise Refused(f"{path} has only pickle weights ({', '.join(sorted(set(pickles))[:3])}), which can run "
                          "code when loaded: Wimmel loads folders with use_safetensors=True. Get the model's "
                          ".safetensors files.")
        raise ModelStoreError(f"{path} has no .safetensors weights.")
    found = detect_kind(path)
    if kind == "diffusion" and found != "diffusion":
        raise ModelStoreError(f"{path} is not a diffusers pipeline folder (no model_index.json).")
    if kind == "sam" and found != "sam":
        raise ModelStoreError(f"{path} is not a SAM model (its config.json has no model_type 'sam').")


def choose_repo_files(files: list[str], variant: str | None = None, model_index: dict | None = None) -> list[str]:
    """The files of a hub repo worth fetching: configs and safetensors weights.

    A diffusers repo (model_index.json): the safetensors of the listed components only, one set
    (no fp16/ema variants unless `variant` is asked for or a component has nothing else); the
    root-level single-file checkpoints some repos also carry (several GB each) are skipped.
    Any other repo: its root-level safetensors (sharded sets keep their index json).
    """
    configs = [f for f in files if any(fnmatch.fnmatch(Path(f).name, p) for p in CONFIG_PATTERNS)]
    weights = [f for f in files if f.endswith(".safetensors")]
    if model_index is not None or "model_index.json" in files:
        components = {k for k, v in (model_index or {}).items()
                      if not k.startswith("_") and isinstance(v, list) and v and v[0]}
        chosen = []
        by_folder: dict[str, list[str]] = {}
        for f in weights:
            folder = f.split("/")[0] if "/" in f else ""
            if folder and (not components or folder in components) and f.count("/") == 1:
                by_folder.setdefault(folder, []).append(f)
        for folder, group in by_folder.items():
            if variant:
                pick = [f for f in group if f".{variant}." in f] or [f for f in group if not _VARIANT.search(f)]
            else:
                pick = [f for f in group if not _VARIANT.search(f)] or [f for f in group if ".fp16." in f] or group
            chosen += pick
        configs = [f for f in configs if "/" not in f or f.split("/")[0] in (components or by_folder)]
        return sorted(set(configs + chosen))
    root = [f for f in weights if "/" not in f]
    if variant:
        root = [f for f in root if f".{variant}." in f] or root
    else:
        root = [f for f in root if not _VARIANT.search(f)] or root
    return sorted(set([f for f in configs if "/" not in f] + root))


# ---------------------------------------------------------------------------------- progress

class _Reporter:
    """Throttled (fraction, message) reports; checks for cancellation on every update."""

    def __init__(self, progress: Progress | None, cancelled: Callable[[], None] | None, every_s: float = 0.25):
        self.progress, self.cancelled, self.every_s = progress, cancelled, every_s
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        if self.cancelled is not None:
            self.cancelled()
        if self.progress is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self.every_s:
                return
            self._last = now
        self.progress(max(0.0, min(1.0, fraction)), message)

    def bytes(self, done: int, total: int, what: str, start: float = 0.0, span: float = 1.0,
              force: bool = False) -> None:
        fraction = done / total if total else 0.0
        force = force or done >= total  # the end of each phase is always reported
        self(start + span * fraction, f"{what}: {format_bytes(done)} of {format_bytes(total)}", force)


def _tqdm_class(report: _Reporter, what: str, span: float):
    """A tqdm class for huggingface_hub that feeds byte progress to `report` (nothing printed)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Bar(hf_tqdm):
        def __init__(self, *args, **kwargs):
            self._wimmel_name = kwargs.get("name") or ""
            self._wimmel_bytes = kwargs.get("unit") == "B"
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.n = kwargs.get("initial", 0) or 0

        def update(self, n=1):
            self.n += n or 0
            # The transfer bar's total is a guess (xet dedup); the reconstruct / file bar is exact.
            if self._wimmel_bytes and not self._wimmel_name.endswith(".transfer") and self.total:
                report.bytes(int(self.n), int(self.total), what, 0.0, span)
            elif report.cancelled is not None:
                report.cancelled()

        def close(self):
            pass

    return Bar


# ---------------------------------------------------------------------------------- the store

class ModelStore:
    """Registered models (models.json under the data dir) and the means to add and remove them."""

    def __init__(self, data_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                 endpoint: str | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S):
        from huggingface_hub import constants

        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "models"
        self.downloads = self.root / "downloads"
        self.registry_path = self.data_dir / "models.json"
        self.cache_dir = Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE)
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()
        self._subscribers: list[tuple[str | None, Callable, Callable | None]] = []
        self.problems: dict[str, str] = {}  # name -> why its engine registration failed

    # ---- the registry file ----

    def _read(self) -> dict:
        try:
            data = json.loads(self.registry_path.read_text())
        except FileNotFoundError:
            return {"version": 1, "models": {}, "pending": {}}
        except ValueError as exc:
            raise ModelStoreError(f"{self.registry_path} is not valid JSON ({exc}); fix or delete it.") from exc
        data.setdefault("models", {})
        data.setdefault("pending", {})
        return data

    def _write(self, data: dict) -> None:
        self.registry_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.registry_path, data, indent=1)

    def list(self, kind: str | None = None) -> list[dict]:
        """Registered models, oldest first, each with `exists` (its files are still there)."""
        with self._lock:
            models = list(self._read()["models"].values())
        out = []
        for entry in sorted(models, key=lambda e: e.get("added", 0)):
            if kind is None or entry.get("kind") == kind:
                entry = dict(entry, exists=Path(entry["path"]).exists())
                if entry["name"] in self.problems:
                    entry["problem"] = self.problems[entry["name"]]
                out.append(entry)
        return out

    def pending(self) -> list[dict]:
        """Downloads started and not finished (a job in flight, or one a crash cut off)."""
        with self._lock:
            return list(self._read()["pending"].values())

    def get(self, name: str) -> dict:
        with self._lock:
            entry = self._read()["models"].get(name)
        if entry is None:
            raise KeyError(f"no model named {name!r} in the model store")
        return dict(entry, exists=Path(entry["path"]).exists())

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._read()["models"]

    def disk_usage(self) -> dict:
        """Bytes of registered models: downloaded by Wimmel (removing deletes them) and local
        (the user's own files), and what is free where downloads land."""
        models = self.list()
        downloaded = sum(e["bytes"] for e in models if e.get("owned") and e["exists"])
        local = sum(e["bytes"] for e in models if not e.get("owned") and e["exists"])
        partial = 0
        if self.downloads.exists():
            partial = sum(p.stat().st_size for p in self.downloads.glob("*.part"))
        free = {}
        for label, folder in (("cache", self.cache_dir), ("downloads", self.downloads)):
            existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
            free[label] = shutil.disk_usage(existing).free if existing else None
        return {"models": len(models), "downloaded_bytes": downloaded, "local_bytes": local,
                "partial_bytes": partial, "total_bytes": downloaded + local,
                "free_bytes": free["cache"], "downloads_free_bytes": free["downloads"],
                "cache_dir": str(self.cache_dir), "downloads_dir": str(self.downloads),
                "registry": str(self.registry_path)}

    # ---- subscribers (engine registration) ----

    def connect(self, kind: str | None, added: Callable[[dict], Any],
                removed: Callable[[dict], Any] | None = None) -> None:
        """Call added(entry) for every registered model of `kind` (None: all) now and whenever one
        is added, removed(entry) when one is removed. A failing callback is logged and its message
        kept in `problems` (shown by list()); it never undoes the registration."""
        with self._lock:
            self._subscribers.append((kind, added, removed))
        for entry in self.list(kind):
            self._notify(added, entry)

    def _notify(self, callback: Callable, entry: dict) -> None:
        try:
            callback(entry)
            self.problems.pop(entry["name"], None)
        except Exception as exc:
            log.warning("model %s: %s", entry["name"], exc)
            self.problems[entry["name"]] = f"{type(exc).__name__}: {exc}"

    def _announce(self, entry: dict, event: str) -> None:
        for kind, added, removed in list(self._subscribers):
            if kind is None or kind == entry["kind"]:
                callback = added if event == "added" else removed
                if callback is not None:
                    self._notify(callback, entry)

    # ---- adding ----

    def _name(self, source: Source, name: str | None) -> str:
        name = (name or "").strip() or source.default_name()
        if not re.fullmatch(r"[\w.\-/@ +]{1,120}", name):
            raise ModelStoreError(f"{name!r} is not a usable name: letters, digits, and . - _ / @ + only.")
        return name

    def _existing(self, name: str, source: Source) -> dict | None:
        """The entry already registered under this name for this source (adding twice is harmless);
        a ModelStoreError when the name is taken by another source."""
        with self._lock:
            entry = self._read()["models"].get(name)
        if entry is None:
            return None
        if entry["source"] == source.describe() or Path(entry["path"]) == source.path:
            return dict(entry, exists=Path(entry["path"]).exists())
        raise ModelStoreError(f"A model named {name!r} is already registered (from {entry['source']}); "
                              "remove it first or choose another name.")

    def check(self, source: str, kind: str = "auto", *, name: str | None = None, revision: str | None = None) -> dict:
        """Everything that can be decided at once, before a download is queued: the source parses,
        the name is free, the network is there (or the model is already in the hub cache), a local
        path is a usable model. Returns {name, type, remote, cached}; raises ModelStoreError/Offline."""
        parsed = parse_source(source, revision, self.endpoint)
        kind = self._kind(kind)
        name = self._name(parsed, name)
        existing = self._existing(name, parsed)
        info = {"name": name, "type": parsed.type, "remote": parsed.remote, "cached": existing is not None,
                "source": parsed.describe()}
        if existing is not None or not parsed.remote:
            if not parsed.remote:
                self._check_local(parsed, kind)
            return info
        if parsed.type == "url":
            self._check_url_name(parsed)
            why = reachable(parsed.url, self.connect_timeout_s)
            if why:
                raise Offline(self._offline_message(parsed, name, why))
            return info
        if parsed.type == "hub_file":
            check_single_file_name(parsed.filename)
        if self._hub_problem() is not None:
            info["cached"] = self._cached_hub(parsed, need_weights=kind != "config") is not None
            if not info["cached"]:
                raise Offline(self._offline_message(parsed, name, self._hub_problem()))
        return info

    def _kind(self, kind: str | None) -> str:
        kind = (kind or "auto").strip().lower()
        if kind != "auto" and kind not in KINDS:
            raise ModelStoreError(f"Unknown kind {kind!r}; use auto or one of {', '.join(KINDS)}.")
        return kind

    def add(self, source: str, kind: str = "auto", *, name: str | None = None, revision: str | None = None,
            sha256: str | None = None, allow_patterns: list[str] | str | None = None, variant: str | None = None,
            config: str | None = None, progress: Progress | None = None,
            cancelled: Callable[[], None] | None = None, retries: int = 2) -> dict:
        """Register a model (downloading it first when it is remote) and return its entry.

        kind: 'auto' (from the files), 'diffusion', 'sam' or 'other'. sha256: expected hash of a
        single file (a URL or local file). allow_patterns: hub files to fetch instead of the
        automatic choice (pickle files are dropped either way). config: for a single-file diffusion
        checkpoint, a folder with the family's diffusers configs. progress(fraction, message).
        """
        parsed = parse_source(source, revision, self.endpoint)
        kind = self._kind(kind)
        name = self._name(parsed, name)
        existing = self._existing(name, parsed)
        if existing is not None:
            return existing
        report = _Reporter(progress, cancelled)
        expected = (sha256 or "").strip().lower() or None
        if expected and not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise ModelStoreError("A sha256 is 64 hexadecimal digits.")
        try:
            if parsed.type in ("folder", "file"):
                entry = self._add_local(parsed, kind, expected, report)
            elif parsed.type == "url":
                entry = self._add_url(parsed, name, kind, expected, report, retries)
            elif parsed.type == "hub_file":
                entry = self._add_hub_file(parsed, name, kind, expected, report)
            else:
                entry = self._add_hub(parsed, name, kind, allow_patterns, variant, report)
        except (Offline, DownloadInterrupted):
            raise  # the partial download stays noted: the next attempt resumes it
        except Exception as exc:
            if not _is_cancel(exc):
                self.forget_pending(name)
            raise
        entry.update(name=name, added=time.time())
        if config:
            entry["config"] = str(Path(config).expanduser().resolve())
        with self._lock:
            data = self._read()
            data["models"][name] = entry
            data["pending"].pop(name, None)
            self._write(data)
        report(1.0, f"added {name}", force=True)
        log.info("model store: added %s (%s, %s) from %s", name, entry["kind"], format_bytes(entry["bytes"]),
                 entry["source"])
        self._announce(entry, "added")
        return dict(entry, exists=True)

    def _pending(self, name: str, record: dict) -> dict:
        """Note a download in flight; a re-run (after a crash) gets back what the first run noted."""
        with self._lock:
            data = self._read()
            if name in data["pending"] and data["pending"][name].get("source") == record.get("source"):
                return data["pending"][name]
            data["pending"][name] = dict(record, name=name, started=time.time())
            self._write(data)
            return data["pending"][name]

    def forget_pending(self, name: str) -> None:
        with self._lock:
            data = self._read()
            if data["pending"].pop(name, None) is not None:
                self._write(data)

    # -- local

    def _check_local(self, source: Source, kind: str) -> str:
        path = source.path
        if source.type == "file":
            check_single_file(path)
            found = "diffusion"
            if kind not in ("auto", "diffusion", "other"):
                raise ModelStoreError(f"{path.name}: a single .safetensors file is registered as a diffusion "
                                      f"checkpoint; a {kind} model is a folder (config.json + weights).")
        else:
            found = detect_kind(path)
            check_folder(path, found if kind == "auto" else kind)
        return found if kind == "auto" else kind

    def _add_local(self, source: Source, kind: str, expected: str | None, report: _Reporter) -> dict:
        kind = self._check_local(source, kind)
        path = source.path
        sha = None
        if expected:
            if source.type != "file":
                raise ModelStoreError("A sha256 checks one file; a folder has no single hash.")
            size = path.stat().st_size
            done = [0]

            def step(n: int) -> None:
                done[0] += n
                report.bytes(done[0], size, "checking sha256")

            sha = sha256_file(path, step)
            if sha != expected:
                raise ChecksumMismatch(f"{path.name}: sha256 is {sha}, not the {expected} given; the file is "
                                       "not the one expected (corrupt or another version).")
        return {"kind": kind, "source": str(path), "source_type": source.type, "path": str(path),
                "bytes": folder_bytes(path), "sha256": sha, "owned": False}

    # -- plain URL

    @staticmethod
    def _check_url_name(source: Source) -> None:
        """Refuse what the URL's name already tells; a name without a known suffix (an API download
        link) is decided by the downloaded bytes."""
        name = Path(urllib.parse.unquote(urllib.parse.urlparse(source.url).path)).name
        if Path(name).suffix.lower() in PICKLE_SUFFIXES + _NOT_SAFETENSORS:
            check_single_file_name(name)

    def _add_url(self, source: Source, name: str, kind: str, expected: str | None, report: _Reporter,
                 retries: int) -> dict:
        self._check_url_name(source)
        if kind not in ("auto", "diffusion", "other"):
            raise ModelStoreError(f"A URL gives one .safetensors file, registered as a diffusion checkpoint; "
                                  f"a {kind} model comes from a hub id or a folder.")
        why = reachable(source.url, self.connect_timeout_s)
        if why:
            # A partial file is kept for when the network is back.
            raise Offline(self._offline_message(source, name, why))
        self.downloads.mkdir(parents=True, exist_ok=True)
        url_name = Path(urllib.parse.unquote(urllib.parse.urlparse(source.url).path)).name
        slot = hashlib.sha1(source.url.encode()).hexdigest()[:10]
        part = self.downloads / f"{slot}.part"
        meta_path = part.with_suffix(".json")
        self._pending(name, {"source": source.describe(), "type": "url", "part": str(part)})
        attempt = 0
        while True:
            try:
                final_name, sha = self._stream(source.url, part, meta_path, expected, report)
                break
            except DownloadInterrupted:
                attempt += 1
                if attempt > retries:
                    raise
                log.warning("download of %s interrupted; resuming (%d of %d)", source.url, attempt, retries)
        final_name = Path(final_name or url_name or slot).stem + ".safetensors"
        target = self.downloads / final_name
        if target.exists():
            target = self.downloads / f"{Path(final_name).stem}-{slot}.safetensors"
        try:
            safetensors_header(part)  # the bytes decide, whatever the name says
        except Refused:
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            self.forget_pending(name)
            raise
        os.replace(part, target)
        meta_path.unlink(missing_ok=True)
        return {"kind": "diffusion" if kind == "auto" else kind, "source": source.describe(), "source_type": "url",
                "path": str(target), "bytes": target.stat().st_size, "sha256": sha, "owned": True}

    def _stream(self, url: str, part: Path, meta_path: Path, expected: str | None,
                report: _Reporter) -> tuple[str | None, str]:
        """Download url into part, resuming what is there; returns (file name from the server, sha256)."""
        import httpx

        meta = {}
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError:
                meta = {}
        if meta.get("url") != url:
            part.unlink(missing_ok=True)
            meta = {"url": url}
        start = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
            if meta.get("etag") or meta.get("last_modified"):
                headers["If-Range"] = meta.get("etag") or meta["last_modified"]
        timeout = httpx.Timeout(10.0, read=60.0)
        digest = hashlib.sha256()
        try:
            with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
                if response.status_code == 416 and start:
                    # Nothing left to send: the part may already be whole; its header check decides.
                    total = _content_range_total(response.headers.get("Content-Range")) or start
                    if total == start:
                        return meta.get("filename"), self._hash_part(part, expected, report)
                    part.unlink(missing_ok=True)
                    raise DownloadInterrupted("the server refused to resume; starting again")
                if response.status_code not in (200, 206):
                    raise ModelStoreError(f"{url}: the server answered {response.status_code} "
                                          f"{response.reason_phrase}.")
                disposition = _disposition_name(response.headers.get("Content-Disposition"))
                if disposition and Path(disposition).suffix.lower() in PICKLE_SUFFIXES + _NOT_SAFETENSORS:
                    check_single_file_name(disposition)
                meta.update(etag=response.headers.get("ETag"), last_modified=response.headers.get("Last-Modified"),
                            filename=disposition or meta.get("filename"))
                meta_path.write_text(json.dumps(meta))
                length = int(response.headers.get("Content-Length") or 0)
                if response.status_code == 206:
                    total = _content_range_total(response.headers.get("Content-Range")) or start + length
                    mode = "ab"
                    self._hash_existing(part, digest, report, total)
                    log.info("resuming %s at %s of %s", url, format_bytes(start), format_bytes(total))
                else:
                    start, total, mode = 0, length, "wb"
                done = start
                with open(part, mode) as out:
                    for block in response.iter_bytes():  # as it arrives: a cut loses nothing received
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        report.bytes(done, total, "downloading")
                if total and done < total:
                    raise DownloadInterrupted(f"the connection closed at {format_bytes(done)} of "
                                              f"{format_bytes(total)}; the next attempt resumes from there")
        except (httpx.TransportError, OSError) as exc:
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) and not part.exists():
                raise Offline(f"Cannot reach {urllib.parse.urlparse(url).netloc}: {exc}. Download {url} with a "
                              f"browser and put the file in {self.downloads} (or anywhere), then add its path.") from exc
            have = part.stat().st_size if part.exists() else 0
            raise DownloadInterrupted(f"the download of {url} stopped at {format_bytes(have)} ({exc}); "
                                      "adding it again resumes from there") from exc
        sha = digest.hexdigest()
        report(1.0, "downloaded", force=True)
        if expected and sha != expected:
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{url}: the downloaded file's sha256 is {sha}, not the {expected} given; "
                                   "it was deleted. Check the hash, or the URL points at another file.")
        return meta.get("filename"), sha

    @staticmethod
    def _hash_existing(part: Path, digest, report: _Reporter, total: int) -> None:
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            report.bytes(done[0], total, "checking the partial download")

        with open(part, "rb") as f:
            while block := f.read(4 * 1024**2):
                digest.update(block)
                step(len(block))

    def _hash_part(self, part: Path, expected: str | None, report: _Reporter) -> str:
        digest = hashlib.sha256()
        self._hash_existing(part, digest, report, part.stat().st_size)
        sha = digest.hexdigest()
        if expected and sha != expected:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(f"the downloaded file's sha256 is {sha}, not the {expected} given; it was deleted.")
        return sha

    # -- hub

    def _hub_problem(self) -> str | None:
        """Why the hub cannot be used right now (HF_HUB_OFFLINE, or no connection), or None."""
        if is_offline():
            return "HF_HUB_OFFLINE is set"
        return reachable(self.endpoint, self.connect_timeout_s)

    def _local_only(self) -> bool:
        return is_offline()

    def _cached_snapshot(self, repo: str, revision: str | None) -> Path | None:
        """The repo's snapshot folder in the hub cache, from its refs: plain file checks, so an
        offline answer never waits for the hub client's modules to import."""
        folder = self.cache_dir / ("models--" + repo.replace("/", "--"))
        rev = revision or "main"
        commit = rev
        if not re.fullmatch(r"[0-9a-f]{40}", rev):
            try:
                commit = (folder / "refs" / rev).read_text().strip()
            except OSError:
                return None
        snapshot = folder / "snapshots" / commit
        return snapshot if snapshot.is_dir() else None

    def _cached_hub(self, source: Source, allow_patterns=None, need_weights: bool = True) -> str | None:
        """The snapshot folder (a hub_file: the file) when it is already in the hub cache."""
        snapshot = self._cached_snapshot(source.repo, source.revision)
        if snapshot is None:
            return None
        if source.type == "hub_file":
            path = snapshot / source.filename
            return str(path) if path.is_file() else None
        if allow_patterns:
            from huggingface_hub import snapshot_download

            try:
                # The hub's own check that the files asked for are all there (its cached file listing).
                snapshot_download(source.repo, revision=source.revision, cache_dir=self.cache_dir,
                                  allow_patterns=allow_patterns, local_files_only=True)
            except Exception:
                return None
        # Only finished files get a link in a snapshot; the kind's own check follows (check_folder).
        return str(snapshot) if not need_weights or any(snapshot.rglob("*.safetensors")) else None

    def _offline_message(self, source: Source, name: str, why: str) -> str:
        if source.type == "url":
            return (f"Cannot download {source.url}: {why}. Download that file on a machine with internet, "
                    f"put it in {self.downloads} (or anywhere on this machine) and add the file's path here.")
        if source.type == "hub_file":
            rev = f" --revision {source.revision}" if source.revision else ""
            return (f"Cannot download {source.filename} of {source.repo} from the hub: {why}. On a machine with "
                    f"internet run `hf download {source.repo} {source.filename}{rev} --local-dir {source.repo.split('/')[-1]}`, "
                    f"copy that file here and add its path; or copy the hub cache folder "
                    f"models--{source.repo.replace('/', '--')} into {self.cache_dir} and add {source.text} again.")
        rev = f" --revision {source.revision}" if source.revision else ""
        local = source.repo.split("/")[-1]
        return (f"Cannot download {source.repo} from the hub: {why}. On a machine with internet run "
                f"`hf download {source.repo}{rev} --include '*.json' '*.txt' '*.safetensors' --local-dir {local}`, "
                f"copy the folder {local} to this machine (for example into {self.root}) and add that folder here; "
                f"or copy the hub cache folder models--{source.repo.replace('/', '--')} into {self.cache_dir} and add "
                f"{source.describe()} again.")

    def _hub_error(self, exc: Exception, source: Source) -> ModelStoreError:
        from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, RepositoryNotFoundError,
                                            RevisionNotFoundError)

        what = source.describe()
        if isinstance(exc, GatedRepoError):
            return ModelStoreError(f"{source.repo} is gated: accept its license on {self.endpoint}/{source.repo} and "
                                   "log in here (`hf auth login`, or set HF_TOKEN), then add it again.")
        if isinstance(exc, RepositoryNotFoundError):
            return ModelStoreError(f"There is no model {source.repo} on the hub (or it is private: log in with "
                                   "`hf auth login` or set HF_TOKEN).")
        if isinstance(exc, RevisionNotFoundError):
            return ModelStoreError(f"{source.repo} has no revision {source.revision!r}.")
        if isinstance(exc, EntryNotFoundError):
            return ModelStoreError(f"{what}: no such file in the repo.")
        return ModelStoreError(f"Could not fetch {what}: {type(exc).__name__}: {exc}")

    def _free_space_for(self, need: int) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.cache_dir).free
        if need > free:
            raise ModelStoreError(f"Not enough disk space: the download needs {format_bytes(need)}, "
                                  f"{self.cache_dir} has {format_bytes(free)} free.")

    def _verify_lfs(self, folder: Path, files: dict[str, dict], report: _Reporter, start: float) -> dict[str, str]:
        """sha256 of each LFS file against the hub's, over the files' bytes (a mismatch deletes the blob)."""
        checked: dict[str, str] = {}
        todo = {f: meta for f, meta in files.items() if meta.get("sha256")}
        total = sum(meta["size"] or 0 for meta in todo.values()) or 1
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            report.bytes(done[0], total, "checking sha256", start, 1.0 - start)

        for filename, meta in todo.items():
            path = folder / filename
            sha = sha256_file(path, step)
            if sha != meta["sha256"]:
                blob = Path(os.path.realpath(path))
                path.unlink(missing_ok=True)
                if blob != path and str(blob).startswith(str(self.cache_dir)):
                    blob.unlink(missing_ok=True)
                raise ChecksumMismatch(f"{filename}: sha256 {sha} differs from the hub's {meta['sha256']}; the "
                                       "file was deleted. Add the model again to download it anew.")
            checked[filename] = sha
        return checked

    def _add_hub(self, source: Source, name: str, kind: str, allow_patterns, variant: str | None,
                 report: _Reporter) -> dict:
        problem = self._hub_problem()
        if problem is not None:
            folder = self._cached_hub(source, allow_patterns, need_weights=kind != "config")
            if folder is None:
                raise Offline(self._offline_message(source, name, problem))
            path = Path(folder)
            found = detect_kind(path)
            kind = found if kind == "auto" else kind
            check_folder(path, kind)
            record = self._pending(name, {"source": source.describe(), "type": "hub"})
            return {"kind": kind, "source": source.describe(), "source_type": "hub", "repo": source.repo,
                    "revision": path.name, "path": str(path), "bytes": folder_bytes(path), "sha256": None,
                    "owned": bool(record.get("owned", False))}
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # (a second to import, once)

        api = HfApi(endpoint=self.endpoint)
        report(0.0, f"asking the hub about {source.repo}", force=True)
        try:
            info = api.model_info(source.repo, revision=source.revision, files_metadata=True, timeout=15)
        except Exception as exc:
            raise self._hub_error(exc, source) from exc
        commit = info.sha
        siblings = {s.rfilename: {"size": s.size, "sha256": s.lfs.sha256 if s.lfs else None}
                    for s in info.siblings or []}
        if kind == "config" and not allow_patterns:
            allow_patterns = list(CONFIG_PATTERNS)
        if allow_patterns:
            patterns = [allow_patterns] if isinstance(allow_patterns, str) else list(allow_patterns)
            files = [f for f in siblings if any(fnmatch.fnmatch(f, p) for p in patterns)]
        else:
            model_index = None
            if "model_index.json" in siblings:
                try:
                    index_path = hf_hub_download(source.repo, "model_index.json", revision=commit,
                                                 cache_dir=self.cache_dir, endpoint=self.endpoint)
                    model_index = json.loads(Path(index_path).read_text())
                except Exception as exc:
                    raise self._hub_error(exc, source) from exc
            files = choose_repo_files(list(siblings), variant, model_index)
        skipped = [f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES]
        files = [f for f in files if f not in skipped]
        if skipped:
            log.warning("%s: not fetching pickle files %s", source.repo, skipped)
        if kind == "config":
            if not files:
                raise ModelStoreError(f"{source.repo}: no .json/.txt files matched {allow_patterns}.")
        elif not any(f.endswith(".safetensors") for f in files):
            pickles = [f for f in siblings if Path(f).suffix.lower() in PICKLE_SUFFIXES]
            if pickles:
                raise Refused(f"{source.repo} has only pickle weights ({', '.join(pickles[:3])}), which can run "
                              "code when loaded; Wimmel reads only .safetensors. Look for a safetensors version "
                              "of this model.")
            raise ModelStoreError(f"{source.repo}: no .safetensors weights matched"
                                  + (f" {allow_patterns}" if allow_patterns else "") + ".")
        chosen = {f: siblings[f] for f in files}
        total = sum(meta["size"] or 0 for meta in chosen.values())
        cached_before = self._cached_files(source.repo, commit, files)
        record = self._pending(name, {"source": source.describe(), "type": "hub", "repo": source.repo,
                                      "revision": commit, "owned": len(cached_before) < len(files)})
        self._free_space_for(total - sum(chosen[f]["size"] or 0 for f in cached_before))
        report(0.0, f"downloading {len(files)} files, {format_bytes(total)}", force=True)
        try:
            folder = snapshot_download(source.repo, revision=commit, cache_dir=self.cache_dir,
                                       allow_patterns=files, endpoint=self.endpoint,
                                       tqdm_class=_tqdm_class(report, "downloading", 0.9))
        except ModelStoreError:
            raise
        except Exception as exc:
            if _is_cancel(exc):
                raise
            raise self._hub_error(exc, source) from exc
        path = Path(folder)
        self._note_ref(source.repo, source.revision, commit)
        missing = [f for f in files if not (path / f).exists()]
        if missing:
            raise DownloadInterrupted(f"{source.repo}: {len(missing)} files did not arrive ({missing[:3]}); "
                                      "add it again to resume.")
        checked = self._verify_lfs(path, chosen, report, 0.9)
        found = detect_kind(path)
        kind = found if kind == "auto" else kind
        check_folder(path, kind)
        return {"kind": kind, "source": source.describe(), "source_type": "hub", "repo": source.repo,
                "revision": commit, "files": files, "path": str(path), "bytes": total,
                "sha256": checked or None, "owned": bool(record.get("owned", True))}

    def _note_ref(self, repo: str, revision: str | None, commit: str) -> None:
        """Point the cache's ref (main, or the branch / tag asked for) at the commit fetched, as the hub
        client does when given a branch: offline, the same id then finds the snapshot."""
        revision = revision or "main"
        if re.fullmatch(r"[0-9a-f]{40}", revision):
            return
        ref = self.cache_dir / ("models--" + repo.replace("/", "--")) / "refs" / revision
        try:
            ref.parent.mkdir(parents=True, exist_ok=True)
            tmp = ref.with_name(ref.name + ".tmp")
            tmp.write_text(commit)
            os.replace(tmp, ref)
        except OSError as exc:
            log.warning("could not note %s@%s in the hub cache: %s", repo, revision, exc)

    def _cached_files(self, repo: str, commit: str, files: list[str]) -> list[str]:
        from huggingface_hub import try_to_load_from_cache

        return [f for f in files
                if isinstance(try_to_load_from_cache(repo, f, cache_dir=self.cache_dir, revision=commit), str)]

    def _add_hub_file(self, source: Source, name: str, kind: str, expected: str | None, report: _Reporter) -> dict:
        check_single_file_name(source.filename)
        if kind not in ("auto", "diffusion", "other"):
            raise ModelStoreError(f"One .safetensors file is registered as a diffusion checkpoint; a {kind} model "
                                  "comes from a hub id or a folder.")
        kind = "diffusion" if kind == "auto" else kind
        problem = self._hub_problem()
        if problem is not None:
            path = self._cached_hub(source)
            if path is None:
                raise Offline(self._offline_message(source, name, problem))
            check_single_file(Path(path))
            record = self._pending(name, {"source": source.describe(), "type": "hub_file"})
            return {"kind": kind, "source": source.describe(), "source_type": "hub_file", "repo": source.repo,
                    "revision": source.revision, "path": path, "bytes": Path(path).stat().st_size,
                    "sha256": None, "owned": bool(record.get("owned", False))}
        from huggingface_hub import HfApi, hf_hub_download

        api = HfApi(endpoint=self.endpoint)
        try:
            infos = api.get_paths_info(source.repo, [source.filename], revision=source.revision)
        except Exception as exc:
            raise self._hub_error(exc, source) from exc
        if not infos:
            raise ModelStoreError(f"{source.repo} has no file {source.filename} at {source.revision}.")
        meta = {"size": getattr(infos[0], "size", None),
                "sha256": infos[0].lfs.sha256 if getattr(infos[0], "lfs", None) else None}
        hub_sha = meta["sha256"]
        if expected and hub_sha and expected != hub_sha:
            raise ChecksumMismatch(f"The hub says {source.filename} has sha256 {hub_sha}, not the {expected} given.")
        was_cached = isinstance(self._cached_hub(source), str)
        record = self._pending(name, {"source": source.describe(), "type": "hub_file", "owned": not was_cached})
        self._free_space_for(0 if was_cached else meta["size"] or 0)
        try:
            path = hf_hub_download(source.repo, source.filename, revision=source.revision, cache_dir=self.cache_dir,
                                   endpoint=self.endpoint, tqdm_class=_tqdm_class(report, "downloading", 0.9))
        except Exception as exc:
            if _is_cancel(exc):
                raise
            raise self._hub_error(exc, source) from exc
        path = Path(path)
        want = {source.filename: dict(meta, sha256=expected or hub_sha)}
        checked = self._verify_lfs(path.parents[len(Path(source.filename).parts) - 1], want, report, 0.9)
        check_single_file(path)
        return {"kind": kind, "source": source.describe(), "source_type": "hub_file", "repo": source.repo,
                "revision": source.revision, "path": str(path), "bytes": path.stat().st_size,
                "sha256": checked.get(source.filename), "owned": bool(record.get("owned", True))}

    # ---- removing ----

    def remove(self, name: str) -> dict:
        """Unregister a model. Files Wimmel downloaded are deleted; a user's own folder or file, and
        hub cache files that were there before, are left alone. Returns the entry with `freed_bytes`."""
        with self._lock:
            data = self._read()
            entry = data["models"].pop(name, None)
            if entry is None and name in data["pending"]:
                # An unfinished download: drop it and its partial file.
                record = data["pending"].pop(name)
                self._write(data)
                part = Path(record.get("part") or "")
                freed = 0
                if record.get("part") and self.downloads in part.parents and part.exists():
                    freed = part.stat().st_size
                    part.unlink()
                    part.with_suffix(".json").unlink(missing_ok=True)
                return dict(record, freed_bytes=freed, pending=True)
            if entry is None:
                raise KeyError(f"no model named {name!r} in the model store")
            others = list(data["models"].values())
            self._write(data)
        freed = 0
        if entry.get("owned"):
            freed = self._delete_files(entry, others)
        self.problems.pop(name, None)
        log.info("model store: removed %s, %s freed", name, format_bytes(freed))
        self._announce(entry, "removed")
        return dict(entry, freed_bytes=freed)

    def _delete_files(self, entry: dict, others: list[dict]) -> int:
        path = Path(entry["path"])
        shared = any(Path(o["path"]) == path or path in Path(o["path"]).parents or Path(o["path"]) in path.parents
                     for o in others)
        if shared:
            return 0
        if entry.get("source_type") == "url":
            # Only our own downloads folder: never a path outside it.
            if self.downloads in path.parents and path.exists():
                size = path.stat().st_size
                path.unlink()
                return size
            return 0
        if entry.get("source_type") == "hub_file":
            blob = Path(os.path.realpath(path))
            size = blob.stat().st_size if blob.exists() else 0
            if self.cache_dir in path.parents:
                path.unlink(missing_ok=True)
                if self.cache_dir in blob.parents and blob != path:
                    blob.unlink(missing_ok=True)
                return size
            return 0
        if entry.get("source_type") == "hub":
            from huggingface_hub import scan_cache_dir

            try:
                cache = scan_cache_dir(self.cache_dir)
                strategy = cache.delete_revisions(entry["revision"])
                strategy.execute()
                return strategy.expected_freed_size
            except Exception as exc:
                log.warning("could not delete %s from the hub cache: %s", entry["name"], exc)
        return 0


def check_single_file_name(name: str) -> None:
    suffix = Path(name).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise Refused(f"{Path(name).name} is a pickle checkpoint ({suffix}), which can run code when loaded: "
                      "Wimmel reads only .safetensors. Get the model's .safetensors file instead.")
    if suffix and suffix != ".safetensors":
        raise Refused(f"{Path(name).name}: a single-file model must be a .safetensors checkpoint.")


def _disposition_name(header: str | None) -> str | None:
    if not header:
        return None
    match = re.search(r"filename\*\s*=\s*[^']*''([^;]+)", header) or re.search(r'filename\s*=\s*"?([^";]+)"?', header)
    return Path(urllib.parse.unquote(match.group(1).strip())).name if match else None


def _content_range_total(header: str | None) -> int | None:
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


def _is_cancel(exc: BaseException) -> bool:
    from .jobs import JobCancelled

    return isinstance(exc, JobCancelled)


# ---------------------------------------------------------------------------------- jobs and engines

def job_kind(store: ModelStore) -> JobKind:
    """Job kind download_model. params: source, kind, and optionally name, revision, sha256,
    allow_patterns, variant, config. The result is a JSON file with the registered entry. A job
    cut off by a restart runs again and resumes its partial files (hub cache or .part file)."""

    def run(ctx: JobContext) -> str:
        params = {k: v for k, v in ctx.params.items() if k != "inputs"}
        source = params.pop("source", None)
        if not source:
            raise UserFacingError("A download_model job needs a source.")
        try:
            entry = store.add(source, params.pop("kind", "auto"), progress=ctx.progress,
                              cancelled=ctx.check_cancelled, **params)
        except ModelStoreError as exc:
            raise UserFacingError(str(exc)) from exc
        except TypeError as exc:
            raise UserFacingError(f"Bad download_model parameters: {exc}") from exc
        result = ctx.work_dir / "model.json"
        result.write_text(json.dumps(entry, indent=1))
        return str(result)

    return JobKind(JOB_CAPABILITY, JOB_MODEL, run)


_STORES: "weakref.WeakKeyDictionary[Any, ModelStore]" = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def attach(engine, **options) -> ModelStore:
    """The engine's model store (made once, in the engine's data dir) with the download_model job
    kind registered on its queue. Call before engine.jobs.start() so a download a restart cut off
    resumes at once."""
    with _STORES_LOCK:
        store = _STORES.get(engine)
        if store is None:
            store = ModelStore(engine.data_dir, **options)
            _STORES[engine] = store
            engine.jobs.register(job_kind(store))
        return store
