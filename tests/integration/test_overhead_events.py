"""Issue 13: task events on demand (``PDFTASKS_TASK_EVENTS=on-demand``, the default).

A real ``pdftasks worker`` and a real event receiver on the test Redis: a new worker sends
task events for its first lease (a monitor already running sees its first jobs), none once
no monitor asked for them within the lease, and again as soon as a monitor sends
``enable_events`` (what Flower does every 5 s; ``test_flower.py`` runs Flower itself).
``always`` keeps Celery's behaviour. Also: results and job records are still right, and
Celery's two INFO lines per job are not written (pdftasks' own line is).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
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


# Task-sent events on demand (the submitting side): no worker runs in these tests.


class SentEvents:
    """Redis's ``MONITOR`` in a thread: every ``PUBLISH`` of a task-sent event (with a
    message) and every empty one (the listeners probe), as the server saw them. A monitor
    client is no subscriber: it does not change what a probe finds."""

    def __init__(self, redis_client: Any) -> None:
        self.events = 0
        self.probes = 0
        self.marks: set[str] = set()
        self.client = redis_client
        self.monitor = redis_client.monitor()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the connection closed by stop()
            for command in self.monitor.listen():
                words = command.get("command", "").split(" ", 2)
                if words[0].upper() == "ECHO" and len(words) > 1:
                    self.marks.add(words[1])
                elif words[0].upper() == "PUBLISH" and words[1].endswith("celeryev/task.sent"):
                    if len(words) > 2 and words[2] not in ("", '""'):
                        self.events += 1
                    else:
                        self.probes += 1

    def sync(self) -> None:
        """Wait until the monitor has seen every command sent before this call."""
        mark = f"mark-{uuid.uuid4().hex}"
        self.client.echo(mark)
        wait_for(lambda: mark in self.marks, 10, "the monitor to catch up")

    def start(self) -> SentEvents:
        self.monitor.__enter__()
        self.thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.monitor.connection.disconnect()
        self.thread.join(timeout=10)


@pytest.fixture
def sent_events(redis_client: Any) -> Iterator[SentEvents]:
    watcher = SentEvents(redis_client).start()
    yield watcher
    watcher.stop()


def submit(n: int, first: int = 0) -> list[str]:
    from pdftasks.celery_app import get_app
    from pdftasks.client import submit_jobs

    ids = submit_jobs(get_app(), [
        {"template": "invoice.html", "data": sample_invoice(first + i),
         "output": f"sent{first + i}.pdf"} for i in range(n)])
    ids += [str(generate_pdf.delay(template="invoice.html", data=sample_invoice(first + n),
                                   output_filename=f"sent{first + n}.pdf").id)]
    return ids


def test_task_sent_events_only_while_a_monitor_listens(
        redis_client: Any, sent_events: SentEvents) -> None:
    from pdftasks.contrib.monitoring import SENT_EVENTS_PROBE_S

    # Given nothing listening to the event stream
    # When 300 jobs are submitted (a batch, then one by one)
    started = time.monotonic()
    for k in range(3):
        submit(99, first=100 * k)
    elapsed = time.monotonic() - started
    # Then no task-sent event was published, only a probe per interval at most
    sent_events.sync()
    assert sent_events.events == 0 and sent_events.probes >= 1
    assert sent_events.probes <= 1 + elapsed / SENT_EVENTS_PROBE_S + 1, sent_events.probes
    # And the jobs were queued all the same
    assert redis_client.llen("pdf.normal") == 300


def test_task_sent_events_always(redis_client: Any, sent_events: SentEvents,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pdftasks.celery_app import get_app

    # Given PDFTASKS_TASK_EVENTS=always (for monitors that subscribe without asking)
    app_ = get_app()
    monkeypatch.setattr(app_, "pdftasks_settings",
                        app_.pdftasks_settings.model_copy(update={"task_events": "always"}))
    # When jobs are submitted with nothing listening
    ids = submit(40)
    # Then each has its task-sent event, and nothing probes
    sent_events.sync()
    assert (sent_events.events, sent_events.probes) == (len(ids), 0)


def test_task_sent_events_reach_a_monitor(redis_client: Any, sent_events: SentEvents,
                                          listener: Listener) -> None:
    # Given a monitor listening to the event stream
    # When jobs are submitted, in a batch and one by one
    ids = submit(60)
    # Then the monitor gets every job's task-sent event
    wait_for(lambda: all("task-sent" in listener.types(i) for i in ids), 30,
             "every job's task-sent event")
    # And nothing else: the probes are empty messages, which Celery's receiver never sees
    assert {e["type"] for e in listener.events} == {"task-sent"}
    assert len(listener.events) == len(ids)
    # (as the server saw them: one PUBLISH per job)
    sent_events.sync()
    assert sent_events.events == len(ids)


def test_a_monitor_that_starts_later_gets_task_sent_events(
        redis_client: Any, sent_events: SentEvents) -> None:
    from pdftasks.contrib.monitoring import SENT_EVENTS_PROBE_S

    # Given jobs submitted while nothing listened (no events: the process knows it)
    submit(5)
    sent_events.sync()
    assert sent_events.events == 0
    # When a monitor starts listening
    late = Listener().start(redis_client)
    try:
        started = time.monotonic()
        # Then jobs submitted from one probe interval on have their task-sent events
        seen: list[str] = []

        def one_seen() -> bool:
            seen.extend(submit(0, first=1000 + len(seen)))
            return any("task-sent" in late.types(i) for i in seen)

        wait_for(one_seen, SENT_EVENTS_PROBE_S + 10, "a task-sent event after the monitor "
                 "started", interval=0.05)
        assert time.monotonic() - started <= SENT_EVENTS_PROBE_S + 2
        after = submit(3, first=2000)
        wait_for(lambda: all("task-sent" in late.types(i) for i in after), 30,
                 "the task-sent events of every job submitted next")
    finally:
        late.stop()
