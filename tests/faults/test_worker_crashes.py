"""Worker processes dying: SIGKILLed pool children, a SIGKILLed main process, a warm
shutdown, and a poison job that crashes its child every time. Real Redis, real
``pdftasks worker`` processes, real WeasyPrint."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import psutil
import pytest

from tests.faults.conftest import Tally, kill_tree, make_manager, worker_log_text

pytestmark = pytest.mark.integration

#: Logged by the worker's main process once per job whose child died under it.
LOST_MID_JOB = "Task handler raised error: WorkerLostError"
#: Logged by Celery when the child died after storing its result (no redelivery).
LOST_AFTER_SUCCESS = "succeeded before the worker was lost"


def escape_jobs(prefix: str, count: int, start: int = 0) -> list[dict]:
    return [{"template": "escape.html", "data": {"value": f"{prefix} {i}"},
             "output": f"{prefix}-{i:04d}.pdf"} for i in range(start, start + count)]


def submit(manager, tally: Tally, jobs: list[dict], **kwargs) -> list[str]:
    ids = manager.submit_batch(jobs, **kwargs)
    tally.add(ids, [j["output"] for j in jobs])
    return ids


def busy_child(worker, timeout: float = 2.0) -> int | None:
    """A pool child that is on a CPU right now (rendering), else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in worker.children():
            try:
                if psutil.Process(pid).status() == psutil.STATUS_RUNNING:
                    return pid
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.002)
    return None


