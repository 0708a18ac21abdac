"""A request the worker took but could not hand to a pool process (unit test: Celery's
request class on a stand-in message, the zero-setup job store, a pool that fails): the job
is FAILED with the reason, the message acknowledged, and Celery sees ``TaskRevokedError``,
the one error for which it gives the pool slot back (else the worker serves one job fewer
for good)."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.contrib.testing.mocks import TaskMessage
from celery.exceptions import TaskRevokedError

from pdftasks import create_app
from pdftasks.celery_app import GENERATE_PDF
from pdftasks.settings import Settings
from pdftasks.worker.request import PdfRequest
from pdftasks.worker.tasks import job_store, make_job


class FailingPool:
    def apply_async(self, *_: object, **__: object) -> None:
        raise RecursionError("maximum recursion depth exceeded while pickling an object")


def test_a_request_that_cannot_reach_a_process_is_refused_and_frees_its_slot(
        tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path / "home", broker_url=None))
    app.finalize()
    kwargs = {"template": "invoice.html", "data": {"a": 1}, "output_filename": "x.pdf"}
    message = TaskMessage(GENERATE_PDF, id="job-1", kwargs=kwargs)
    message.acknowledged = False
    job_store(app).create(make_job(app, "job-1", kwargs))
    request = PdfRequest(message, app=app, task=app.tasks[GENERATE_PDF])
    with pytest.raises(TaskRevokedError):
        request.execute_using_pool(FailingPool())
    job = job_store(app).get("job-1")
    assert job.status.value == "failed"
    assert "could not accept this job (RecursionError" in job.error
    assert message.ack_log_error.called
