"""Models from the Hugging Face hub: a repo (`snapshot_download`) or one file of it (`hf_hub_download`)
into the hub cache (HF_HOME / HF_HUB_CACHE), with the hub client's own resume of partial files.
Sizes and LFS sha256 come from the hub's metadata and each downloaded LFS file is checked against
them. Offline or unreachable, a model already in the cache is registered from there; otherwise the
add fails at once saying what to download and where to put it."""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from pathlib import Path

from engine import JobCancelled, format_bytes

from .disk import folder_bytes, need_free_space
from .errors import ChecksumMismatch, DownloadInterrupted, ModelStoreError, Offline, Refused
from .kinds import CONFIG, CONFIG_PATTERNS
from .network import is_offline, reachable
from .progress import Reporter, tqdm_class
from .safetensors import PICKLE_SUFFIXES, check_single_file, check_single_file_name, sha256_file
from .sources import Source

log = logging.getLogger(__name__)
COMMIT = re.compile(r"[0-9a-f]{40}")


class Hub:
    """The hub at one endpoint and its cache folder: what is cached, what went wrong, checks."""

    def __init__(self, cache_dir: Path, endpoint: str, connect_timeout_s: float, models_root: Path):
        self.cache_dir, self.endpoint = cache_dir, endpoint
        self.connect_timeout_s, self.models_root = connect_timeout_s, models_root

    def problem(self) -> str | None:
        """Why the hub cannot be used right now (HF_HUB_OFFLINE, or no connection), or None."""
        if is_offline():
            return "HF_HUB_OFFLINE is set"
        return reachable(self.endpoint, self.connect_timeout_s)

    def _repo_folder(self, repo: str) -> Path:
        return self.cache_dir / ("models--" + repo.replace("/", "--"))

    def cached_snapshot(self, repo: str, revision: str | None) -> Path | None:
        """The repo's snapshot folder in the hub cache, from its refs: plain file checks, so an
        offline answer never waits for the hub client's modules to import."""
        folder = self._repo_folder(repo)
        commit = revision or "main"
        if not COMMIT.fullmatch(commit):
            try:
                commit = (folder / "refs" / commit).read_text().strip()
            except OSError:
                return None
        snapshot = folder / "snapshots" / commit
        return snapshot if snapshot.is_dir() else None

    def cached(self, source: Source, allow_patterns=None, need_weights: bool = True) -> str | None:
        """The snapshot folder (a hub_file: the file) when it is already in the hub cache."""
        snapshot = self.cached_snapshot(source.repo, source.revision)
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
        # Only finished files get a link in a snapshot; the kind's own check follows.
        return str(snapshot) if not need_weights or any(snapshot.rglob("*.safetensors")) else None

    def cached_files(self, repo: str, commit: str, files: list[str]) -> list[str]:
        from huggingface_hub import try_to_load_from_cache

        return [f for f in files
                if isinstance(try_to_load_from_cache(repo, f, cache_dir=self.cache_dir, revision=commit), str)]

    def note_ref(self, repo: str, revision: str | None, commit: str) -> None:
        """Point the cache's ref (main, or the branch / tag asked for) at the commit fetched, as the hub
        client does when given a branch: offline, the same id then finds the snapshot."""
        revision = revision or "main"
        if COMMIT.fullmatch(revision):
            return
        ref = self._repo_folder(repo) / "refs" / revision
        try:
            ref.parent.mkdir(parents=True, exist_ok=True)
            tmp = ref.with_name(ref.name + ".tmp")
            tmp.write_text(commit)
            os.replace(tmp, ref)
        except OSError as exc:
            log.warning("could not note %s@%s in the hub cache: %s", repo, revision, exc)

    def offline_message(self, source: Source, why: str) -> str:
        rev = f" --revision {source.revision}" if source.revision else ""
        cache_folder = "models--" + source.repo.replace("/", "--")
        if source.type == "hub_file":
            return (f"Cannot download {source.filename} of {source.repo} from the hub: {why}. On a machine with "
                    f"internet run `hf download {source.repo} {source.filename}{rev} --local-dir "
                    f"{source.repo.split('/')[-1]}`, copy that file here and add its path; or copy the hub cache "
                    f"folder {cache_folder} into {self.cache_dir} and add {source.text} again.")
        local = source.repo.split("/")[-1]
        return (f"Cannot download {source.repo} from the hub: {why}. On a machine with internet run "
                f"`hf download {source.repo}{rev} --include '*.json' '*.txt' '*.safetensors' --local-dir {local}`, "
                f"copy the folder {local} to this machine (for example into {self.models_root}) and add that folder "
                f"here; or copy the hub cache folder {cache_folder} into {self.cache_dir} and add "
                f"{source.describe()} again.")

    def error(self, exc: Exception, source: Source) -> ModelStoreError:
        """The hub client's exception as what the user can do about it."""
        from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, RepositoryNotFoundError,
                                            RevisionNotFoundError)

        if isinstance(exc, GatedRepoError):
            return ModelStoreError(f"{source.repo} is gated: accept its license on {self.endpoint}/{source.repo} and "
                                   "log in here (`hf auth login`, or set HF_TOKEN), then add it again.")
        if isinstance(exc, RepositoryNotFoundError):
            return ModelStoreError(f"There is no model {source.repo} on the hub (or it is private: log in with "
                                   "`hf auth login` or set HF_TOKEN).")
        if isinstance(exc, RevisionNotFoundError):
            return ModelStoreError(f"{source.repo} has no revision {source.revision!r}.")
        if isinstance(exc, EntryNotFoundError):
            return ModelStoreError(f"{source.describe()}: no such file in the repo.")
        return ModelStoreError(f"Could not fetch {source.describe()}: {type(exc).__name__}: {exc}")

    def verify_lfs(self, folder: Path, files: dict[str, dict], report: Reporter, start: float) -> dict[str, str]:
        """sha256 of each LFS file against the hub's, over the files' bytes (a mismatch deletes the blob)."""
        checked: dict[str, str] = {}
        todo = {f: meta for f, meta in files.items() if meta.get("sha256")}
        step = report.counter(sum(meta["size"] or 0 for meta in todo.values()) or 1, "checking sha256",
                              start, 1.0 - start)
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


