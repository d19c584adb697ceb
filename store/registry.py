"""The registry of added models: a JSON file (models.json under the data dir) with the models and
the downloads in flight, and the subscribers that turn entries into engine models."""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from engine import UserFacingError
from engine.files import write_json

from .errors import ModelStoreError

log = logging.getLogger(__name__)


class Registry:
    """models.json: {"models": {name: entry}, "pending": {name: record}}, and who listens to it."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.RLock()
        self._subscribers: list[tuple[str | None, Callable, Callable | None]] = []
        self.problems: dict[str, str] = {}  # name -> why its engine registration failed

    # ---- the file ----

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": 1, "models": {}, "pending": {}}
        except ValueError as exc:
            raise ModelStoreError(f"{self.path} is not valid JSON ({exc}); fix or delete it.") from exc
        data.setdefault("models", {})
        data.setdefault("pending", {})
        return data

    def write(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, data, indent=1)

    def list(self, kind: str | None = None) -> list[dict]:
        """Registered models, oldest first, each with `exists` (its files are still there)."""
        with self.lock:
            models = list(self.read()["models"].values())
        out = []
        for entry in sorted(models, key=lambda e: e.get("added", 0)):
            if kind is None or entry.get("kind") == kind:
                entry = dict(entry, exists=Path(entry["path"]).exists())
                if entry["name"] in self.problems:
                    entry["problem"] = self.problems[entry["name"]]
                out.append(entry)
        return out

    def get(self, name: str) -> dict | None:
        with self.lock:
            entry = self.read()["models"].get(name)
        return None if entry is None else dict(entry, exists=Path(entry["path"]).exists())

    def put(self, entry: dict) -> None:
        """A finished add: the entry in, its pending record out."""
        with self.lock:
            data = self.read()
            data["models"][entry["name"]] = entry
            data["pending"].pop(entry["name"], None)
            self.write(data)

    # ---- downloads in flight ----

    def pending(self) -> list[dict]:
        with self.lock:
            return list(self.read()["pending"].values())

    def note_pending(self, name: str, record: dict) -> dict:
        """Note a download in flight; a re-run (after a crash) gets back what the first run noted."""
        with self.lock:
            data = self.read()
            if name in data["pending"] and data["pending"][name].get("source") == record.get("source"):
                return data["pending"][name]
            data["pending"][name] = dict(record, name=name, started=time.time())
            self.write(data)
            return data["pending"][name]

    def forget_pending(self, name: str) -> dict | None:
        with self.lock:
            data = self.read()
            record = data["pending"].pop(name, None)
            if record is not None:
                self.write(data)
            return record

    # ---- subscribers (engine registration) ----

    def connect(self, kind: str | None, added: Callable[[dict], Any],
                removed: Callable[[dict], Any] | None = None) -> None:
        """Call added(entry) for every registered model of `kind` (None: all) now and whenever one
        is added, removed(entry) when one is removed. A failing callback is logged and its message
        kept in `problems` (shown by list()); it never undoes the registration."""
        with self.lock:
            self._subscribers.append((kind, added, removed))
        for entry in self.list(kind):
            self._notify(added, entry)

    def announce(self, entry: dict, event: str) -> None:
        """Tell the subscribers of the entry's kind that it was "added" or "removed"."""
        if event == "removed":
            self.problems.pop(entry["name"], None)
        for kind, added, removed in list(self._subscribers):
            if kind is None or kind == entry["kind"]:
                callback = added if event == "added" else removed
                if callback is not None:
                    self._notify(callback, entry)

    def _notify(self, callback: Callable, entry: dict) -> None:
        try:
            callback(entry)
            self.problems.pop(entry["name"], None)
        except Exception as exc:
            log.warning("model %s: %s", entry["name"], exc)
            # A user-facing error says it in plain words; anything else is named for the log reader.
            self.problems[entry["name"]] = str(exc) if isinstance(exc, UserFacingError) else \
                f"{type(exc).__name__}: {exc}"
