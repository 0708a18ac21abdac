"""``SqliteJobStore``, the zero-setup default: one table, transitions as conditional
UPDATEs, an event table."""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pdftasks.models import Job, JobPriority, JobStatus
from pdftasks.settings import JOB_RETENTION_S
from pdftasks.stores.base import MAX_DEAD_LETTERS, JobStore, _encode, dead_letter_entry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  namespace TEXT NOT NULL, job_id TEXT NOT NULL, status TEXT NOT NULL,
  priority INTEGER NOT NULL, created_at REAL NOT NULL, record TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (namespace, job_id));
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (namespace, status, created_at);
CREATE TABLE IF NOT EXISTS claims (
  namespace TEXT NOT NULL, key TEXT NOT NULL, expires REAL NOT NULL,
  PRIMARY KEY (namespace, key));
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, ts REAL NOT NULL,
  body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, ts REAL NOT NULL,
  entry TEXT NOT NULL);
"""


class SqliteJobStore(JobStore):
    """Jobs in one SQLite file (WAL), for the zero-setup default. One connection per process."""

    def __init__(self, path: str | os.PathLike[str], namespace: str,
                 retention_s: int = JOB_RETENTION_S) -> None:
        super().__init__(namespace, retention_s)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def create_many(self, jobs: Iterable[Job]) -> None:
        rows = [(self.namespace, j.job_id, j.status.value, int(j.priority),
                 j.created_at.timestamp(), json.dumps(j.to_record())) for j in jobs]
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO jobs (namespace, job_id, status, priority, "
                           "created_at, record) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def _row_job(self, status: str, record: str, attempts: int) -> Job:
        rec = json.loads(record)
        rec["status"], rec["attempts"] = status, str(attempts)
        return Job.from_record(rec)

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute(
            "SELECT status, record, attempts FROM jobs WHERE namespace=? AND job_id=?",
            (self.namespace, job_id)).fetchone()
        return self._row_job(*row) if row else None

    def transition(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
                   **values: Any) -> bool:
        allowed = [s.value for s in allowed_from]
        patch = json.dumps({**_encode(values), "status": to.value})
        db = self._db()
        cur = db.execute(
            f"UPDATE jobs SET status=?, record=json_patch(record, ?) WHERE namespace=? "
            f"AND job_id=? AND status IN ({','.join('?' * len(allowed))})",
            (to.value, patch, self.namespace, job_id, *allowed))
        return cur.rowcount == 1

    def add_attempt(self, job_id: str) -> int:
        row = self._db().execute(
            "UPDATE jobs SET attempts = attempts + 1 WHERE namespace=? AND job_id=? "
            "RETURNING attempts", (self.namespace, job_id)).fetchone()
        return int(row[0]) if row else 0

    def delete(self, job_ids: Iterable[str]) -> None:
        self._db().executemany("DELETE FROM jobs WHERE namespace=? AND job_id=?",
                               [(self.namespace, j) for j in job_ids])

    def _prune(self) -> None:
        self._db().execute("DELETE FROM jobs WHERE namespace=? AND created_at < ?",
                           (self.namespace, time.time() - self.retention_s))

    def list(self, status: JobStatus | None = None, limit: int | None = 100) -> builtins.list[Job]:
        self._prune()
        sql = "SELECT status, record, attempts FROM jobs WHERE namespace=?"
        args: list[Any] = [self.namespace]
        if status:
            sql += " AND status=?"
            args.append(status.value)
        sql += " ORDER BY created_at DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._row_job(*row) for row in self._db().execute(sql, args)]

    def created_before(self, cutoff: float, statuses: Iterable[JobStatus]) -> builtins.list[str]:
        wanted = [s.value for s in statuses]
        rows = self._db().execute(
            f"SELECT job_id FROM jobs WHERE namespace=? AND created_at < ? AND status IN "
            f"({','.join('?' * len(wanted))})", (self.namespace, cutoff, *wanted))
        return [row[0] for row in rows]

    def claim(self, key: str, ttl_s: int) -> bool:
        db = self._db()
        now_s = time.time()
        db.execute("DELETE FROM claims WHERE namespace=? AND key=? AND expires < ?",
                   (self.namespace, key, now_s))
        cur = db.execute("INSERT OR IGNORE INTO claims (namespace, key, expires) "
                         "VALUES (?, ?, ?)", (self.namespace, key, now_s + ttl_s))
        return cur.rowcount == 1

    def counts(self) -> dict[JobStatus, dict[JobPriority, int]]:
        self._prune()
        out = {s: {p: 0 for p in JobPriority} for s in JobStatus}
        for status, prio, n in self._db().execute(
                "SELECT status, priority, COUNT(*) FROM jobs WHERE namespace=? "
                "GROUP BY status, priority", (self.namespace,)):
            out[JobStatus(status)][JobPriority(prio)] = n
        return out

    def publish(self, event: dict[str, Any]) -> None:
        db = self._db()
        db.execute("INSERT INTO events (namespace, ts, body) VALUES (?, ?, ?)",
                   (self.namespace, time.time(), json.dumps(event)))
        db.execute("DELETE FROM events WHERE ts < ?", (time.time() - 3600,))

    def dead_letter(self, reason: str, info: dict[str, Any]) -> None:
        entry = dead_letter_entry(reason, info)
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute("INSERT INTO dead_letters (namespace, ts, entry) VALUES (?, ?, ?)",
                             (self.namespace, entry["ts"], json.dumps(entry)))
            db.execute("DELETE FROM dead_letters WHERE namespace=? AND id <= ?",
                       (self.namespace, (cur.lastrowid or 0) - MAX_DEAD_LETTERS))

    def dead_letters(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT entry FROM dead_letters WHERE namespace=? ORDER BY id DESC LIMIT ?",
            (self.namespace, max(limit, 1)))
        return [json.loads(row[0]) for row in rows]

    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        (last,) = self._db().execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return self._follow(last, stop)

    def _follow(self, last: int, stop: threading.Event) -> Iterator[dict[str, Any]]:
        while not stop.is_set():
            rows = self._db().execute("SELECT id, body FROM events WHERE namespace=? AND id>? "
                                      "ORDER BY id", (self.namespace, last)).fetchall()
            for _, body in rows:
                yield json.loads(body)
            if rows:
                last = rows[-1][0]
            else:
                stop.wait(0.1)
