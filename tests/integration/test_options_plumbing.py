"""Integration tests: the ``options`` of a job travel from every entry point to a real worker
(real Redis, real worker processes), are checked at the door and kept without secrets."""

from __future__ import annotations

import json

import pytest

from pdftasks import JobStatus
from pdftasks.errors import InvalidOptionsError
from pdftasks.samples import sample_invoice

pytestmark = pytest.mark.integration

OPTIONS = {"metadata": {"title": "Plumbed", "keywords": ["a", "b"]}}


def test_options_are_checked_at_submit_and_nothing_is_queued(make_manager, redis_client) -> None:
    manager = make_manager(start=False)
    before = redis_client.dbsize()
    for bad in ({"nope": True}, {"split": {"key": "rows", "size": -1}}, ["split"]):
        with pytest.raises(InvalidOptionsError):
            manager.submit_job("invoice.html", sample_invoice(1), "a.pdf", options=bad)
    with pytest.raises(InvalidOptionsError):  # one bad item: nothing of the batch is queued
        manager.submit_batch([
            {"template": "invoice.html", "data": sample_invoice(1), "output": "ok.pdf"},
            {"template": "invoice.html", "data": sample_invoice(2), "output": "bad.pdf",
             "options": {"split": {"size": 3}}}])
    assert redis_client.dbsize() == before


def test_a_job_with_options_completes_and_its_record_keeps_them(make_manager) -> None:
    manager = make_manager()
    job_id = manager.submit_job("invoice.html", sample_invoice(1), "opt.pdf", options=OPTIONS)
    job = manager.wait_for_job(job_id, timeout=60)
    assert job.status is JobStatus.COMPLETED
    assert job.options == OPTIONS
    import pikepdf  # the worker got them: the option shows in the file

    with pikepdf.open(job.result_path) as pdf:
        assert str(pdf.docinfo["/Title"]) == "Plumbed"


def test_a_bad_option_in_a_queued_message_fails_the_job_with_its_name(make_manager) -> None:
    # Given a message queued around pdftasks' checks (send_task) with an unknown option
    manager = make_manager()
    result = manager.app.send_task(
        "pdftasks.generate_pdf", kwargs={
            "template": "invoice.html", "data": sample_invoice(1), "output_filename": "x.pdf",
            "options": {"colour": "red"}}, queue="pdf.normal")
    # Then the worker fails that job, naming the option, and keeps running
    def failed():
        job = manager.get_job(result.id)
        return job if job and job.status is JobStatus.FAILED else None

    from tests.conftest import wait_for
    job = wait_for(failed, 60, "the job to fail")
    assert "options.colour" in job.error
    ok = manager.submit_job("invoice.html", sample_invoice(2), "after.pdf")
    assert manager.wait_for_job(ok, timeout=60).status is JobStatus.COMPLETED


def test_a_job_whose_secrets_were_redacted_is_not_retried_blindly(make_manager) -> None:
    manager = make_manager(start=False)
    job_id = manager.submit_job(
        "invoice.html", sample_invoice(1), "s.pdf",
        options={"encrypt": {"user_password": "u-pass-123", "owner_password": "o-pass-456"}})
    job = manager.get_job(job_id)
    assert "u-pass-123" not in json.dumps(job.options)
    assert "o-pass-456" not in json.dumps(job.options)
    manager.cancel_job(job_id)
    with pytest.raises(InvalidOptionsError, match="submit it again"):
        manager.retry_job(job_id)