def test_sigkill_children_mid_render_during_300_jobs(redis_client, redis_url, workers,
                                                     output_dir, tmp_path) -> None:
    # Given 300 jobs (every tenth one a few pages long) and a worker with two children
    worker = workers.start(output_dir, concurrency=2, max_redeliveries=10)
    tally = Tally("1-sigkill-child", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    jobs = escape_jobs("kill", 300)
    for i in range(0, 300, 10):
        jobs[i] = {"template": "slow.html", "data": {"title": f"kill {i}", "rows": 60},
                   "output": jobs[i]["output"]}
    submit(manager, tally, jobs)
    # When a child that is rendering is SIGKILLed after every ~20 completed jobs
    kills: list[int] = []

    def killer() -> None:
        for threshold in range(10, 300, 20):
            while tally.statuses()["completed"] < threshold:
                if time.monotonic() - tally.started > 240:
                    return
                time.sleep(0.02)
            pid = busy_child(worker)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                kills.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    tally.wait(timeout=240)
    thread.join(timeout=5)
    # Then every job completed once, with one whole file each
    log = worker_log_text(workers.logs)
    tally.extra.update(kills=len(kills), killed_mid_job=log.count(LOST_MID_JOB),
                       lost_after_success=log.count(LOST_AFTER_SUCCESS))
    counts = tally.report()
    assert counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert counts["completed"] == 300 and counts["failed"] == 0
    assert len(kills) >= 10 and tally.extra["killed_mid_job"] >= 5, tally.extra
    assert counts["redeliveries"] >= 5


def test_sigkill_main_process_then_a_new_worker_finishes_everything(
        redis_client, redis_url, workers, output_dir, tmp_path) -> None:
    # Given a worker with short limits, so the visibility timeout can be short too
    limits = {"soft_time_limit_s": 5, "hard_time_limit_s": 8, "visibility_timeout_s": 15}
    first = workers.start(output_dir, concurrency=2, **limits)
    tally = Tally("2-sigkill-main", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    jobs = escape_jobs("main", 80)
    for i in range(0, 80, 4):
        jobs[i] = {"template": "slow.html", "data": {"title": f"main {i}", "rows": 60},
                   "output": jobs[i]["output"]}
    ids = submit(manager, tally, jobs)
    slow = [ids[i] for i in range(0, 80, 4)]

    def slow_job_rendering(counts) -> bool:  # a long render: the kill lands inside it
        return counts["completed"] >= 20 and any(
            r["status"] == "processing" for r in tally.records(slow).values())

    # When the main process and its pool children are SIGKILLed while a slow job renders
    tally.wait_for(slow_job_rendering, timeout=120, what="20 completed and a slow job rendering")
    killed = kill_tree(first.proc.pid)
    killed_at = time.monotonic()
    first.proc.wait(timeout=10)
    orphaned = [i for i, r in tally.records().items() if r["status"] == "processing"]
    completed_at_kill = tally.statuses()["completed"]
    # Then a new worker renders the rest, and the orphaned jobs once the visibility timeout
    # has passed (kombu's sweep for them runs every 1-10 s, see celery_app)
    workers.start(output_dir, concurrency=2, **limits)
    recovered = tally.wait(timeout=60, job_ids=orphaned)
    recovered_after = time.monotonic() - killed_at
    finished = tally.wait(timeout=60)
    tally.extra.update(killed_pids=len(killed), processing_at_kill=len(orphaned),
                       completed_at_kill=completed_at_kill,
                       orphans_done_after_s=round(recovered_after, 1))
    counts = tally.report()
    assert finished and counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert counts["completed"] == 80 and counts["failed"] == 0
    assert orphaned and recovered
    assert all(r["status"] == "completed" for r in tally.records(orphaned).values())
    # Back after the visibility timeout (counted from their delivery, just before the kill),
    # not after kombu's default sweep period of 100 s
    assert 12 <= recovered_after < 15 + 25, recovered_after


def test_sigterm_lets_running_jobs_finish_and_requeues_the_rest(
        redis_client, redis_url, workers, output_dir, tmp_path) -> None:
    # Given a worker busy with a backlog of multi-page jobs
    first = workers.start(output_dir, concurrency=2)
    tally = Tally("3-sigterm-warm", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    submit(manager, tally, [{"template": "slow.html", "data": {"title": f"warm {i}", "rows": 120},
                             "output": f"warm-{i:04d}.pdf"} for i in range(30)])
    # When it gets SIGTERM while two jobs render
    tally.wait_for(lambda c: c["completed"] >= 4 and c["processing"] >= 2, timeout=120,
                   what="4 completed and 2 processing")
    running = [i for i, r in tally.records().items() if r["status"] == "processing"]
    first.proc.send_signal(signal.SIGTERM)
    first.proc.wait(timeout=60)
    # Then the running jobs finished, and every other job is back in its queue at once
    # (not left unacknowledged until the visibility timeout)
    after = tally.records()
    status_after = Counter(str(r["status"]) for r in after.values())
    queued = redis_client.llen("pdf.normal")
    unacked = redis_client.hlen("unacked")
    assert all(after[i]["status"] == "completed" for i in running), running
    assert status_after["processing"] == 0, status_after
    assert queued == status_after["pending"] == 30 - status_after["completed"]
    assert unacked == 0
    # And a new worker renders them, each once
    workers.start(output_dir, concurrency=2)
    finished = tally.wait(timeout=120)
    tally.extra.update(running_at_sigterm=len(running),
                       completed_by_first=status_after["completed"], requeued=queued,
                       unacked_after_exit=unacked)
    counts = tally.report()
    assert finished and counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0 and counts["re-renders"] == 0
    assert counts["completed"] == 30 and counts["redeliveries"] == 0


def test_poison_job_fails_after_its_redeliveries_without_blocking_others(
        redis_client, redis_url, workers, output_dir, tmp_path) -> None:
    # Given a worker whose children may use 600 MB of address space, and a job that makes
    # Pango allocate beyond that (GLib aborts the child: a native crash, every time)
    workers.start(output_dir, concurrency=2, render_memory_limit_mb=600, max_redeliveries=3)
    tally = Tally("7-poison-job", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    [poison] = submit(manager, tally, [{"template": "poison.html", "data": {"size": 5_000_000},
                                        "output": "poison.pdf"}], priority="high")
    # When ordinary jobs are submitted after it
    time.sleep(0.5)
    others = submit(manager, tally, escape_jobs("after-poison", 40))
    finished = tally.wait(timeout=180)
    # Then it FAILED as a poison job after 3 redeliveries, and the others completed meanwhile
    job = manager.get_job(poison)
    log = worker_log_text(workers.logs)
    done_before = sum(1 for o in map(manager.get_job, others)
                      if o.completed_at and o.completed_at < job.completed_at)
    tally.extra.update(poison_status=job.status.value, poison_attempts=job.attempts,
                       child_crashes=log.count(LOST_MID_JOB),
                       others_done_before_poison_failed=done_before)
    counts = tally.report()
    assert finished and counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert job.status.value == "failed", job
    assert job.error.startswith("PoisonJobError: the worker process died 4 times"), job.error
    assert job.attempts == 5 and log.count("SIGTRAP") >= 4
    assert counts["completed"] == 40 and counts["failed"] == 1
    assert done_before >= 10
    assert not list(output_dir.rglob("poison.pdf"))
