"""Issue 13: a job's start and end each in one job store call, with Celery's result writes.

``JobStore.begin`` (attempt count, PROCESSING) and ``JobStore.finish`` (transition, store
event) on the real Redis of the tests and on SQLite (the default implementations), and the
Redis store's result writes made along with them: SET with expiry, PUBLISH on the result
key (what ``AsyncResult.get()`` listens to), never over a stored SUCCESS.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdftasks.models import Job, JobStatus
from pdftasks.stores import JobStore, RedisJobStore, SqliteJobStore

pytestmark = pytest.mark.integration

RUNNABLE = (JobStatus.PENDING, JobStatus.RETRYING, JobStatus.PROCESSING)


def new_job(store: JobStore, job_id: str) -> Job:
    job = Job(job_id=job_id, template="invoice.html", data={"n": 1},
              output_filename="x.pdf")
    store.create(job)
    return job


@pytest.fixture(params=["redis", "sqlite"])
def store(request: Any, redis_url: str, redis_client: Any, tmp_path: Path
          ) -> Iterator[JobStore]:
    made: JobStore = (RedisJobStore(redis_url, "t13") if request.param == "redis"
                      else SqliteJobStore(tmp_path / "jobs.db", "t13"))
    yield made
    made.close()


def test_begin_counts_the_attempt_and_moves_to_processing(store: JobStore) -> None:
    # Given a PENDING job
    new_job(store, "j1")
    started = dt.datetime.now(dt.UTC)
    # When a worker begins its first delivery
    attempts, moved = store.begin("j1", 0, 2, RUNNABLE, started_at=started, retry_count=0)
    # Then one attempt is counted and the record is PROCESSING with the values
    assert (attempts, moved) == (1, True)
    job = store.get("j1")
    assert job is not None and job.status is JobStatus.PROCESSING and job.attempts == 1
    assert job.started_at is not None and abs(job.started_at.timestamp()
                                              - started.timestamp()) < 0.01


def test_begin_refuses_unknown_crashed_and_final_jobs(store: JobStore) -> None:
    # An unknown job: attempts 0, nothing made
    assert store.begin("nope", 0, 2, RUNNABLE) == (0, False)
    assert store.get("nope") is None
    # A job whose worker process died on it more than max_redeliveries times: counted,
    # not moved (the task fails it as a poison job)
    new_job(store, "j2")
    first = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert store.begin("j2", 0, 1, RUNNABLE, started_at=first) == (1, True)
    assert store.begin("j2", 0, 1, RUNNABLE, started_at=first) == (2, True)  # 1 crash: ok
    late = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert store.begin("j2", 0, 1, RUNNABLE, started_at=late) == (3, False)  # 2 crashes
    job = store.get("j2")
    assert job is not None and job.attempts == 3 and job.started_at == first
    # retries count as expected deliveries, not crashes
    assert store.begin("j2", 2, 1, RUNNABLE, started_at=late) == (4, True)
    # A cancelled job: counted, not moved
    new_job(store, "j3")
    assert store.transition("j3", JobStatus.CANCELLED, (JobStatus.PENDING,))
    assert store.begin("j3", 0, 2, RUNNABLE) == (1, False)
    job = store.get("j3")
    assert job is not None and job.status is JobStatus.CANCELLED


def test_finish_moves_and_publishes_once(store: JobStore) -> None:
    new_job(store, "j4")
    store.begin("j4", 0, 2, RUNNABLE)
    stop = threading.Event()
    events: list[dict[str, Any]] = []
    stream = store.events(stop)
    reader = threading.Thread(target=lambda: events.extend(stream), daemon=True)
    reader.start()
    time.sleep(0.3)  # the SQLite store polls its event table; let the reader start
    event = {"event": "completed", "job_id": "j4", "error": None, "ts": time.time()}
    # When the job ends twice (a second report of the same end)
    assert store.finish("j4", JobStatus.COMPLETED, (JobStatus.PROCESSING,), event=event,
                        result_path="a/b.pdf", pages=1, error=None)
    assert not store.finish("j4", JobStatus.COMPLETED, (JobStatus.PROCESSING,), event=event)
    # Then the record is COMPLETED with its values, and one event was published
    job = store.get("j4")
    assert job is not None and job.status is JobStatus.COMPLETED and job.pages == 1
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a second event, if one had been published, arrives within this
    stop.set()
    reader.join(timeout=5)
    assert [e["job_id"] for e in events] == ["j4"]


def test_stores_without_result_writes_refuse_them(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db", "t13")
    new_job(store, "j5")
    assert not store.supports_result_writes("redis://127.0.0.1:6379/0")
    with pytest.raises(NotImplementedError):
        store.begin("j5", 0, 2, RUNNABLE, results=[("k", "{}", 10)])
    job = store.get("j5")
    assert job is not None and job.status is JobStatus.PENDING and job.attempts == 0


def next_message(pubsub: Any, timeout: float) -> Any:
    """The next published message (subscribe confirmations skipped), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=max(0.01, deadline - time.monotonic()))
        if message is not None:
            return message
    return None


