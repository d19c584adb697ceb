"""Disk accounting: what registered models take, what is free where downloads land, and deleting
the files Wimmel downloaded (never a user's own files, never files another entry still uses)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from engine import format_bytes

from .errors import ModelStoreError

log = logging.getLogger(__name__)


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


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    return shutil.disk_usage(existing).free if existing else None


def usage(models: list[dict], cache_dir: Path, downloads: Path, registry: Path) -> dict:
    """Bytes of registered models: downloaded by Wimmel (removing deletes them) and local (the
    user's own files), and what is free where downloads land."""
    downloaded = sum(e["bytes"] for e in models if e.get("owned") and e["exists"])
    local = sum(e["bytes"] for e in models if not e.get("owned") and e["exists"])
    partial = sum(p.stat().st_size for p in downloads.glob("*.part")) if downloads.exists() else 0
    return {"models": len(models), "downloaded_bytes": downloaded, "local_bytes": local,
            "partial_bytes": partial, "total_bytes": downloaded + local,
            "free_bytes": free_bytes(cache_dir), "downloads_free_bytes": free_bytes(downloads),
            "cache_dir": str(cache_dir), "downloads_dir": str(downloads), "registry": str(registry)}


def need_free_space(folder: Path, need: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise ModelStoreError(f"Not enough disk space: the download needs {format_bytes(need)}, "
                              f"{folder} has {format_bytes(free)} free.")


def delete_part(part: Path, downloads: Path) -> int:
    """An unfinished single-file download's .part (and its .json note); bytes freed."""
    if downloads not in part.parents or not part.exists():
        return 0
    size = part.stat().st_size
    part.unlink()
    part.with_suffix(".json").unlink(missing_ok=True)
    return size


def delete_files(entry: dict, others: list[dict], cache_dir: Path, downloads: Path) -> int:
    """Delete a downloaded entry's files; bytes freed. Files another entry shares stay."""
    path = Path(entry["path"])
    shared = any(Path(o["path"]) == path or path in Path(o["path"]).parents or Path(o["path"]) in path.parents
                 for o in others)
    if shared:
        return 0
    if entry.get("source_type") == "url":
        # Only our own downloads folder: never a path outside it.
        if downloads in path.parents and path.exists():
            size = path.stat().st_size
            path.unlink()
            return size
        return 0
    if entry.get("source_type") == "hub_file":
        blob = Path(os.path.realpath(path))
        size = blob.stat().st_size if blob.exists() else 0
        if cache_dir in path.parents:
            path.unlink(missing_ok=True)
            if cache_dir in blob.parents and blob != path:
                blob.unlink(missing_ok=True)
            return size
        return 0
    if entry.get("source_type") == "hub":
        from huggingface_hub import scan_cache_dir

        try:
            strategy = scan_cache_dir(cache_dir).delete_revisions(entry["revision"])
            strategy.execute()
            return strategy.expected_freed_size
        except Exception as exc:
            log.warning("could not delete %s from the hub cache: %s", entry["name"], exc)
    return 0
