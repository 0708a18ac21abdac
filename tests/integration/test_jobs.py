"""Integration tests of the job API (PDFQueueManager): real Redis, real worker processes.

The guide's examples (sections Quick Start, Job Management, Worker Configuration, Monitoring,
Error Handling, Troubleshooting) run here nearly as written; adaptations are commented.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from celery.result import AsyncResult

from pdftasks import (
    JobPriority,
    JobStatus,
)
from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, pdf_text, wait_for

pytestmark = pytest.mark.integration


def test_guide_quick_start_runs_with_only_the_imports_changed(tmp_path) -> None:
    # The guide's InMemoryBackend, in a fresh directory with a templates/ folder.
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFTASKS_")}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "✓ PDF generated: " in proc.stdout, proc.stdout
    [path] = (tmp_path / "output").rglob("invoice_001.pdf")
    text, pages = pdf_text(path)
    assert "INV-001" in text and "1,500.00" in text and pages == 1


def test_guide_job_management_examples(make_manager) -> None:
    manager = make_manager()
    # Submit Single Job
    job_id = manager.submit_job(
        template='invoice.html',
        data={'invoice_number': 'INV-001', 'client_name': 'Acme Corp',
              'items': [{'description': 'Widget', 'quantity': 3, 'unit_price': 500.0}],
              'total': 1500.00},
        output_filename='invoice_001_acme.pdf',  # the guide's batch below reuses invoice_001
        css_file='invoice_styles.css',
        priority=JobPriority.HIGH,
        metadata={'user_id': 123, 'department': 'sales',
                  'customer_email': 'customer@example.com'},
        max_retries=3)
    # Priority Levels (the guide's report.html example, with our sample report template)
    urgent = manager.submit_job(template='invoice.html', data=sample_invoice(2),
                                output_filename='urgent_invoice.pdf',
                                priority=JobPriority.URGENT)
    low = manager.submit_job(template='report.html', data={'title': 'Monthly'},
                             output_filename='monthly_report.pdf', priority=JobPriority.LOW)
    # Submit Batch Jobs (both forms)
    jobs = [{'template': 'invoice.html', 'data': {'invoice_number': f'INV-{i:03d}'},
             'output': f'invoice_{i:03d}.pdf'} for i in range(100)]
    job_ids = manager.submit_batch(jobs, priority=JobPriority.NORMAL)
    assert len(job_ids) == 100 == len(set(job_ids))
    mixed = manager.submit_batch([
        {'template': 'invoice.html', 'data': {'id': 1}, 'output': 'urgent_invoice2.pdf',
         'priority': JobPriority.URGENT},
        {'template': 'report.html', 'data': {'id': 2}, 'output': 'report.pdf',
         'priority': JobPriority.LOW}])
    assert [manager.get_job(i).priority for i in mixed] == [JobPriority.URGENT, JobPriority.LOW]
    # Check Job Status
    assert manager.get_job_status(job_id) in (JobStatus.PENDING, JobStatus.PROCESSING,
                                              JobStatus.COMPLETED)
    assert manager.get_job_status("no-such-job") is None
    assert manager.get_job("no-such-job") is None
    # Wait for Job Completion
    completed_job = manager.wait_for_job(job_id=job_id, timeout=60, poll_interval=0.5)
    duration = (completed_job.completed_at - completed_job.started_at).total_seconds()
    assert 0 < duration < 30
    job = manager.get_job(job_id)
    assert (job.template, job.status.name, job.priority.name) == (
        "invoice.html", "COMPLETED", "HIGH")
    assert job.metadata == {'user_id': 123, 'department': 'sales',
                            'customer_email': 'customer@example.com'}
    assert job.retry_count == 0 and job.max_retries == 3 and job.error is None
    text, _ = pdf_text(job.result_path)
    assert "INV-001" in text and "Acme Corp" in text
    assert manager.wait_for_job(urgent, timeout=None).status is JobStatus.COMPLETED
    # Async wait pattern (the guide's thread + callback)
    seen: list[str] = []
    done = threading.Event()

    def check_status() -> None:
        while True:
            if manager.get_job_status(low) in [JobStatus.COMPLETED, JobStatus.FAILED,
                                               JobStatus.CANCELLED]:
                seen.append(manager.get_job(low).job_id)
                done.set()
                break
            time.sleep(0.2)

    threading.Thread(target=check_status, daemon=True).start()
    for i in job_ids + mixed:
        assert manager.wait_for_job(i, timeout=120).status is JobStatus.COMPLETED
    assert done.wait(60) and seen == [low]
    # Cancel Job: finished jobs cannot be cancelled
    assert manager.cancel_job(job_id) is False
    assert manager.cancel_job("no-such-job") is False
    with pytest.raises(TimeoutError):
        blocker = manager.submit_job(template='runaway.html', data={},
                                     output_filename='slow.pdf')
        manager.wait_for_job(blocker, timeout=0.5)


def test_cancelled_pending_job_never_produces_a_file(make_manager, tmp_path) -> None:
    manager = make_manager(start=False)
    keep = manager.submit_job('invoice.html', sample_invoice(1), 'keep.pdf')
    drop = manager.submit_job('invoice.html', sample_invoice(2), 'drop.pdf')
    after = manager.submit_job('invoice.html', sample_invoice(3), 'after.pdf')
    job = manager.get_job(drop)
    if job and job.status == JobStatus.PENDING:
        assert manager.cancel_job(drop) is True
    assert manager.cancel_job(drop) is False
    manager.start()
    for job_id in (keep, after):
        manager.wait_for_job(job_id, timeout=60)
    with pytest.raises(RuntimeError, match="cancelled"):
        manager.wait_for_job(drop, timeout=10)
    assert manager.get_job_status(drop) is JobStatus.CANCELLED
    assert sorted(p.name for p in manager.pdf_service.output_dir.rglob("*.pdf")) == [
        "after.pdf", "keep.pdf"]


def test_batch_jobs_are_not_followed_for_results_yet_their_results_can_be_read(
        make_manager, redis_client) -> None:
    # Given a manager whose jobs wait (no worker yet)
    manager = make_manager(start=False)

    def subscribes() -> int:  # SUBSCRIBE commands Redis has served so far
        return int(redis_client.info("commandstats").get("cmdstat_subscribe", {})
                   .get("calls", 0))

    # When 20 jobs are submitted through submit_batch, and one through generate_pdf.delay
    before = subscribes()
    batch = manager.submit_batch([{"template": "invoice.html", "data": sample_invoice(i),
                                   "output": f"untracked-{i}.pdf"} for i in range(20)])
    after_batch = subscribes()
    single = manager.task.delay("invoice.html", sample_invoice(99), "tracked.pdf")
    # Then only delay() subscribed to its result channel (its caller may .get() it)
    assert (after_batch - before, subscribes() - after_batch) == (0, 1)
    # and a batch job's result can still be read once it has run
    manager.start()
    manager.wait_for_job(batch[0], timeout=60)
    assert AsyncResult(batch[0], app=manager.app).get(timeout=10)["path"].endswith(
        "untracked-0.pdf")
    assert single.get(timeout=60)["path"].endswith("tracked.pdf")


def test_transient_failure_is_retried_with_growing_backoff(make_manager, tmp_path) -> None:
    # Given an output directory that cannot be created (a file is in the way)
    out = tmp_path / "blocked"
    out.write_text("not a directory")
    manager = make_manager(output_dir=out, retry_backoff_s=1, retry_jitter=False)
    failures: list[tuple[float, int, JobStatus, str]] = []

    def on_job_failed(job, error):
        failures.append((time.monotonic(), job.retry_count, job.status, error))
        if len(failures) == 3:  # the disk "comes back" after the third failed attempt
            out.unlink()

    manager.on_job_failed = on_job_failed
    job_id = manager.submit_job('invoice.html', sample_invoice(4), 'retried.pdf',
                                priority=JobPriority.HIGH, max_retries=5)
    # When it is retried
    job = manager.wait_for_job(job_id, timeout=60)
    # Then each failed attempt was reported, RETRYING with a growing retry_count, and the
    # delays between attempts grew (1 s, 2 s: exponential backoff, jitter off)
    assert [(n, s) for _, n, s, _ in failures] == [(1, JobStatus.RETRYING),
                                                   (2, JobStatus.RETRYING),
                                                   (3, JobStatus.RETRYING)]
    assert all(e.startswith("StorageError: cannot write") for *_, e in failures)
    gaps = [b[0] - a[0] for a, b in zip(failures, failures[1:], strict=False)]
    assert 0.8 < gaps[0] < gaps[1] and gaps[1] > 1.6, gaps
    assert job.status is JobStatus.COMPLETED and job.retry_count == 3
    # A retry stays in its priority queue
    assert AsyncResult(job_id, app=manager.app).result["queue"] == "pdf.high"
    [retried] = out.rglob("retried.pdf")
    assert "INV-2026-0004" in pdf_text(retried)[0]


def test_permanent_failures_are_not_retried(make_manager, tmp_path) -> None:
    out = tmp_path / "blocked"
    out.write_text("not a directory")
    manager = make_manager(output_dir=out)
    failures = []
    manager.on_job_failed = lambda job, error: failures.append((job.job_id, error))
    missing = manager.submit_job('strict.html', {'invoice_number': 'X'}, 'missing.pdf',
                                 max_retries=3)
    no_retry = manager.submit_job('invoice.html', sample_invoice(1), 'x.pdf', max_retries=0)
    with pytest.raises(RuntimeError, match="MissingVariableError: .*client_name"):
        manager.wait_for_job(missing, timeout=60)
    with pytest.raises(RuntimeError, match="StorageError"):
        manager.wait_for_job(no_retry, timeout=60)
    for job_id in (missing, no_retry):
        job = manager.get_job(job_id)
        assert job.status is JobStatus.FAILED and job.retry_count == 0
    wait_for(lambda: len(failures) >= 2, timeout=10, what="both on_job_failed callbacks")
    time.sleep(0.5)  # a duplicate callback would arrive now
    assert sorted(i for i, _ in failures) == sorted([missing, no_retry])
    failed = manager.backend.get_all_jobs(status=JobStatus.FAILED)
    assert {j.job_id for j in failed} == {missing, no_retry}
    # Dead letters: fix the cause, resubmit under the same id
    out.unlink()
    assert manager.retry_job(no_retry) is True
    assert manager.wait_for_job(no_retry, timeout=60).status is JobStatus.COMPLETED
    assert manager.retry_job(no_retry) is False


def test_callbacks_reach_another_process_exactly_once(start_worker, make_manager, tmp_path,
                                                      monkeypatch, output_dir) -> None:
    hook_file = tmp_path / "hooks.log"
    monkeypatch.setenv("PDFTASKS_TEST_HOOK_FILE", str(hook_file))
    start_worker(concurrency=2, on_completed="tests.integration.hooks:completed",
                 on_failed="tests.integration.hooks:failed")
    # This manager runs no worker: events come from the worker process over Redis.
    manager = make_manager(start=False, output_dir=output_dir)
    completed, failed = Counter(), Counter()
    manager.on_job_completed = lambda job: completed.update([job.job_id])
    manager.on_job_failed = lambda job, error: failed.update([job.job_id])
    good = [manager.submit_job('invoice.html', sample_invoice(i), f'cb_{i}.pdf')
            for i in range(12)]
    bad = [manager.submit_job('strict.html', {}, f'bad_{i}.pdf') for i in range(4)]
    for job_id in good:
        manager.wait_for_job(job_id, timeout=60)
    deadline = time.monotonic() + 10
    while (sum(completed.values()), sum(failed.values())) != (12, 4):
        assert time.monotonic() < deadline, (completed, failed)
        time.sleep(0.05)
    time.sleep(1)  # a duplicate would arrive now
    assert completed == Counter(good) and failed == Counter(bad)
    lines = Counter(hook_file.read_text().splitlines())
    assert lines == Counter([f"completed {i} completed" for i in good] +
                            [f"failed {i} failed" for i in bad])


def test_two_namespaces_on_one_redis_are_isolated(make_manager) -> None:
    alpha = make_manager(queue_name="alpha", num_workers=1)
    beta = make_manager(queue_name="beta", num_workers=1)
    a = alpha.submit_job('invoice.html', sample_invoice(1, client="Alpha Co"), 'a.pdf')
    b = beta.submit_job('invoice.html', sample_invoice(2, client="Beta Co"), 'b.pdf')
    job_a, job_b = alpha.wait_for_job(a, timeout=60), beta.wait_for_job(b, timeout=60)
    # Each namespace's PDFs are under its own folder, whatever names the callers chose.
    assert Path(job_a.result_path) == alpha.pdf_service.output_dir / "alpha" / "_" / a / "a.pdf"
    assert Path(job_b.result_path) == beta.pdf_service.output_dir / "beta" / "_" / b / "b.pdf"
    assert alpha.get_job(b) is None and beta.get_job(a) is None
    assert [j.job_id for j in alpha.backend.get_all_jobs()] == [a]
    assert alpha.get_queue_stats()["completed"] == 1 == beta.get_queue_stats()["completed"]
    assert alpha.cancel_job(b) is False


def test_counts_stay_right_with_500_concurrent_jobs(make_manager) -> None:
    manager = make_manager(start=False)
    ids: dict[str, list[str]] = {"good": [], "bad": [], "cancel": []}
    lock = threading.Lock()

    def submit(worker: int) -> None:
        for i in range(125):
            kind = "bad" if i % 10 == 0 else "cancel" if i % 10 == 1 else "good"
            template, data = ("strict.html", {}) if kind == "bad" else (
                "escape.html", {"value": f"{worker}-{i}"})
            job_id = manager.submit_job(template, data, f"c_{worker}_{i}.pdf",
                                        priority=JobPriority(i % 4))
            if kind == "cancel":
                assert manager.cancel_job(job_id)
            with lock:
                ids[kind].append(job_id)

    threads = [threading.Thread(target=submit, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n_good, n_bad, n_cancel = (len(ids[k]) for k in ("good", "bad", "cancel"))
    assert (n_good, n_bad, n_cancel) == (396, 52, 52)
    stats = manager.get_queue_stats()
    assert (stats["total_jobs"], stats["pending"], stats["cancelled"]) == (500, 448, 52)
    expected = Counter(manager.get_job(i).priority.label for i in ids["good"] + ids["bad"])
    assert stats["pending_by_priority"] == dict(expected)
    assert sum(expected.values()) == 448
    manager.start()
    deadline = time.monotonic() + 180
    while (s := manager.get_queue_stats())["pending"] + s["processing"] + s["retrying"]:
        assert time.monotonic() < deadline, s
        time.sleep(0.5)
    assert (s["completed"], s["failed"], s["cancelled"], s["total_jobs"]) == (396, 52, 52, 500)
    assert len(manager.backend.get_all_jobs(status=JobStatus.FAILED)) == 52
    assert {j.job_id for j in manager.backend.get_all_jobs(status=JobStatus.COMPLETED)} == set(
        ids["good"])
    assert len([p for p in manager.pdf_service.output_dir.rglob("*") if p.is_file()]) == 396
    # The guide's troubleshooting views
    error_summary = Counter(j.error.split(':')[0] for j in
                            manager.backend.get_all_jobs(status=JobStatus.FAILED))
    assert error_summary == {"MissingVariableError": 52}
    durations = [(j.completed_at - j.started_at).total_seconds()
                 for j in manager.backend.get_all_jobs(status=JobStatus.COMPLETED)[-100:]]
    assert 0 < statistics.median(durations) < 5
    assert manager.backend.get_pending_count() == 0


def test_lifecycle_context_manager_and_force_stop(make_manager) -> None:
    manager = make_manager(start=False, num_workers=1)
    assert manager.running is False and manager.get_queue_stats()["running"] is False
    with manager as queue:
        assert queue.running
        job_id = queue.submit_job('invoice.html', sample_invoice(1), 'ctx.pdf')
        queue.wait_for_job(job_id, timeout=60)
        stats = queue.get_queue_stats()
        assert stats["workers"] >= 1 and stats["running"] is True
    assert manager.running is False
    manager.start()
    manager.running = False  # the guide's force stop
    assert manager.running is False
