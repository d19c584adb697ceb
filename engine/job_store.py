"""The jobs table in SQLite (the one truth about jobs, also with a Ray cluster attached): its
fields, the job states, and the store itself. engine.jobs re-exports these names."""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

TERMINAL = ("done", "failed", "cancelled")
WAITING = ("queued", "interrupted")
# worker: the cluster worker that ran the job last (None in-process); moves: how often the job
# went back to the queue because its worker was lost mid-job (it resumes on a worker from there).
FIELDS = ("id", "seq", "capability", "model", "params", "state", "progress", "note", "created",
          "started", "finished", "result", "error", "resumed_from_frame", "runs", "checkpoint",
          "passed_over", "attempts", "resumed_from", "bug", "worker", "moves", "owner")
# owner: whose job it is (a login name, or a browser session id without logins; None: local use).
_JSON = ("params", "runs", "checkpoint")
# Columns added after the first release: a jobs.sqlite from before gets them (as NULL).
_ADDED = (("resumed_from", "TEXT"), ("bug", "INTEGER"), ("worker", "TEXT"), ("moves", "INTEGER"),
          ("owner", "TEXT"))
ANY = object()   # JobStore.all's owner when every owner's jobs are wanted (None is the local user)


class JobStore:
    """The jobs table. One connection, serialised by a lock; WAL so readers never block."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, seq INTEGER, capability TEXT, model TEXT, params TEXT, state TEXT,
            progress REAL, note TEXT, created REAL, started REAL, finished REAL, result TEXT,
            error TEXT, resumed_from_frame INTEGER, runs TEXT, checkpoint TEXT,
            passed_over INTEGER, attempts INTEGER)""")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED:
            if column not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        # The queue's own state that outlives the process (paused by an admin), as JSON values.
        self._db.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT)")
        self._lock = threading.Lock()

    @staticmethod
    def _row(row) -> dict:
        job = dict(zip(FIELDS, row))
        for key in _JSON:
            job[key] = json.loads(job[key])
        job["moves"] = job["moves"] or 0  # NULL in rows written before the column existed
        return job

    def insert(self, job: dict) -> None:
        values = [json.dumps(job[f]) if f in _JSON else job[f] for f in FIELDS]
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({','.join(FIELDS)}) VALUES ({','.join('?' * len(FIELDS))})",
                             values)

    def update(self, job_id: str, **fields) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [json.dumps(v) if k in _JSON else v for k, v in fields.items()]
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", values + [job_id])

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(f"SELECT {','.join(FIELDS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row(row) if row else None

    def all(self, states: tuple[str, ...] | None = None, owner=ANY) -> list[dict]:
        """The jobs in `states` (all: None), oldest first; only `owner`'s when given (None: the
        jobs of local use, which have no owner)."""
        where, args = [], []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if owner is None:
            where.append("owner IS NULL")
        elif owner is not ANY:
            where.append("owner = ?")
            args.append(owner)
        query = f"SELECT {','.join(FIELDS)} FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [self._row(r) for r in rows]

    def setting(self, key: str, default=None):
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def next_seq(self) -> int:
        with self._lock:
            return (self._db.execute("SELECT MAX(seq) FROM jobs").fetchone()[0] or 0) + 1