def add_repo(store, source: Source, name: str, kind: str, allow_patterns, variant: str | None,
             report: Reporter) -> dict:
    """A hub repo into `store` (the ModelStore): its configs and the safetensors weights its kind
    chooses (or allow_patterns). Returns the entry to register."""
    hub = store.hub
    problem = hub.problem()
    if problem is not None:
        folder = hub.cached(source, allow_patterns, need_weights=kind != CONFIG)
        if folder is None:
            raise Offline(hub.offline_message(source, problem))
        path = Path(folder)
        kind = store.kinds.check_folder(path, kind)
        record = store.registry.note_pending(name, {"source": source.describe(), "type": "hub"})
        return {"kind": kind, "source": source.describe(), "source_type": "hub", "repo": source.repo,
                "revision": path.name, "path": str(path), "bytes": folder_bytes(path), "sha256": None,
                "owned": bool(record.get("owned", False))}
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # (a second to import, once)

    report(0.0, f"asking the hub about {source.repo}", force=True)
    try:
        info = HfApi(endpoint=hub.endpoint).model_info(source.repo, revision=source.revision,
                                                       files_metadata=True, timeout=15)
    except Exception as exc:
        raise hub.error(exc, source) from exc
    commit = info.sha
    siblings = {s.rfilename: {"size": s.size, "sha256": s.lfs.sha256 if s.lfs else None}
                for s in info.siblings or []}
    if kind == CONFIG and not allow_patterns:
        allow_patterns = list(CONFIG_PATTERNS)
    if allow_patterns:
        patterns = [allow_patterns] if isinstance(allow_patterns, str) else list(allow_patterns)
        files = [f for f in siblings if any(fnmatch.fnmatch(f, p) for p in patterns)]
    else:
        def read_json(filename: str) -> dict:
            try:
                return json.loads(Path(hf_hub_download(source.repo, filename, revision=commit,
                                                       cache_dir=hub.cache_dir, endpoint=hub.endpoint)).read_text())
            except Exception as exc:
                raise hub.error(exc, source) from exc

        files = store.kinds.repo_files(kind, list(siblings), variant, read_json)
    skipped = [f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES]
    files = [f for f in files if f not in skipped]
    if skipped:
        log.warning("%s: not fetching pickle files %s", source.repo, skipped)
    if kind == CONFIG:
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
    cached_before = hub.cached_files(source.repo, commit, files)
    record = store.registry.note_pending(name, {"source": source.describe(), "type": "hub", "repo": source.repo,
                                                "revision": commit, "owned": len(cached_before) < len(files)})
    need_free_space(hub.cache_dir, total - sum(chosen[f]["size"] or 0 for f in cached_before))
    report(0.0, f"downloading {len(files)} files, {format_bytes(total)}", force=True)
    try:
        folder = snapshot_download(source.repo, revision=commit, cache_dir=hub.cache_dir, allow_patterns=files,
                                   endpoint=hub.endpoint, tqdm_class=tqdm_class(report, "downloading", 0.9))
    except (JobCancelled, ModelStoreError):
        raise
    except Exception as exc:
        raise hub.error(exc, source) from exc
    path = Path(folder)
    hub.note_ref(source.repo, source.revision, commit)
    missing = [f for f in files if not (path / f).exists()]
    if missing:
        raise DownloadInterrupted(f"{source.repo}: {len(missing)} files did not arrive ({missing[:3]}); "
                                  "add it again to resume.")
    checked = hub.verify_lfs(path, chosen, report, 0.9)
    kind = store.kinds.check_folder(path, kind)
    return {"kind": kind, "source": source.describe(), "source_type": "hub", "repo": source.repo,
            "revision": commit, "files": files, "path": str(path), "bytes": total,
            "sha256": checked or None, "owned": bool(record.get("owned", True))}


