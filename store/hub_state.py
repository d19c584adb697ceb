"""What the store remembers about hub files (store/manifest.py's HubFile), in one small JSON file,
<data_dir>/hub-files/state.json: the licences the user accepted (per entry name, with the licence
text accepted: a changed licence asks again) and the check of each file in place (its size and
mtime, sha256, whether that hash is listed or the user trusted it, the signature's problems), so a
file of hundreds of MB is hashed once, not on every page load or run."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from engine.files import write_json

from .errors import ModelStoreError
from .manifest import HUB_FOLDER, HubFile

STATE_FILE = "state.json"
_lock = threading.RLock()  # one writer at a time within the process (the file is rewritten whole)


def state_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / HUB_FOLDER / STATE_FILE


def _read(data_dir) -> dict:
    path = state_path(data_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except ValueError as exc:
        raise ModelStoreError(f"{path} is not valid JSON ({exc}); fix or delete it (the licences you "
                              "accepted are asked again, and the files are checked again).") from exc
    data.setdefault("version", 1)
    data.setdefault("licences", {})
    data.setdefault("files", {})
    return data


def _update(data_dir, section: str, name: str, value: dict | None) -> None:
    with _lock:
        data = _read(data_dir)
        if value is None:
            data[section].pop(name, None)
        else:
            data[section][name] = value
        path = state_path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, data, indent=1)


# ---- licences ----

def licence_accepted(entry: HubFile, data_dir) -> bool:
    """The user accepted this entry's licence, as it reads now."""
    record = _read(data_dir)["licences"].get(entry.name)
    return bool(record) and record.get("licence") == entry.licence


def licence_ok(entry: HubFile, data_dir) -> bool:
    """The file may be fetched and used: its licence allows commercial use, or the user accepted it."""
    return entry.commercial or licence_accepted(entry, data_dir)


def accept_licence(entry: HubFile, data_dir) -> None:
    if not licence_accepted(entry, data_dir):
        _update(data_dir, "licences", entry.name, {"licence": entry.licence, "accepted": time.time()})


def licence_refusal(entry: HubFile) -> str:
    return (f"{entry.file} ({entry.name}) is licensed \"{entry.licence}\": not for commercial use. Accept "
            "that licence to download and use it (the tab's licence box, or accept_licence=True).")


# ---- files checked in place ----

def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def checked(entry: HubFile, data_dir, path: Path) -> dict | None:
    """The recorded check of the file at path, if it is still the file that was checked."""
    record = _read(data_dir)["files"].get(entry.name)
    if not record or not path.exists() or record.get("file") != entry.file:
        return None
    if {k: record.get(k) for k in ("size", "mtime_ns")} != _stamp(path):
        return None
    # A manifest that now lists the hash (or no longer does) changes the verdict, not the hash.
    return dict(record, listed=record["sha256"] in entry.sha256)


def record_check(entry: HubFile, data_dir, path: Path, sha256: str, problems: list[str],
                 trusted: bool, source: str) -> dict:
    record = {"file": entry.file, **_stamp(path), "sha256": sha256, "problems": problems,
              "trusted": trusted, "source": source, "checked": time.time()}
    _update(data_dir, "files", entry.name, record)
    return dict(record, listed=sha256 in entry.sha256)


def forget_check(entry: HubFile, data_dir) -> None:
    _update(data_dir, "files", entry.name, None)
