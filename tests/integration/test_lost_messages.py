"""Integration tests: jobs whose message the Redis broker lost (``pdftasks.worker.lost``).

A message taken off its queue (``BRPOP``) and never recorded as unacknowledged is gone: the
tests remove a queued job's message from its queue, which is what a worker killed (or a
Redis crashed) at that moment leaves. Real Redis; the last test a real ``pdftasks worker``
and real WeasyPrint, the PDF read back with pypdf."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pdftasks import JobStatus
from pdftasks.worker.lost import live_messages, sweep_lost_messages
from tests.conftest import pdf_text
from tests.faults.conftest import Workers, make_manager

pytestmark = pytest.mark.integration

LIMITS = {"soft_time_limit_s": 5, "hard_time_limit_s": 8, "visibility_timeout_s": 10}


def queues(client) -> list[str]:
    return sorted(k.decode() for k in client.keys("pdf.*"))


def lose_message(client, job_id: str) -> None:
    """Take ``job_id``'s message off its queue, as a worker that dies right after does."""
    for queue in queues(client):
        for raw in client.lrange(queue, 0, -1):
            if json.loads(raw)["headers"]["id"] == job_id:
                assert client.lrem(queue, 1, raw) == 1
                return
    raise AssertionError(f"no message of {job_id} in {queues(client)}")


def messages_of(client, job_id: str) -> int:
    return sum(1 for q in queues(client) for raw in client.lrange(q, 0, -1)
               if json.loads(raw)["headers"]["id"] == job_id)


@pytest.fixture
def manager(redis_client, redis_url, output_dir, tmp_path):
    return make_manager(redis_url, output_dir, tmp_path / "home", **LIMITS)


def test_a_job_without_a_message_in_two_looks_is_sent_again(manager, redis_client) -> None:
    # Given two queued jobs, one of which lost its message
    kept = manager.submit_job("escape.html", {"value": "kept"}, "kept.pdf")
    lost = manager.submit_job("escape.html", {"value": "lost"}, "lost.pdf")
    assert live_messages(manager.app, [kept, lost]) == {kept, lost}
    lose_message(redis_client, lost)
    assert live_messages(manager.app, [kept, lost]) == {kept}
    # When the sweep looks once: the job is a suspect, nothing is sent yet
    first = sweep_lost_messages(manager.app, older_than=0)
    assert (first.looked_at, first.suspects, first.resent) == (2, [lost], [])
    assert messages_of(redis_client, lost) == 0
    # Then the second look sends its message again, from its record, under its id
    second = sweep_lost_messages(manager.app, older_than=0)
    assert (second.suspects, second.resent, second.failed) == ([], [lost], [])
    assert messages_of(redis_client, lost) == 1 and messages_of(redis_client, kept) == 1
    job = manager.get_job(lost)
    assert job.status is JobStatus.PENDING and job.data == {"value": "lost"}
    # And a third look finds every message where it belongs and sends nothing
    third = sweep_lost_messages(manager.app, older_than=0)
    assert (third.suspects, third.resent) == ([], [])
    assert messages_of(redis_client, lost) == 1


def test_a_job_that_moved_between_two_looks_is_not_sent_again(manager, redis_client) -> None:
    # Given a job without a message, a suspect after one look
    job_id = manager.submit_job("escape.html", {"value": "moving"}, "moving.pdf")
    lose_message(redis_client, job_id)
    assert sweep_lost_messages(manager.app, older_than=0).suspects == [job_id]
    # When its record changes before the next look (a worker took it in between)
    redis_client.hincrby(f"pdf:job:{job_id}", "attempts", 1)
    # Then it is a suspect again, not sent; and jobs younger than the limit are not looked at
    again = sweep_lost_messages(manager.app, older_than=0)
    assert (again.suspects, again.resent) == ([job_id], [])
    assert sweep_lost_messages(manager.app, older_than=3600).looked_at == 0
    assert messages_of(redis_client, job_id) == 0


def test_a_lost_job_with_secret_options_fails_and_says_to_submit_it_again(
        manager, redis_client) -> None:
    # Given an encrypted job (its passwords are kept in no record) whose message was lost
    job_id = manager.submit_job("escape.html", {"value": "secret"}, "secret.pdf", options={
        "encrypt": {"user_password": "u5er-sweep-41d2", "owner_password": "0wner-sweep-8e1b"}})
    lose_message(redis_client, job_id)
    # When two looks find no message
    sweep_lost_messages(manager.app, older_than=0)
    report = sweep_lost_messages(manager.app, older_than=0)
    # Then it FAILS with an error naming the option, its Celery result too; nothing is sent
    assert (report.resent, report.failed) == ([], [job_id])
    job = manager.get_job(job_id)
    assert job.status is JobStatus.FAILED
    assert "options.encrypt.user_password" in job.error, job.error
    assert "submit the job again" in job.error, job.error
    assert "u5er-sweep" not in job.error and messages_of(redis_client, job_id) == 0
    assert manager.app.AsyncResult(job_id).state == "FAILURE"


def test_a_worker_renders_a_job_whose_message_was_lost(manager, redis_client, output_dir: Path,
                                                       tmp_path: Path) -> None:
    # Given a job whose message was lost before any worker ran
    job_id = manager.submit_job("escape.html", {"value": "found again"}, "found.pdf")
    lose_message(redis_client, job_id)
    # When a worker runs (its sweep looks every half visibility timeout, at jobs older than
    # the visibility timeout and the restore interval)
    pool = Workers(tmp_path)
    try:
        pool.start(output_dir, concurrency=1, broker_url=manager.settings.broker_url,
                   **LIMITS)
        started = time.monotonic()
        deadline = started + 90
        while manager.get_job(job_id).status is not JobStatus.COMPLETED:
            assert time.monotonic() < deadline, manager.get_job(job_id)
            time.sleep(0.2)
        # Then it is sent again once and rendered once, into its own file
        log = "".join(p.read_text() for p in pool.logs)
        assert log.count("its message was lost by the broker") == 1, log
        job = manager.get_job(job_id)
        text, pages = pdf_text(job.result_path)
        assert "found again" in text and pages == 1 and job.attempts == 1
        assert Path(job.result_path).is_relative_to(output_dir)
    finally:
        pool.reap()
