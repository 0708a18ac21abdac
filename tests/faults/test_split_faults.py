"""Split jobs (``options.split``) when worker processes die: SIGKILLed pool children while
parts render, and a SIGKILLed main process with its children. Real Redis, real ``pdftasks
worker`` processes, real WeasyPrint; the merged PDFs are read back with pypdf.

Counted for parents (the jobs users follow) and for their parts: lost = 0 (every parent
COMPLETED with its whole merged PDF, every part COMPLETED), duplicated = 0 (no PDF but the
merged ones: part files are removed after the merge, also after redeliveries), tmp = 0.

A message can also be lost by the broker itself: kombu takes it off its queue (``BRPOP``)
and records it as unacknowledged in a second round trip, so a main process SIGKILLed in
between leaves it nowhere. That is made deterministic here by removing a queued part's
message by hand; the split job's watch (``pdftasks.worker.split._watch_split``) sends it
again once the parts stop making progress. A failure's report lists where the broker holds
the messages of the unfinished parts (``diagnostics.json`` in the test's tmp dir).
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

from tests.faults.conftest import FINAL, Tally, kill_tree, make_manager, worker_log_text
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


def whereabouts(client, job_ids: list[str]) -> dict[str, list[str]]:
    """Where the broker holds a message of each job: queue lists and kombu's ``unacked``
    hash (for a failure's report: a job in none of them was lost by the broker)."""
    places: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == "list":
            values = [(key, v) for v in client.lrange(key, 0, -1)]
        elif kind == "hash" and key == "unacked":
            values = [(f"unacked:{tag}", v) for tag, v in client.hgetall(key).items()]
        else:
            continue
        for where, value in values:
            for job_id in job_ids:
                if f'"{job_id}"' in value:
                    places[job_id].append(where)
    return places


def diagnose(tally: Tally, parents: list[str], path: Path) -> str:
    """The parts of unfinished parents: records and the broker's copies of their messages,
    also written to ``path``."""
    import json

    ids = part_ids(parents)
    records = tally.records(ids)
    open_ids = [i for i, r in records.items() if r["status"] != "completed"]
    open_ids += [f"{p}.merge" for p in parents if tally.records([p])[p]["status"] not in FINAL]
    info = {"parents": tally.records(parents), "open_parts": {i: records.get(i) for i in open_ids},
            "messages": whereabouts(tally.client, open_ids),
            "unacked_index": tally.client.zrange("unacked_index", 0, -1, withscores=True),
            "keys": sorted(tally.client.keys("*"))[:200]}
    text = json.dumps(info, indent=1, default=str)
    path.write_text(text)
    return text


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
                       parts_completed=parts.statuses(part_ids(parents))["completed"],
                       lost_messages_resent=worker_log_text(workers.logs).count(
                           "was lost; sending it again"))
    counts = tally.report()
    assert finished and counts["lost"] == 0, diagnose(tally, parents,
                                                      tmp_path / "diagnostics.json")
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert counts["completed"] == 3 and counts["failed"] == 0
    assert orphaned and tally.extra["parts_completed"] == 30, tally.extra
    check_merged(tally, output_dir, parents)


LOST_LIMITS = {"soft_time_limit_s": 5, "hard_time_limit_s": 8, "visibility_timeout_s": 10}


def lose_a_queued_part(workers, tally: Tally, manager, output_dir: Path,
                       options: dict | None = None) -> tuple[str, str]:
    """Submit a split report, SIGKILL its worker while it renders the first part, and remove the
    last part's message from its queue (as when a worker is killed after Redis handed it
    the message and before kombu recorded it as unacknowledged). Returns (parent, part)."""
    from pdftasks.models import part_job_id

    first = workers.start(output_dir, concurrency=1, **LOST_LIMITS)
    name = "lost.pdf"
    parent = manager.submit_job("report.html", report("lost"), name, options={
        "split": {"key": "rows", "size": SIZE}, **(options or {})})
    tally.add([parent], [name])
    # Killed while it renders the first part: its main process holds that part's message
    # (recorded as unacknowledged: back after the visibility timeout) and, with its one
    # prefetch slot taken, is not taking another one (a kill just then could lose that).
    first_part = f"pdf:job:{part_job_id(parent, 0)}"
    deadline = time.monotonic() + 60
    while tally.client.hget(first_part, "status") != "processing":
        assert time.monotonic() < deadline, "the first part did not start"
        time.sleep(0.002)
    kill_tree(first.proc.pid)
    first.proc.wait(timeout=10)
    last = part_job_id(parent, ROWS // SIZE - 1)
    [queue] = whereabouts(tally.client, [last])[last]
    [message] = [m for m in tally.client.lrange(queue, 0, -1) if f'"{last}"' in m]
    assert tally.client.lrem(queue, 1, message) == 1
    assert whereabouts(tally.client, [last])[last] == []
    return parent, last


def test_a_part_message_lost_by_the_broker_is_sent_again(redis_client, redis_url, workers,
                                                         output_dir, tmp_path) -> None:
    # Given a split report whose worker was killed once its parts were queued, and the
    # message of its last part, still queued, lost
    tally = Tally("split-3-lost-message", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    parent, last = lose_a_queued_part(workers, tally, manager, output_dir)
    # Then a new worker renders the other parts, sends the lost one again once the report
    # stopped making progress, and merges the report once with every row
    workers.start(output_dir, concurrency=2, **LOST_LIMITS)
    finished = tally.wait(timeout=120)
    parts = Tally("split-3-parts", redis_url, output_dir, lambda: workers.logs)
    records = parts.records(part_ids([parent]))
    log = worker_log_text(workers.logs)
    tally.extra.update(parts_completed=parts.statuses(part_ids([parent]))["completed"],
                       resent=log.count("was lost; sending it again"))
    counts = tally.report()
    assert finished and counts["lost"] == 0, diagnose(tally, [parent],
                                                      tmp_path / "diagnostics.json")
    assert counts["completed"] == 1 and counts["duplicated"] == 0 and counts["tmp"] == 0
    assert tally.extra["parts_completed"] == ROWS // SIZE, records
    assert f"the message of part {ROWS // SIZE} of {ROWS // SIZE} (pending) was lost" in log
    assert tally.extra["resent"] == 1, (tally.extra, log)
    assert records[last]["attempts"] == "1", records[last]
    check_merged(tally, output_dir, [parent])


def test_a_lost_part_of_a_report_with_secret_options_fails_it(
        redis_client, redis_url, workers, output_dir, tmp_path) -> None:
    # Given an encrypted split report (its passwords are in no message that waits in the
    # broker for minutes) whose last part's message was lost
    tally = Tally("split-4-lost-secret", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    parent, last = lose_a_queued_part(workers, tally, manager, output_dir, options={
        "encrypt": {"user_password": "u5er-lost-7f3a", "owner_password": "0wner-lost-91c2"}})
    # Then a new worker fails the report with an error saying to submit it again, instead of
    # merging it without its encryption or leaving it processing; no part file is left
    workers.start(output_dir, concurrency=2, **LOST_LIMITS)
    finished = tally.wait(timeout=120)
    assert finished, diagnose(tally, [parent], tmp_path / "diagnostics.json")
    record = tally.records([parent])[parent]
    assert record["status"] == "failed", record
    assert f"lost the message of {last} " in record["error"], record
    assert "submit the job again" in record["error"], record
    deadline = time.monotonic() + 30  # the part files are removed right after the failure
    while tally.files() and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = tally.report()
    assert counts["failed"] == 1 and counts["duplicated"] == 0 and counts["tmp"] == 0
    assert tally.files() == [], tally.files()
