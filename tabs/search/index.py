"""The search index: passages with their sources, and their embeddings kept on disk by text hash.

<data dir>/search/embeddings.npy holds one unit vector per distinct passage text;
<data dir>/search/index.json the row order of those vectors (their text hashes), the model that
made them, and every source with its passages. A restart loads both and embeds nothing again;
a passage whose text was seen before (in any source) reuses its vector.

Writes go vectors first, then the index, each atomically: rows are only ever appended, so an index
that lists fewer rows than the file holds (a crash between the two writes) is still consistent.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np

from engine.files import save_array, write_json

from . import passages as P
from .model import DIMENSIONS, EMBEDDER, embed_all

log = logging.getLogger(__name__)

SERVICE = "search_index"   # the engine's one index lives in engine.services under this key
_SERVICES_LOCK = threading.Lock()
FORMAT = 1


class SearchIndex:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.RLock()
        self.sources: dict[str, dict] = {}
        self._hashes: list[str] = []
        self._row: dict[str, int] = {}
        self._vectors = np.zeros((0, DIMENSIONS), np.float32)
        self._matrix = None   # (passage list, their vectors) for search; rebuilt after a change
        self._load()

    # ---- persistence ----

    def _load(self) -> None:
        index, vectors = self.folder / "index.json", self.folder / "embeddings.npy"
        if not index.is_file():
            return
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            self.sources = data.get("sources", {})
            if data.get("model") == EMBEDDER and data.get("format") == FORMAT and vectors.is_file():
                stored = np.load(vectors)
                hashes = data.get("hashes", [])[: len(stored)]
                self._hashes, self._vectors = hashes, np.ascontiguousarray(stored[: len(hashes)], np.float32)
                self._row = {h: i for i, h in enumerate(hashes)}
        except (OSError, ValueError) as exc:
            # A damaged index costs its vectors (they are made again), never the app.
            log.warning("search index in %s could not be read (%s): starting again", self.folder, exc)
            self.sources, self._hashes, self._row = {}, [], {}
            self._vectors = np.zeros((0, DIMENSIONS), np.float32)

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_array(self.folder / "embeddings.npy", self._vectors)
        write_json(self.folder / "index.json", {"format": FORMAT, "model": EMBEDDER, "hashes": self._hashes,
                                                 "sources": self.sources})

    # ---- changing it ----

    def _missing(self, candidates: list[dict]) -> list[str]:
        """Distinct passage texts, of `candidates` and of the index, that have no vector yet."""
        texts = {}
        for source in list(self.sources.values()) + candidates:
            for passage in source["passages"]:
                key = P.text_hash(passage["text"])
                if key not in self._row:
                    texts[key] = passage["text"]
        return list(texts.values())

    def put(self, call, sources: list[dict]) -> int:
        """Add or replace `sources` ({"id", "kind", "label", "stamp", "passages"}), embedding the
        passages not seen before (outside the lock: searches go on meanwhile). Returns how many
        texts were embedded."""
        with self._lock:
            texts = self._missing(sources)
        vectors = embed_all(call, texts) if texts else np.zeros((0, DIMENSIONS), np.float32)
        with self._lock:
            fresh = [(t, v) for t, v in zip(texts, vectors) if P.text_hash(t) not in self._row]
            for text, _ in fresh:
                self._row[P.text_hash(text)] = len(self._hashes)
                self._hashes.append(P.text_hash(text))
            if fresh:
                self._vectors = np.concatenate([self._vectors, np.stack([v for _, v in fresh])])
            for source in sources:
                self.sources[source["id"]] = {k: source[k] for k in ("kind", "label", "stamp", "passages")}
            if fresh or sources:
                self._matrix = None
                self._save()
        return len(texts)

    def refresh(self, call, jobs: list[dict], outputs_root: Path) -> int:
        """Read finished jobs (the queue's rows) and interactive transcriptions under
        `outputs_root` that are new or changed since they were indexed; returns how many sources
        were (re)read. Unchanged files are not opened."""
        changed = []
        found = [s for s in map(P.job_source, jobs) if s] + P.request_sources(outputs_root)
        for source in found:
            try:
                stamp = P.stamp(*source["files"])
            except OSError:
                continue   # swept while we looked
            if self.sources.get(source["id"], {}).get("stamp") == stamp:
                continue
            try:
                passages = P.read_passages(source)
            except (OSError, ValueError, TypeError) as exc:
                # Not what its format promises: one unreadable result must not stop every
                # search. Kept without passages, it is read again only when it changes.
                log.warning("search: %s could not be read (%s)", source["id"], exc)
                passages = []
            changed.append({**source, "stamp": stamp, "passages": passages})
        with self._lock:
            pending = bool(self._missing([]))
        if changed or pending:
            self.put(call, changed)
        return len(changed)

    def add_text(self, call, label: str, name: str, body: str) -> tuple[dict, bool]:
        """A user's text (a file's content, or pasted) as a source of its own. The same text
        added twice is one source. Returns (source, whether it is new)."""
        passages = P.file_passages(name, body)
        key = f"text:{P.text_hash(body)[:16]}"
        with self._lock:
            if key in self.sources:
                return {"id": key, **self.sources[key]}, False
        kind = "subtitles" if name.lower().endswith(".srt") else "text"
        source = {"id": key, "kind": kind, "label": label, "stamp": None, "passages": passages}
        self.put(call, [source])
        return source, True

    # ---- reading it ----

    def summary(self) -> dict:
        with self._lock:
            return {"sources": len(self.sources),
                    "passages": sum(len(s["passages"]) for s in self.sources.values()),
                    "vectors": len(self._hashes)}

    def _search_matrix(self):
        with self._lock:
            if self._matrix is None:
                entries = [(sid, p) for sid, s in self.sources.items() for p in s["passages"]
                           if P.text_hash(p["text"]) in self._row]
                rows = [self._row[P.text_hash(p["text"])] for _, p in entries]
                self._matrix = (entries, self._vectors[rows] if rows else np.zeros((0, DIMENSIONS), np.float32))
            return self._matrix

    def search(self, call, query: str, top_k: int = 5) -> list[dict]:
        """The `top_k` passages closest to `query` by cosine similarity (the vectors are unit
        length: a dot product), best first: {"score", "text", "source", "source_id", "kind",
        "start", "end", "at"} with "at" the time as 01:23, or None for untimed text."""
        entries, matrix = self._search_matrix()
        if not entries:
            return []
        vector = call(EMBEDDER, lambda model: model.embed([query]))[0]
        scores = matrix @ vector
        best = np.argsort(-scores, kind="stable")[:max(1, int(top_k))]
        hits = []
        for i in best:
            source_id, passage = entries[i]
            source = self.sources[source_id]
            start = passage.get("start")
            hits.append({"score": round(float(scores[i]), 4), "text": passage["text"],
                         "source": source["label"], "source_id": source_id, "kind": source["kind"],
                         "start": start, "end": passage.get("end"),
                         "at": None if start is None else P.clock(start)})
        return hits


def for_engine(engine) -> SearchIndex:
    """The engine's index, on <data dir>/search, made once and shared by every request."""
    with _SERVICES_LOCK:
        index = engine.services.get(SERVICE)
        if index is None:
            index = engine.services[SERVICE] = SearchIndex(Path(engine.data_dir) / "search")
        return index