def meta(status: str, job_id: str) -> str:
    return json.dumps({"status": status, "result": None, "task_id": job_id})


def test_redis_result_writes_go_with_the_record(redis_url: str, redis_client: Any) -> None:
    store = RedisJobStore(redis_url, "t13")
    new_job(store, "j6")
    key = "celery-task-meta-j6"
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(key)
    # When the job begins with Celery's STARTED write
    assert store.begin("j6", 0, 2, RUNNABLE, results=[(key, meta("STARTED", "j6"), 60)]) \
        == (1, True)
    # Then it is stored with its expiry and published on the key's channel
    assert json.loads(redis_client.get(key))["status"] == "STARTED"
    assert 0 < redis_client.ttl(key) <= 60
    message = next_message(pubsub, 5)
    assert message and json.loads(message["data"])["status"] == "STARTED"
    # When it finishes with its SUCCESS
    assert store.finish("j6", JobStatus.COMPLETED, (JobStatus.PROCESSING,),
                        results=[(key, meta("SUCCESS", "j6"), 0)])
    assert json.loads(redis_client.get(key))["status"] == "SUCCESS"
    assert redis_client.ttl(key) == -1  # expiry 0: none, as Celery without result_expires
    message = next_message(pubsub, 5)
    assert message and json.loads(message["data"])["status"] == "SUCCESS"
    # Then a late STARTED (a redelivery that began after the end) never replaces SUCCESS,
    # even when the record change itself is refused
    assert not store.finish("j6", JobStatus.PROCESSING, (JobStatus.PENDING,),
                            results=[(key, meta("STARTED", "j6"), 60)])
    assert json.loads(redis_client.get(key))["status"] == "SUCCESS"
    assert next_message(pubsub, 0.5) is None
    # And result writes of a begin that did not move the job are not made
    other = "celery-task-meta-j7"
    assert store.begin("j7", 0, 2, RUNNABLE, results=[(other, meta("STARTED", "j7"), 60)]) \
        == (0, False)
    assert redis_client.get(other) is None
    pubsub.close()
    store.close()


@pytest.mark.parametrize(("a", "b", "same"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379", True),
    ("redis://:pw@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", True),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1", False),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0", False),
    ("redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6379/0", False),
    ("redis://127.0.0.1:6379/0", "dynamodb://table", False),
])
def test_result_writes_only_on_the_same_redis_database(a: str, b: str, same: bool,
                                                        redis_client: Any) -> None:
    store = RedisJobStore(a, "t13")
    assert store.supports_result_writes(b) is same
    store.close()


def test_redis_finish_adds_counters_and_remembers_the_record(redis_url: str,
                                                              redis_client: Any) -> None:
    store = RedisJobStore(redis_url, "t13")
    assert store.keeps_counters()
    new_job(store, "j8")
    store.begin("j8", 0, 2, RUNNABLE)
    counters = [("t13:metrics", "finished|completed|normal", 1),
                ("t13:metrics", "duration_sum|normal|completed", 0.25)]
    # When the job completes with counters
    assert store.finish("j8", JobStatus.COMPLETED, (JobStatus.PROCESSING,), counters=counters,
                        pages=1)
    # Then within remembered(), get() answers with the record the finish left, without Redis
    redis_client.hset("t13:job:j8", "pages", "7")  # changed behind the store's back
    with store.remembered("j8"):
        job = store.get("j8")
        assert job is not None and job.pages == 1 and job.status is JobStatus.COMPLETED
        assert store.get("j1-unknown") is None
    job = store.get("j8")
    assert job is not None and job.pages == 7  # outside it, the store is asked
    # When the same end is reported again: refused, nothing remembered, nothing counted
    assert not store.finish("j8", JobStatus.COMPLETED, (JobStatus.PROCESSING,),
                            counters=counters)
    with store.remembered("j8"):
        job = store.get("j8")
        assert job is not None and job.pages == 7
    # Then the counters were added once: integers stay integers, floats add up
    assert redis_client.hgetall("t13:metrics") == {
        b"finished|completed|normal": b"1", b"duration_sum|normal|completed": b"0.25"}
    store.close()


def test_stores_without_counters_refuse_them(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db", "t13")
    assert not store.keeps_counters()
    new_job(store, "j9")
    with pytest.raises(NotImplementedError):
        store.finish("j9", JobStatus.COMPLETED, (JobStatus.PENDING,),
                     counters=[("k", "f", 1)])
