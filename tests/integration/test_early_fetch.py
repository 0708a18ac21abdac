"""Integration test: a worker takes a pool process's next message when its render ends,
while the process records the end of its job (``pdftasks.worker.early``), and never more
than one message ahead. Real Redis, a real ``pdftasks worker``, real WeasyPrint; the PDFs'
text is read back with pypdf."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader

from pdftasks import JobStatus
from tests.faults.conftest import Workers, make_manager

pytestmark = pytest.mark.integration


def _run(redis_client, redis_url: str, output_dir: Path, tmp_path: Path,
         **settings: str) -> list[tuple[str, str]]:
    hook_file = tmp_path / "hooks.log"
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    # One pool process and a backlog of ten jobs; the first and the sixth are held
    held = (0, 5)
    ids = manager.submit_batch(
        [{"template": "escape.html", "data": {"value": f"job number {i}"},
          "output": f"job-{i}.pdf", "metadata": {"hold": i in held}} for i in range(10)])
    pool = Workers(tmp_path)
    try:
        pool.start(output_dir, concurrency=1, broker_url=redis_url,
                   on_completed="tests.integration.hooks:hold_until_next_taken",
                   test_hook_file=str(hook_file), test_hold_s="3", **settings)
        jobs = [manager.wait_for_job(job_id, timeout=90) for job_id in ids]
    finally:
        pool.reap()
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 10
    assert [job.attempts for job in jobs] == [1] * 10
    for i, job in enumerate(jobs):
        text = " ".join(PdfReader(job.result_path).pages[0].extract_text().split())
        assert f"job number {i}" in text
    lines = [line.split() for line in hook_file.read_text().splitlines()]
    assert [(word, job_id) for word, job_id, *_ in lines] == [("held", ids[i]) for i in held]
    return [(taken, unacked) for *_, taken, unacked in lines]


def test_the_next_message_is_taken_while_the_job_ends_and_only_one(
        redis_client, redis_url, output_dir: Path, tmp_path: Path) -> None:
    # Given one pool process, a backlog, and two jobs whose end (their completed hook, in
    # the pool process) waits until the main process has taken another message
    for taken, unacked_later in _run(redis_client, redis_url, output_dir, tmp_path):
        # Then the next message was taken while the job was still ending, at once
        assert taken != "never" and float(taken) < 1.0
        # And only one: the held job's message and the next, not the rest of the backlog
        # (also for the second held job: the first job's allowance was given back)
        assert unacked_later == "2"


def test_without_early_fetch_the_next_message_waits_for_the_acknowledgement(
        redis_client, redis_url, output_dir: Path, tmp_path: Path) -> None:
    # Given the same, with PDFTASKS_EARLY_FETCH=false
    held = _run(redis_client, redis_url, output_dir, tmp_path, early_fetch="false")
    # Then no message was taken while the jobs ended
    assert held == [("never", "1")] * 2
