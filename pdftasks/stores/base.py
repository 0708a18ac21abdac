"""The job store interface (``JobStore``) and what every implementation shares: dead-letter
entries, their bounds, and the encoding of the values a transition stores."""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pdftasks.models import Job, JobPriority, JobStatus, part_job_id
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


#: A Celery result write made with a job record change: (result key, encoded meta, expiry in
#: seconds, 0 = none). Written like Celery's Redis backend does (SET, PUBLISH on the key),
#: and never over a stored SUCCESS.
ResultWrite = tuple[str, str, int]
ResultWrites = Sequence[ResultWrite]
#: A counter a transition adds to (``JobStore.finish``): (hash key, field, amount).
Counter = tuple[str, str, float]
Counters = Sequence[Counter]


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

    def begin(self, job_id: str, retries: int, max_redeliveries: int,
              allowed_from: Iterable[JobStatus], results: ResultWrites = (),
              **values: Any) -> tuple[int, bool]:
        """A worker starts a delivery of the job: count the attempt (``add_attempt``) and,
        unless the job is unknown or its process died more than ``max_redeliveries`` times
        on it (attempts beyond ``retries + 1``), move it to PROCESSING from ``allowed_from``
        with ``values``. Returns (attempts, moved); attempts 0 = no such job.

        ``results``: Celery result writes (``ResultWrite``) to make with the move, once it
        is made (see :meth:`supports_result_writes`). This default makes up to three round
        trips; stores override it with one."""
        self._refuse_result_writes(results)
        attempts = self.add_attempt(job_id)
        if attempts == 0 or attempts - retries - 1 > max_redeliveries:
            return attempts, False
        return attempts, self.transition(job_id, JobStatus.PROCESSING, allowed_from, **values)

    def finish(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
               event: dict[str, Any] | None = None, results: ResultWrites = (),
               counters: Counters = (), **values: Any) -> bool:
        """``transition`` and, if it was made, ``publish(event)`` and add ``counters``
        (``Counter``: a plugin's figures, such as monitoring's); ``results`` (Celery result
        writes, see :meth:`begin`) are made whether or not the job moved, after it. Stores
        override it with one round trip, and may keep the changed record for
        :meth:`remembered`."""
        self._refuse_result_writes(results)
        if counters:
            raise NotImplementedError(f"{type(self).__name__} keeps no counters")
        moved = self.transition(job_id, to, allowed_from, **values)
        if moved and event is not None:
            try:
                self.publish(event)
            except Exception:  # listeners are best effort; the record is already right
                log.exception("could not publish %s event for %s", event.get("event"), job_id)
        return moved

    def keeps_counters(self) -> bool:
        """Whether :meth:`finish` takes ``counters``."""
        return False

    @contextlib.contextmanager
    def remembered(self, job_id: str) -> Iterator[None]:
        """Within this block, :meth:`get` of ``job_id`` may answer with the record as the
        last :meth:`finish` of it left it, without asking the store again (for the hooks
        that run right after a transition). This default always asks."""
        yield

    def supports_result_writes(self, result_url: str) -> bool:
        """Whether :meth:`begin` and :meth:`finish` can write Celery results kept at
        ``result_url`` (the result backend's URL) along with the job record."""
        return False

    def _refuse_result_writes(self, results: ResultWrites) -> None:
        if results:
            raise NotImplementedError(f"{type(self).__name__} cannot write Celery results")

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

    def record_part_done(self, parent_id: str, run: str, index: int, total: int) -> int:
        """Count part ``index`` of the split job ``parent_id`` (``total`` parts; ``run``: its
        fan-out, new when a failed job is retried) as rendered, once however often it is
        reported; store the count as the parent's ``parts_done`` (while it is PROCESSING)
        and return it.

        This default counts the COMPLETED part records (``total`` reads); stores override it
        with one atomic step. Two parts finishing together may both see the last count: the
        merge they start is idempotent."""
        done = 0
        for i in range(total):
            part = self.get(part_job_id(parent_id, i))
            done += part is not None and part.status is JobStatus.COMPLETED
        self.transition(parent_id, JobStatus.PROCESSING, (JobStatus.PROCESSING,),
                        parts_done=done)
        return done

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
