"""Job records: what Celery's result backend cannot do (list jobs, count them, cancel them).

Two implementations of one interface: ``RedisJobStore`` (a hash per job, a sorted set per
status and priority, atomic transitions in Lua, events on pub/sub) and ``SqliteJobStore``
for the zero-setup default (one table, transitions as conditional UPDATEs, an event table).
Both are safe to use from many processes at once: no read-modify-write in Python.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pdftasks.errors import BrokerUnavailableError
from pdftasks.models import JobPriority, JobStatus
from pdftasks.settings import JOB_RETENTION_S, Settings

_TIMES = ("created_at", "started_at", "completed_at")
#: Most dead letters kept per namespace (oldest dropped first).
MAX_DEAD_LETTERS = 10_000
#: Longest text field of a dead letter, in characters (excerpts, never whole messages).
DEAD_LETTER_EXCERPT = 2048

log = logging.getLogger(__name__)


def _ts(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value else None


def _dt(value: float | str | None) -> dt.datetime | None:
    if value in (None, "", "None"):
        return None
    return dt.datetime.fromtimestamp(float(value), dt.UTC)  # type: ignore[arg-type]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Job:
    """One PDF job, with the guide's fields. Times are timezone-aware UTC datetimes."""

    job_id: str
    template: str
    data: dict[str, Any]
    output_filename: str
    css_file: str | None = None
    status: JobStatus = JobStatus.PENDING
    priority: JobPriority = JobPriority.NORMAL
    created_at: dt.datetime = field(default_factory=now)
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    result_path: str | None = None
    error: str | None = None
    retry_count: int = 0
    max_retries: int = 3
    metadata: dict[str, Any] = field(default_factory=dict)
    pages: int | None = None
    attempts: int = 0

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.completed_at:
            return (self.completed_at - self.started_at).total_seconds()
        return None

    def to_record(self) -> dict[str, str]:
        """Flat string mapping (Redis hash / SQLite row)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _TIMES:
                value = "" if value is None else repr(_ts(value))
            elif f.name in ("data", "metadata"):
                value = json.dumps(value, separators=(",", ":"))
            elif f.name == "status":
                value = value.value
            elif f.name == "priority":
                value = str(int(value))
            elif value is None:
                value = ""
            out[f.name] = str(value)
        return out

    @classmethod
    def from_record(cls, rec: dict[str, str]) -> Job:
        def opt(name: str) -> str | None:
            return rec.get(name) or None

        return cls(
            job_id=rec["job_id"], template=rec["template"], data=json.loads(rec["data"]),
            output_filename=rec["output_filename"], css_file=opt("css_file"),
            status=JobStatus(rec["status"]), priority=JobPriority(int(rec["priority"])),
            created_at=_dt(rec["created_at"]) or now(), started_at=_dt(opt("started_at")),
            completed_at=_dt(opt("completed_at")), result_path=opt("result_path"),
            error=opt("error"), retry_count=int(rec.get("retry_count") or 0),
            max_retries=int(rec.get("max_retries") or 0),
            metadata=json.loads(rec.get("metadata") or "{}"),
            pages=int(rec["pages"]) if rec.get("pages") else None,
            attempts=int(rec.get("attempts") or 0),
        )


def dead_letter_entry(reason: str, info: dict[str, Any]) -> dict[str, Any]:
    """A bounded, JSON-safe dead letter: ``reason``, ``ts`` and ``info``'s fields, every text
    cut to ``DEAD_LETTER_EXCERPT`` characters and anything but a scalar turned into text."""

    def cut(value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if not isinstance(value, str):
            try:
                value = repr(value)
            except Exception:  # a hostile object: its type is all we keep
                value = f"<{type(value).__name__}>"
        return value if len(value) <= DEAD_LETTER_EXCERPT else \
            value[:DEAD_LETTER_EXCERPT - 1] + "…"

    entry = {str(k)[:64]: cut(v) for k, v in list(info.items())[:32]}
    entry.update(reason=cut(reason), ts=time.time())
    return entry


def _encode(values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dt.datetime):
            value = repr(value.timestamp())
        elif isinstance(value, JobStatus):
            value = value.value
        elif value is None:
            value = ""
        out[key] = str(value)
    return out


class JobStore(ABC):
    """Job records and lifecycle events of one namespace."""

    def __init__(self, namespace: str, retention_s: int = JOB_RETENTION_S) -> None:
        self.namespace = namespace
        self.retention_s = retention_s

    @abstractmethod
    def create_many(self, jobs: Iterable[Job]) -> None:
        """Record new PENDING jobs (pipelined)."""

    def create(self, job: Job) -> None:
        self.create_many([job])

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job, or None if unknown (never a made-up PENDING)."""

    @abstractmethod
    def transition(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
                   **values: Any) -> bool:
        """Atomically move a job to ``to`` if its status is in ``allowed_from``.

        ``values`` are stored with it. Returns False when the job is unknown or not in an
        allowed status (nothing changes then).
        """

    @abstractmethod
    def add_attempt(self, job_id: str) -> int:
        """Count one more delivery of the job to a worker; return the new count."""

    @abstractmethod
    def delete(self, job_ids: Iterable[str]) -> None:
        """Forget jobs (cleanup)."""

    @abstractmethod
    def list(self, status: JobStatus | None = None, limit: int | None = 100) -> builtins.list[Job]:
        """Jobs newest first, optionally of one status."""

    @abstractmethod
    def created_before(self, cutoff: float, statuses: Iterable[JobStatus]) -> builtins.list[str]:
        """Ids of jobs in ``statuses`` created before ``cutoff`` (epoch seconds)."""

    @abstractmethod
    def claim(self, key: str, ttl_s: int) -> bool:
        """Take ``key`` once: True for the first caller within ``ttl_s``, False after."""

    @abstractmethod
    def counts(self) -> dict[JobStatus, dict[JobPriority, int]]:
        """Number of jobs per status and priority."""

    @abstractmethod
    def publish(self, event: dict[str, Any]) -> None:
        """Send a lifecycle event to listeners (best effort, live only)."""

    @abstractmethod
    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """Lifecycle events published from now on, until ``stop`` is set."""

    def pending_count(self) -> int:
        return sum(self.counts()[JobStatus.PENDING].values())

    def dead_letter(self, reason: str, info: dict[str, Any]) -> None:
        """Keep a message no job record could take (``pdftasks.worker.guard``): ``reason`` and
        ``info`` (queue, task, message id, excerpts of body and headers), bounded by
        ``dead_letter_entry``. This default only logs it; stores override it to keep it."""
        log.error("dead letter (not kept by this job store): %s",
                  json.dumps(dead_letter_entry(reason, info)))

    def dead_letters(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The newest dead letters first (at most ``limit``)."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


_TRANSITION = """
local job = KEYS[1]
local ns, id, to = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', job, 'status')
if not cur then return 0 end
local ok = false
for s in string.gmatch(ARGV[4], '[^,]+') do if s == cur then ok = true end end
if not ok then return 0 end
local prio = redis.call('HGET', job, 'priority')
local created = redis.call('HGET', job, 'created_at')
redis.call('ZREM', ns .. ':idx:' .. cur .. ':' .. prio, id)
redis.call('ZADD', ns .. ':idx:' .. to .. ':' .. prio, created, id)
redis.call('HSET', job, 'status', to)
for i = 5, #ARGV, 2 do redis.call('HSET', job, ARGV[i], ARGV[i + 1]) end
return 1
"""


class RedisJobStore(JobStore):
    """Jobs as Redis hashes ``{ns}:job:{id}``; sorted sets ``{ns}:idx:{status}:{priority}``."""

    def __init__(self, url: str, namespace: str, retention_s: int = JOB_RETENTION_S) -> None:
        super().__init__(namespace, retention_s)
        import redis

        self._redis_module = redis
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                           socket_connect_timeout=5, health_check_interval=25)
        self._transition = self.client.register_script(_TRANSITION)

    def _key(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}"

    def _idx(self, status: JobStatus, priority: JobPriority | int) -> str:
        return f"{self.namespace}:idx:{status.value}:{int(priority)}"

    def _guard(self) -> Any:
        return _RedisErrors(self._redis_module)

    def create_many(self, jobs: Iterable[Job]) -> None:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for job in jobs:
                key = self._key(job.job_id)
                pipe.hset(key, mapping=job.to_record())  # type: ignore[arg-type]
                pipe.expire(key, self.retention_s)
                pipe.zadd(self._idx(job.status, job.priority),
                          {job.job_id: job.created_at.timestamp()})
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        with self._guard():
            rec = self.client.hgetall(self._key(job_id))
        return Job.from_record(rec) if rec.get("status") else None  # type: ignore[arg-type]

    def transition(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
                   **values: Any) -> bool:
        args = [self.namespace, job_id, to.value, ",".join(s.value for s in allowed_from)]
        for key, value in _encode(values).items():
            args += [key, value]
        with self._guard():
            return bool(self._transition(keys=[self._key(job_id)], args=args))

    def add_attempt(self, job_id: str) -> int:
        key = self._key(job_id)
        with self._guard():
            if not self.client.exists(key):
                return 0
            return int(self.client.hincrby(key, "attempts", 1))

    def delete(self, job_ids: Iterable[str]) -> None:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.delete(self._key(job_id))
                for status in JobStatus:
                    for prio in JobPriority:
                        pipe.zrem(self._idx(status, prio), job_id)
            pipe.execute()

    def _prune(self, pipe: Any) -> None:
        cutoff = time.time() - self.retention_s
        for status in JobStatus:
            for prio in JobPriority:
                pipe.zremrangebyscore(self._idx(status, prio), "-inf", cutoff)

    def list(self, status: JobStatus | None = None, limit: int | None = 100) -> builtins.list[Job]:
        statuses = [status] if status else list(JobStatus)
        end = -1 if limit is None else limit - 1
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            self._prune(pipe)
            for s in statuses:
                for prio in JobPriority:
                    pipe.zrevrange(self._idx(s, prio), 0, end, withscores=True)
            replies = pipe.execute()[len(JobStatus) * len(JobPriority):]
            ranked = sorted((item for reply in replies for item in reply),
                            key=lambda item: item[1], reverse=True)
            if limit is not None:
                ranked = ranked[:limit]
            ids = [job_id for job_id, _ in ranked]
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._key(job_id))
            records = pipe.execute()
        return [Job.from_record(r) for r in records if r.get("status")]

    def created_before(self, cutoff: float, statuses: Iterable[JobStatus]) -> builtins.list[str]:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for s in statuses:
                for prio in JobPriority:
                    pipe.zrangebyscore(self._idx(s, prio), "-inf", f"({cutoff}")
            return [job_id for reply in pipe.execute() for job_id in reply]

    def claim(self, key: str, ttl_s: int) -> bool:
        with self._guard():
            return bool(self.client.set(f"{self.namespace}:claim:{key}", "1", nx=True,
                                        ex=ttl_s))

    def counts(self) -> dict[JobStatus, dict[JobPriority, int]]:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            self._prune(pipe)
            for s in JobStatus:
                for prio in JobPriority:
                    pipe.zcard(self._idx(s, prio))
            replies = iter(pipe.execute()[len(JobStatus) * len(JobPriority):])
        return {s: {p: int(next(replies)) for p in JobPriority} for s in JobStatus}

    def publish(self, event: dict[str, Any]) -> None:
        with self._guard():
            self.client.publish(f"{self.namespace}:events", json.dumps(event))

    def dead_letter(self, reason: str, info: dict[str, Any]) -> None:
        """LPUSH onto ``{namespace}:dead``, trimmed to ``MAX_DEAD_LETTERS``."""
        key = f"{self.namespace}:dead"
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(key, json.dumps(dead_letter_entry(reason, info)))
            pipe.ltrim(key, 0, MAX_DEAD_LETTERS - 1)
            pipe.execute()

    def dead_letters(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        with self._guard():
            return [json.loads(e) for e in
                    self.client.lrange(f"{self.namespace}:dead", 0, max(limit, 1) - 1)]

    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(f"{self.namespace}:events")  # now, not at the first next()
        return self._follow(pubsub, stop)

    def _follow(self, pubsub: Any, stop: threading.Event) -> Iterator[dict[str, Any]]:
        try:
            while not stop.is_set():
                try:
                    message = pubsub.get_message(timeout=0.2)
                except self._redis_module.RedisError:
                    stop.wait(0.5)
                    continue
                if message and message.get("type") == "message":
                    yield json.loads(message["data"])
        finally:
            pubsub.close()

    def close(self) -> None:
        self.client.close()


class _RedisErrors:
    """Turn connection failures into ``BrokerUnavailableError`` (typed, transient)."""

    def __init__(self, redis_module: Any) -> None:
        self.errors = (redis_module.ConnectionError, redis_module.TimeoutError)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and isinstance(exc, self.errors):
            raise BrokerUnavailableError(f"cannot reach the job store: {exc}") from exc


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


def open_store(settings: Settings) -> JobStore:
    """The job store named by ``settings`` (Redis URL, ``dynamodb://TABLE`` or
    ``sqlite:///path``)."""
    url = settings.effective_job_store_url
    if url.startswith("sqlite:///"):
        return SqliteJobStore(url.removeprefix("sqlite:///"), settings.queue_namespace,
                              settings.job_retention_s)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisJobStore(url, settings.queue_namespace, settings.job_retention_s)
    if url.startswith("dynamodb://"):
        from pdftasks.aws import DynamoDBJobStore

        return DynamoDBJobStore(url.removeprefix("dynamodb://").strip("/") or
                                settings.dynamodb_table, settings.queue_namespace,
                                settings.job_retention_s, settings)
    raise ValueError(f"unsupported PDFTASKS_JOB_STORE_URL {url!r} "
                     "(redis://, dynamodb://TABLE or sqlite:///)")
