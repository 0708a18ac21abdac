"""Issue 13: task events on demand (``PDFTASKS_TASK_EVENTS=on-demand``, the default).

A real ``pdftasks worker`` and a real event receiver on the test Redis: a new worker sends
task events for its first lease (a monitor already running sees its first jobs), none once
no monitor asked for them within the lease, and again as soon as a monitor sends
``enable_events`` (what Flower does every 5 s; ``test_flower.py`` runs Flower itself).
``always`` keeps Celery's behaviour. Also: results and job records are still right, and
Celery's two INFO lines per job are not written (pdftasks' own line is).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pdftasks import generate_pdf
from pdftasks.celery_app import app
from pdftasks.contrib.monitoring import TASK_EVENTS_LEASE_S
from pdftasks.samples import sample_invoice
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

WORKER_SIDE = {"task-received", "task-started", "task-succeeded"}


class Listener:
    """Celery's event receiver in a thread: every task event on the broker, by task id."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.receiver: Any = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with app.connection_for_read() as conn:
            self.receiver = app.events.Receiver(conn, handlers={"*": self.events.append})
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self, redis_client: Any) -> Listener:
        before = pattern_subscribers(redis_client)
        self.thread.start()
        self.ready.wait(10)
        # Pub/sub keeps nothing for late subscribers: start only once subscribed.
        wait_for(lambda: pattern_subscribers(redis_client) > before, 30,
                 "the event receiver to subscribe")
        return self

    def types(self, task_id: str) -> set[str]:
        return {e["type"] for e in list(self.events) if e.get("uuid") == task_id}

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(timeout=10)


def pattern_subscribers(redis_client: Any) -> int:
    return sum(1 for c in redis_client.client_list() if int(c.get("psub", 0)) > 0)


@pytest.fixture
def listener(redis_client: Any) -> Iterator[Listener]:
    started = Listener().start(redis_client)
    yield started
    started.stop()


def run_job(n: int) -> str:
    result = generate_pdf.delay(template="invoice.html", data=sample_invoice(n),
                                output_filename=f"events{n}.pdf")
    out = result.get(timeout=120)
    assert out["pages"] == 1
    return str(result.id)


def test_task_events_follow_monitors(start_worker, listener: Listener) -> None:
    # Given a new worker (stock settings: task events on demand)
    worker = start_worker(concurrency=1)
    # When a job runs during its first lease
    first = run_job(1)
    # Then a monitor sees it, from its task-sent event to its task-succeeded
    wait_for(lambda: listener.types(first) >= {"task-sent", *WORKER_SIDE}, 30,
             "the first job's task events")

    # When no monitor asks for task events during a lease
    wait_for(lambda: "task events off" in worker.log, TASK_EVENTS_LEASE_S + 60,
             "the worker to turn task events off")
    quiet = run_job(2)
    # And then a monitor asks (Flower's request; the reply means the worker has it)
    replies = app.control.broadcast("enable_events", reply=True, timeout=5)
    assert replies and all("ok" in next(iter(r.values())) for r in replies), replies
    loud = run_job(3)
    # Then the job after the request has its worker-side events
    wait_for(lambda: listener.types(loud) >= {"task-sent", *WORKER_SIDE}, 30,
             "the task events of the job run after enable_events")
    # And the job run while no monitor asked has none: events reach the receiver in the
    # order the worker sent them, and the later job's are there
    assert listener.types(quiet) == {"task-sent"}
    # And both jobs are recorded as completed, with their Celery results
    from pdftasks.celery_app import get_app
    from pdftasks.worker.tasks import job_store

    for job_id in (first, quiet, loud):
        job = job_store(get_app()).get(job_id)
        assert job is not None and job.status.value == "completed" and job.attempts == 1
    # And the worker logged one pdftasks line per job at INFO, not Celery's two
    log = worker.log
    assert log.count("rendered events") == 3
    assert f"[{quiet}] received" not in log and f"[{quiet}] succeeded" not in log


def test_task_events_always(start_worker, listener: Listener) -> None:
    # Given a worker told to send task events all the time
    started = time.monotonic()
    worker = start_worker(concurrency=1, task_events="always")
    # (a broadcast sent before its first loop turn subscribed to the control channel is
    # not delivered: ask again until it answers)
    conf = wait_for(lambda: app.control.inspect(timeout=2).conf(), 30, "the worker's conf")
    assert [c["worker_send_task_events"] for c in conf.values()] == [True]
    # When a job runs after the time a lease would have run out
    wait_for(lambda: time.monotonic() > started + TASK_EVENTS_LEASE_S + 2,
             TASK_EVENTS_LEASE_S + 5, "a lease's time")
    late = run_job(4)
    # Then it has its worker-side events, and the worker never turned them off
    wait_for(lambda: listener.types(late) >= WORKER_SIDE, 30, "the late job's events")
    assert "task events off" not in worker.log