def add_file(store, source: Source, name: str, kind: str, expected: str | None,
             report: Reporter) -> dict:
    """One .safetensors file of a hub repo (a "resolve" URL) into `store` (the ModelStore)."""
    hub = store.hub
    check_single_file_name(source.filename)
    kind = store.kinds.check_one_file(kind, lambda single, kind: (
        f"One .safetensors file is registered as a {single} checkpoint; a {kind} model comes from a hub id "
        "or a folder."))
    problem = hub.problem()
    if problem is not None:
        path = hub.cached(source)
        if path is None:
            raise Offline(hub.offline_message(source, problem))
        check_single_file(Path(path))
        record = store.registry.note_pending(name, {"source": source.describe(), "type": "hub_file"})
        return {"kind": kind, "source": source.describe(), "source_type": "hub_file", "repo": source.repo,
                "revision": source.revision, "path": path, "bytes": Path(path).stat().st_size,
                "sha256": None, "owned": bool(record.get("owned", False))}
    from huggingface_hub import HfApi, hf_hub_download

    try:
        infos = HfApi(endpoint=hub.endpoint).get_paths_info(source.repo, [source.filename], revision=source.revision)
    except Exception as exc:
        raise hub.error(exc, source) from exc
    if not infos:
        raise ModelStoreError(f"{source.repo} has no file {source.filename} at {source.revision}.")
    meta = {"size": getattr(infos[0], "size", None),
            "sha256": infos[0].lfs.sha256 if getattr(infos[0], "lfs", None) else None}
    hub_sha = meta["sha256"]
    if expected and hub_sha and expected != hub_sha:
        raise ChecksumMismatch(f"The hub says {source.filename} has sha256 {hub_sha}, not the {expected} given.")
    was_cached = isinstance(hub.cached(source), str)
    record = store.registry.note_pending(name, {"source": source.describe(), "type": "hub_file",
                                                "owned": not was_cached})
    need_free_space(hub.cache_dir, 0 if was_cached else meta["size"] or 0)
    try:
        path = Path(hf_hub_download(source.repo, source.filename, revision=source.revision, cache_dir=hub.cache_dir,
                                    endpoint=hub.endpoint, tqdm_class=tqdm_class(report, "downloading", 0.9)))
    except (JobCancelled, ModelStoreError):
        raise
    except Exception as exc:
        raise hub.error(exc, source) from exc
    want = {source.filename: dict(meta, sha256=expected or hub_sha)}
    checked = hub.verify_lfs(path.parents[len(Path(source.filename).parts) - 1], want, report, 0.9)
    check_single_file(path)
    return {"kind": kind, "source": source.describe(), "source_type": "hub_file", "repo": source.repo,
            "revision": source.revision, "path": str(path), "bytes": path.stat().st_size,
            "sha256": checked.get(source.filename), "owned": bool(record.get("owned", True))}
