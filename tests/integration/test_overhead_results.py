"""Issue 13: Celery's STARTED and SUCCESS writes of jobs held by the result backend for the
job store (``pdftasks.brokers.redis_results``), on the real Redis of the tests.

In a worker's pool process (``defer_jobs`` set by ``pdftasks.worker.signals``) the writes of
``generate_pdf`` are encoded by Celery as usual but not sent: the task hands them to the job
store, which makes them with the record's change (``test_overhead_store.py``). What is still
held when the job ends is written the usual way (SUCCESS) or dropped (STARTED); other tasks,
other states and other processes are Celery's backend unchanged. The whole path runs in
``test_jobs.py`` / ``test_queue.py`` (``AsyncResult.get()``, the STARTED state).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import states
from celery.app.task import Context

from pdftasks.celery_app import GENERATE_PDF, create_app
from pdftasks.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def backend(redis_url: str, redis_client: Any, tmp_path: Any) -> Iterator[Any]:
    app = create_app(Settings(broker_url=redis_url, home=tmp_path / "home"))
    made = app.backend
    made.deferred_task = GENERATE_PDF
    made.defer_jobs = True
    yield made
    made.defer_jobs = False


def job_request(task_id: str, task: str = GENERATE_PDF) -> Context:
    return Context(id=task_id, task=task, args=(), kwargs={"template": "t.html"})


def test_job_writes_are_held_encoded_by_celery(backend: Any, redis_client: Any) -> None:
    # When Celery stores a job's STARTED, then its SUCCESS
    backend.store_result("job-1", {"pid": 1}, states.STARTED, request=job_request("job-1"))
    backend.store_result("job-1", {"path": "a.pdf"}, states.SUCCESS,
                         request=job_request("job-1"))
    # Then nothing reached Redis, and the last write is held as Celery encoded it
    assert redis_client.get(backend.get_key_for_task("job-1")) is None
    [(key, value, ttl)] = backend.take_held("job-1")
    meta = backend.decode(value)
    assert key == backend.get_key_for_task("job-1").decode()
    assert meta["status"] == states.SUCCESS and meta["result"] == {"path": "a.pdf"}
    assert meta["name"] == GENERATE_PDF  # extended results, as Celery writes them
    assert ttl == int(backend.expires)
    assert backend.take_held("job-1") == []  # taken once


def test_what_is_still_held_is_flushed_or_dropped(backend: Any, redis_client: Any) -> None:
    # A SUCCESS still held when the job ends is written the usual way
    backend.store_result("job-2", {"path": "b.pdf"}, states.SUCCESS,
                         request=job_request("job-2"))
    backend.flush("job-2")
    assert backend.get_task_meta("job-2")["status"] == states.SUCCESS
    # A STARTED still held is dropped: nothing must replace what comes after it
    backend.store_result("job-3", {"pid": 1}, states.STARTED, request=job_request("job-3"))
    backend.flush("job-3")
    assert redis_client.get(backend.get_key_for_task("job-3")) is None
    # A later state written the usual way replaces a held one
    backend.store_result("job-4", {"pid": 1}, states.STARTED, request=job_request("job-4"))
    backend.store_result("job-4", ValueError("x"), states.FAILURE, request=job_request("job-4"))
    assert backend.take_held("job-4") == []
    assert backend.get_task_meta("job-4")["status"] == states.FAILURE


def test_other_tasks_and_processes_write_as_celery_does(backend: Any, redis_client: Any
                                                        ) -> None:
    # Another task's writes are not held
    backend.store_result("other-1", 5, states.SUCCESS,
                         request=job_request("other-1", "pdftasks.deliver_webhook"))
    assert backend.get_task_meta("other-1")["status"] == states.SUCCESS
    # Nor are a job's writes where defer_jobs is off (clients, the main process)
    backend.defer_jobs = False
    backend.store_result("job-5", {"pid": 1}, states.STARTED, request=job_request("job-5"))
    assert backend.get_task_meta("job-5")["status"] == states.STARTED
    assert backend.take_held("job-5") == []
