"""Job records: what Celery's result backend cannot do (list jobs, count them, cancel them).

Two implementations of one interface: ``RedisJobStore`` (a hash per job, a sorted set per
status and priority, atomic transitions in Lua, events on pub/sub) and ``SqliteJobStore``
for the zero-setup default (one table, transitions as conditional UPDATEs, an event table).
Both are safe to use from many processes at once: no read-modify-write in Python.
"""

from __future__ import annotations

from pdftasks.models import Job
from pdftasks.settings import Settings
from pdftasks.stores.base import (
    DEAD_LETTER_EXCERPT,
    MAX_DEAD_LETTERS,
    JobStore,
    _encode,
    dead_letter_entry,
)
from pdftasks.stores.redis import RedisJobStore
from pdftasks.stores.sqlite import SqliteJobStore

__all__ = [
    "DEAD_LETTER_EXCERPT",
    "MAX_DEAD_LETTERS",
    "Job",
    "JobStore",
    "RedisJobStore",
    "SqliteJobStore",
    "_encode",
    "dead_letter_entry",
    "open_store",
]


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
        from pdftasks.stores.dynamodb import DynamoDBJobStore

        return DynamoDBJobStore(url.removeprefix("dynamodb://").strip("/") or
                                settings.dynamodb_table, settings.queue_namespace,
                                settings.job_retention_s, settings)
    raise ValueError(f"unsupported PDFTASKS_JOB_STORE_URL {url!r} "
                     "(redis://, dynamodb://TABLE or sqlite:///)")
