"""Who was shown which file from Gradio's cache, so that a result goes to its user only.

Gradio copies every file an event returns (a picture, a sound, a job's result) into its cache,
<cache>/<hash of the content>/<name>, and serves it at /gradio_api/file=<path> to anyone logged
in. The hash is seeded per installation, so the URL cannot be guessed, but it can be passed on,
and a job's own folder is already kept to its owner (app.job_files). `record` notes, for each
cache folder an event's outputs name, the user the event ran for (ui.gradio_patches calls it on
every event's processed outputs); app.job_files lets a request for a file in a noted folder pass
only for one of its users or an admin. Folders nobody was shown (component defaults, a user's
own uploads) stay as Gradio serves them. Two users given the same content share its folder.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from gradio_client import utils as client_utils

# Gradio deletes old cache folders on its own schedule; past this many noted folders the ones
# that are gone are forgotten.
PRUNE_AT = 50_000

_lock = threading.Lock()
_owners: dict[str, set[str]] = {}   # cache folder (absolute) -> users shown a file in it


def _folder(path: str | os.PathLike, cache_root: str | os.PathLike) -> str | None:
    """The cache folder (cache_root/<hash>) that path lies in, or None when outside the cache."""
    for root, target in ((os.path.abspath(cache_root), os.path.abspath(path)),
                         (os.path.realpath(cache_root), os.path.realpath(path))):
        try:
            parts = Path(target).relative_to(root).parts
        except ValueError:
            continue
        return os.path.join(os.path.abspath(cache_root), parts[0]) if len(parts) > 1 else None
    return None


def paths_in(data: Any) -> list[str]:
    """The server paths of the files in an event's processed outputs (Gradio's FileData dicts)."""
    found: list[str] = []

    def note(file: dict) -> dict:
        if isinstance(file.get("path"), str) and not client_utils.is_http_url_like(file["path"]):
            found.append(file["path"])
        return file

    client_utils.traverse(data, note, client_utils.is_file_obj)
    return found


def record(user: str | None, data: Any, cache_root: str | os.PathLike) -> int:
    """Note that user was shown the cached files in data; returns how many were noted."""
    if user is None:
        return 0
    folders = {f for f in (_folder(p, cache_root) for p in paths_in(data)) if f}
    with _lock:
        if len(_owners) + len(folders) > PRUNE_AT:
            for gone in [f for f in _owners if not os.path.isdir(f)]:
                del _owners[gone]
        for folder in folders:
            _owners.setdefault(folder, set()).add(user)
    return len(folders)


def users_of(path: str | os.PathLike, cache_root: str | os.PathLike) -> frozenset[str] | None:
    """The users shown the cached file at path; None when nobody was (or it is not in the cache)."""
    folder = _folder(path, cache_root)
    with _lock:
        owners = _owners.get(folder) if folder else None
        return frozenset(owners) if owners else None


def forget() -> None:
    """Drop every note (tests)."""
    with _lock:
        _owners.clear()
