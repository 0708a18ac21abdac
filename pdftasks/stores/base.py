"""The job store interface (``JobStore``) and what every implementation shares: dead-letter
entries, their bounds, and the encoding of the values a transition stores."""

from __future__ import annotations

import builtins
import datetime as dt
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

from pdftasks.models import Job, JobPriority, JobStatus
from pdftasks.settings import JOB_RETENTION_S

#: Most dead letters kept per namespace (oldest dropped first).
MAX_DEAD_LETTERS = 10_000
#: Longest text field of a dead letter, in characters (excerpts, never whole messages).
DEAD_LETTER_EXCERPT = 2048

log = logging.getLogger(__name__)


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
