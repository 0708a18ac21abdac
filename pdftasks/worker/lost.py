"""Messages the Redis broker lost: found by their job records and sent again.

kombu's Redis transport takes a message off its queue with ``BRPOP`` and records it as
unacknowledged (the hash that the visibility timeout restores from) in a second round trip.
Anything that breaks between the two loses the message for good, and with it the job,
which stays PENDING (or RETRYING, or PROCESSING on a redelivery) forever:

- the worker's main process is SIGKILLed (OOM killer, node loss) after the pop;
- Redis stops or crashes after the pop and before the record: the worker's write of the
  unacked record fails and kombu drops the message it holds (``basic_consume`` records it
  before it hands it to Celery);
- the connection breaks while the reply of ``BRPOP`` is on its way.

Neither the visibility timeout nor late acknowledgement brings such a message back, since
nothing remembers it. The job record does: every worker on a Redis broker runs
``LostMessageSweep``, a thread that every half visibility timeout (one worker of the fleet
per period: a claim in the job store) looks at the jobs not final and older than the
visibility timeout (``stall_after``) and at the broker's messages (every priority queue of
the namespace and kombu's unacked record, ``live_messages``). A job without a message in
two looks in a row, with its record unchanged in between, lost it: its message is sent
again from the record, under the same id (the render is idempotent; a delivery that finds
its job final does nothing). A job with secret options (encrypt and sign passwords, never
stored) cannot be sent again: it FAILS with an error that says to submit it again.

Split jobs have their own watch (``pdftasks.worker.split``): parts and parents with parts
are left to it. SQS needs neither: a message received by a worker that dies comes back
after its visibility timeout by itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, bootsteps

from pdftasks.celery_app import GENERATE_PDF, queue_names
from pdftasks.compat.kombu import queue_keys
from pdftasks.models import Job
from pdftasks.options import redacted_paths
from pdftasks.worker.tasks import (
    _RUNNABLE,
    app_settings,
    fail_job,
    job_store,
    patiently,
    store_failed_result,
    task_kwargs,
)

log = logging.getLogger(__name__)


def watch_period(app: Celery) -> float:
    """Seconds between two looks for lost messages: half the visibility timeout (an ETA
    message held longer than that timeout would be delivered again by kombu)."""
    return max(1.0, app_settings(app).visibility_timeout_s / 2)


def stall_after(app: Celery) -> float:
    """Seconds after which a job's message may be taken for lost: the visibility timeout,
    kombu's restore interval (``celery_app``) and a margin. A message held by a dead worker
    is back in its queue by then."""
    v = app_settings(app).visibility_timeout_s
    return float(v + max(1, min(10, v // 10)) + 5)


def _message_id(value: Any) -> str | None:
    """The task id of a raw kombu message (a queue item) or of an unacked record
    (``[message, exchange, routing key]``); None if it is not one."""
    try:
        payload = json.loads(value)
    except (TypeError, ValueError):
        return None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers")
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None


def live_messages(app: Celery, job_ids: Iterable[str]) -> set[str]:
    """Those of ``job_ids`` with a message in the Redis broker: in one of the namespace's
    queues (every priority step) or in kombu's unacked record (taken by a worker, or held
    for its ETA). On another broker: all of them (nothing is taken for lost).

    Queues are read from their head (``LPUSH`` end) in chunks: a message present for the
    whole look is seen even while others are pushed and popped. Stops reading once every
    id is found."""
    wanted = set(job_ids)
    found: set[str] = set()

    def look(values: Iterable[Any]) -> bool:
        for value in values:
            task_id = _message_id(value)
            if task_id in wanted:
                found.add(task_id)
        return found == wanted

    if not wanted:
        return found
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        unacked = getattr(channel, "unacked_key", None)
        if unacked is None:
            return wanted
        client = channel.client
        for queue in queue_names(app_settings(app).queue_namespace):
            for key in queue_keys(channel, queue):
                start = 0
                while True:
                    chunk = client.lrange(key, start, start + 499)
                    if look(chunk):
                        return found
                    if len(chunk) < 500:
                        break
                    start += 500
        for _, value in client.hscan_iter(unacked, count=500):
            if look([value]):
                break
    return found


def _fingerprint(job: Job) -> str:
    return f"{job.status.value}:{job.attempts}:{job.retry_count}"


def _watched_elsewhere(job: Job) -> bool:
    # Parts, merges and a split parent with parts: the split watch's (split.py).
    return bool(job.parent_id or job.parts_total)


@dataclass
class SweepReport:
    """What one look found: jobs without a message seen for the first time (``suspects``),
    sent again (``resent``) and failed because their secrets are not kept (``failed``)."""

    looked_at: int = 0
    suspects: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def sweep_lost_messages(app: Celery, older_than: float | None = None) -> SweepReport:
    """One look (see the module's doc): jobs not final, created more than ``older_than``
    seconds ago (default ``stall_after``), with no message in the broker. Those without one
    in the previous look too, with the same record, are sent again (or FAIL if their options
    had secrets). Idempotent; safe to run from several workers (one per period acts)."""
    report = SweepReport()
    s = app_settings(app)
    if s.is_sqs or s.is_local:
        return report
    store = job_store(app)
    cutoff = time.time() - (stall_after(app) if older_than is None else older_than)
    ids: list[str] = patiently(store.created_before, cutoff, _RUNNABLE)
    report.looked_at = len(ids)
    missing = set(ids) - live_messages(app, ids)
    if missing:
        time.sleep(0.5)  # one taken off a queue now is in the unacked record after this
        missing -= live_messages(app, sorted(missing))
    jobs = [job for job in (patiently(store.get, i) for i in sorted(missing))
            if job is not None and job.status in _RUNNABLE and not _watched_elsewhere(job)]
    key = f"{s.queue_namespace}:lost-suspects"
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        before = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
        now_suspects = {job.job_id: _fingerprint(job) for job in jobs
                        if before.get(job.job_id) != _fingerprint(job)}
        pipe = client.pipeline()
        pipe.delete(key)
        if now_suspects:
            pipe.hset(key, mapping=now_suspects)
            pipe.expire(key, int(4 * watch_period(app)) + 60)
        pipe.execute()
    report.suspects = sorted(now_suspects)
    for job in jobs:
        if job.job_id in now_suspects:
            continue
        current = patiently(store.get, job.job_id)
        if current is None or _fingerprint(current) != _fingerprint(job):
            continue  # it moved since the look: its message was not lost
        if resend_lost(app, current):
            report.resent.append(job.job_id)
        else:
            report.failed.append(job.job_id)
    return report


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def resend_lost(app: Celery, job: Job) -> bool:
    """Send ``job``'s message again from its record, under its id and retry count; a job
    whose options had secrets FAILS instead (returns False)."""
    secrets = redacted_paths(job.options)
    if secrets:
        named = ", ".join(f"options.{path}" for path in secrets)
        error = (f"the broker lost this job's message (a worker or Redis stopped while it "
                 f"was being taken) and it cannot be sent again without its secret options "
                 f"({named}), which are never stored; submit the job again")
        log.error("job %s: %s", job.job_id, error)
        fail_job(app, job.job_id, error)
        store_failed_result(app, job.job_id)
        return False
    log.warning("job %s: its message was lost by the broker (%s, %d attempt(s)); sending "
                "it again", job.job_id, job.status.value, job.attempts)
    app.tasks[GENERATE_PDF].apply_async(kwargs=task_kwargs(job), task_id=job.job_id,
                                        retries=job.retry_count, pdftasks_recorded=True)
    return True


class LostMessageSweep(bootsteps.StartStopStep):
    """Worker bootstep (Redis broker): ``sweep_lost_messages`` every ``watch_period`` in a
    thread of the main process (a look reads the queues; the event loop does not wait for
    it). One worker of the fleet looks per period (a claim in the job store)."""

    label = "pdftasks-lost-messages"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.app: Celery = worker.app
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        super().__init__(worker, **kwargs)

    def include_if(self, worker: Any) -> bool:
        s = app_settings(worker.app)
        return not (s.is_sqs or s.is_local)

    def start(self, worker: Any) -> None:
        self.stopping.clear()
        self.thread = threading.Thread(target=self.run, name="pdftasks-lost-messages",
                                       daemon=True)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None

    def run(self) -> None:
        period = watch_period(self.app)
        store = job_store(self.app)
        while not self.stopping.wait(period):
            try:
                slot = int(time.time() // period)
                if not store.claim(f"lost-sweep:{slot}", max(1, int(period))):
                    continue
                report = sweep_lost_messages(self.app)
                if report.suspects:
                    log.info("%d job(s) without a message in the broker; looking again in "
                             "%.0f s", len(report.suspects), period)
            except Exception:  # the broker or the store is away: the next period tries
                log.warning("could not look for lost messages", exc_info=True)


def install(app: Celery) -> None:
    """Add ``LostMessageSweep`` to ``app``'s workers."""
    app.steps["worker"].add(LostMessageSweep)


__all__ = ["LostMessageSweep", "SweepReport", "live_messages", "resend_lost", "stall_after",
           "sweep_lost_messages", "watch_period"]
