"""Split jobs (``options.split``) when worker processes die: SIGKILLed pool children while
parts render, and a SIGKILLed main process with its children. Real Redis, real ``pdftasks
worker`` processes, real WeasyPrint; the merged PDFs are read back with pypdf.

Counted for parents (the jobs users follow) and for their parts: lost = 0 (every parent
COMPLETED with its whole merged PDF, every part COMPLETED), duplicated = 0 (no PDF but the
merged ones: part files are removed after the merge, also after redeliveries), tmp = 0.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from pypdf import PdfReader

from tests.faults.conftest import Tally, kill_tree, make_manager, worker_log_text
from tests.faults.test_worker_crashes import LOST_MID_JOB, busy_child

pytestmark = pytest.mark.integration

ROWS, SIZE = 400, 40  # 10 parts a report
ROW = re.compile(r"^\d+ 2026-11-\d\d ", re.M)


def report(tag: str) -> dict:
    return {"title": f"Faults {tag}", "period": "2026-11", "summary": "s",
            "rows": [{"line": i + 1, "date": f"2026-11-{1 + i % 30:02d}", "region": tag,
                      "amount": i * 1.5} for i in range(ROWS)],
            "closing": "End of report."}


def submit_reports(manager, tally: Tally, count: int, prefix: str) -> list[str]:
    ids = []
    for i in range(count):
        name = f"{prefix}-{i}.pdf"
        job_id = manager.submit_job("report.html", report(f"{prefix}{i}"), name,
                                    options={"split": {"key": "rows", "size": SIZE}})
        tally.add([job_id], [name])
        ids.append(job_id)
    return ids


def part_ids(parents: list[str]) -> list[str]:
    from pdftasks.models import part_job_id

    return [part_job_id(p, i) for p in parents for i in range(ROWS // SIZE)]


def parts_completed(tally: Tally, parents: list[str]) -> int:
    return tally.statuses(part_ids(parents))["completed"]


def check_merged(tally: Tally, output_dir: Path, parents: list[str]) -> None:
    """Every merged PDF holds each row once, and its last page says "Page N of N"."""
    for job_id in parents:
        reader = PdfReader(output_dir / tally.key(job_id))
        text = "\n".join(p.extract_text() or "" for p in reader.pages)
        assert len(ROW.findall(text)) == ROWS, job_id
        n = len(reader.pages)
        assert f"Page {n} of {n}" in (reader.pages[-1].extract_text() or "")


def test_sigkill_children_while_parts_render(redis_client, redis_url, workers, output_dir,
                                             tmp_path) -> None:
    # Given 4 split reports of 10 parts each and a worker with two children
    worker = workers.start(output_dir, concurrency=2, max_redeliveries=10)
    tally = Tally("split-1-sigkill-child", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    parents = submit_reports(manager, tally, 4, "kill")
    # When a child that is rendering is SIGKILLed after about every 4th part
    kills: list[int] = []

    def killer() -> None:
        for threshold in range(2, 40, 4):
            while parts_completed(tally, parents) < threshold:
                if time.monotonic() - tally.started > 240:
                    return
                time.sleep(0.02)
            pid = busy_child(worker)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                kills.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    finished = tally.wait(timeout=300)
    thread.join(timeout=5)
    # Then every parent completed once with its whole merged PDF, and nothing else is left
    parts = Tally("split-1-parts", redis_url, output_dir, lambda: workers.logs)
    log = worker_log_text(workers.logs)
    tally.extra.update(kills=len(kills), killed_mid_job=log.count(LOST_MID_JOB),
                       parts=len(part_ids(parents)),
                       parts_completed=parts.statuses(part_ids(parents))["completed"],
                       part_redeliveries=sum(
                           max(0, int(r["attempts"] or 0) - 1 - int(r["retry_count"] or 0))
                           for r in parts.records(part_ids(parents)).values()))
    counts = tally.report()
    assert finished and counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert counts["completed"] == 4 and counts["failed"] == 0
    assert tally.extra["parts_completed"] == 40, tally.extra
    assert len(kills) >= 5 and tally.extra["killed_mid_job"] >= 3, tally.extra
    assert tally.extra["part_redeliveries"] >= 3, tally.extra
    check_merged(tally, output_dir, parents)


def test_sigkill_main_process_mid_split_then_a_new_worker_finishes(
        redis_client, redis_url, workers, output_dir, tmp_path) -> None:
    # Given a worker with short limits (so the visibility timeout can be short too) and
    # 3 split reports
    limits = {"soft_time_limit_s": 5, "hard_time_limit_s": 8, "visibility_timeout_s": 15}
    first = workers.start(output_dir, concurrency=2, **limits)
    tally = Tally("split-2-sigkill-main", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    parents = submit_reports(manager, tally, 3, "main")
    # When the main process and its children are SIGKILLed while parts render
    deadline = time.monotonic() + 120
    while not (parts_completed(tally, parents) >= 6 and any(
            r["status"] == "processing" for r in tally.records(part_ids(parents)).values())):
        assert time.monotonic() < deadline, "no part rendering after 6 completed"
        time.sleep(0.02)
    killed = kill_tree(first.proc.pid)
    first.proc.wait(timeout=10)
    orphaned = [i for i, r in tally.records(part_ids(parents)).items()
                if r["status"] == "processing"]
    # Then a new worker renders the rest and the orphaned parts (after the visibility
    # timeout), merges every report once and leaves no part file behind
    workers.start(output_dir, concurrency=2, **limits)
    finished = tally.wait(timeout=120)
    parts = Tally("split-2-parts", redis_url, output_dir, lambda: workers.logs)
    tally.extra.update(killed_pids=len(killed), parts_processing_at_kill=len(orphaned),
                       parts_completed=parts.statuses(part_ids(parents))["completed"])
    counts = tally.report()
    assert finished and counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert counts["completed"] == 3 and counts["failed"] == 0
    assert orphaned and tally.extra["parts_completed"] == 30, tally.extra
    check_merged(tally, output_dir, parents)
