"""Worker regressions: the hard time limit's error message, and per-job retry budgets.

Real Redis, real ``pdftasks worker`` processes (fixtures in tests/conftest.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pdftasks import JobStatus, generate_pdf
from pdftasks.celery_app import app
from pdftasks.samples import sample_invoice
from pdftasks.stores import Job
from pdftasks.worker.tasks import job_store
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

FINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


def final_job(job_id: str, timeout: float) -> Job:
    def done() -> Job | None:
        job = job_store(app).get(job_id)
        return job if job is not None and job.status in FINAL else None

    return wait_for(done, timeout, f"job {job_id} to end")


@contextmanager
def store_events() -> Iterator[list[dict[str, Any]]]:
    """The job store's events (what clients and webhooks see) while the block runs."""
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    events = job_store(app).events(stop)  # subscribed now
    thread = threading.Thread(target=lambda: seen.extend(events), daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=5)


def test_hard_time_limit_is_recorded_as_a_render_timeout(start_worker) -> None:
    # Given a worker with a 6 s soft and 8 s hard limit, and a job whose layout stays in
    # native code (Pango breaking one 24-million-character word, about 9 s from ~1.5 s on
    # on a fast machine; 3 s and 18 s on one half as fast): neither the soft limit nor
    # pdftasks' own alarm can interrupt it, only the hard kill. (The limits go in the
    # message too: its header, set by the client, wins in the worker.)
    start_worker(concurrency=1, soft_time_limit_s=6, hard_time_limit_s=8,
                 render_memory_limit_mb=3072)
    with store_events() as events:
        result = generate_pdf.apply_async(
            kwargs={"template": "poison.html", "data": {"size": 24_000_000},
                    "output_filename": "stuck.pdf"}, soft_time_limit=6, time_limit=8)
        # When the hard limit kills the worker process
        job = final_job(result.id, timeout=60)
        wait_for(lambda: any(e["event"] == "failed" for e in events), 10, "the failed event")
    # Then the record, and the failed event, carry pdftasks' clear message, not Celery's
    # bare TimeLimitExceeded
    assert job.status is JobStatus.FAILED
    assert job.error.startswith("RenderTimeoutError: hard time limit of 8 s exceeded"), job.error
    assert "the worker process was killed" in job.error
    [failed] = [e for e in events if e["job_id"] == result.id and e["event"] != "retrying"]
    assert failed["event"] == "failed" and failed["error"] == job.error


def test_a_jobs_max_retries_does_not_leak_into_the_next_job(start_worker, tmp_path: Path
                                                             ) -> None:
    # Given one worker process whose output directory cannot be created (a file is in the
    # way: every render fails with a transient StorageError), 2 retries by default
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    start_worker(concurrency=1, output_dir=blocked, default_max_retries=2, retry_backoff_s=1,
                 retry_jitter="false")
    # When a job with max_retries=0 fails there, then a job that sets no max_retries
    first = generate_pdf.delay("invoice.html", sample_invoice(1), "a.pdf", max_retries=0)
    a = final_job(first.id, timeout=60)
    second = generate_pdf.delay("invoice.html", sample_invoice(2), "b.pdf")
    b = final_job(second.id, timeout=60)
    # Then the first failed at once, and the second had the default budget, not the first's
    assert (a.status, a.retry_count) == (JobStatus.FAILED, 0), a
    assert a.error.startswith("StorageError"), a.error
    assert (b.status, b.retry_count) == (JobStatus.FAILED, 2), b
    assert b.error.startswith("StorageError"), b.error
