"""Integration test: real beat and worker processes against real Redis, with a test schedule
of seconds and a user's own report source."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pdftasks import JobStatus
from pdftasks.stores import RedisJobStore
from tests.conftest import ROOT, pdf_text

pytestmark = pytest.mark.integration

SCHEDULE = '''
from pdftasks.contrib.beat import Entry

ENTRIES = [
    Entry("daily-report",     at="every 4s", kind="daily_report",     priority="high"),
    Entry("monthly-invoices", at="every 4s", kind="monthly_invoices", priority="normal"),
    Entry("weekly-summary",   at="mon 10:00", kind="weekly_summary",  priority="high"),
]
'''


def test_two_beats_fire_each_entry_once_per_tick(start_worker, redis_url, tmp_path: Path,
                                                 output_dir: Path) -> None:
    schedule_file = tmp_path / "beat_schedule.py"
    schedule_file.write_text(SCHEDULE)
    settings = {"schedule_file": schedule_file,
                "report_source": "tests.integration.report_source:source"}
    start_worker(concurrency=2, **settings)
    beats, logs = [], []
    for i in range(2):  # started by mistake, twice, each with its own state file
        env = dict(os.environ)
        env.update({f"PDFTASKS_{k.upper()}": str(v) for k, v in settings.items()})
        env["PDFTASKS_HOME"] = str(tmp_path / f"beat{i}")
        log = tmp_path / f"beat{i}.log"
        logs.append(log)
        beats.append(subprocess.Popen(
            [sys.executable, "-m", "pdftasks", "beat", "-l", "INFO"], env=env, cwd=ROOT,
            stdout=open(log, "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
    store = RedisJobStore(redis_url, "pdf")
    try:
        deadline = time.monotonic() + 60
        while True:
            jobs = [j for j in store.list(limit=None) if "slot" in j.metadata]
            slots = {j.metadata["slot"] for j in jobs}
            sent = [log.read_text().count("Sending due task daily-report") for log in logs]
            if len(slots) >= 4 and min(sent) >= 3:
                break
            assert time.monotonic() < deadline, (slots, sent)
            time.sleep(0.2)
    finally:
        for beat in beats:
            beat.terminate()
            beat.wait(30)
    # Both beats sent every tick; each (entry, slot) produced its jobs once.
    per_slot = Counter((j.metadata["schedule_entry"], j.metadata["slot"]) for j in jobs)
    for (entry, slot), n in per_slot.items():
        assert n == (1 if entry == "daily-report" else 2), (entry, slot, n)
    assert {e for e, _ in per_slot} == {"daily-report", "monthly-invoices"}
    deadline = time.monotonic() + 60
    while any(j.status is not JobStatus.COMPLETED for j in
              (store.get(x.job_id) for x in jobs)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Output names carry the period; each job has its own folder, so one file per job.
    today = dt.datetime.now(dt.UTC)
    names = sorted(set(p.name for p in output_dir.rglob("*.pdf")))
    month = (today.replace(day=1) - dt.timedelta(days=1)) if today.day == 1 else today
    assert names == sorted([f"daily_report_{today:%Y%m%d}.pdf",
                            f"invoice_north_{month:%Y%m}.pdf",
                            f"invoice_south_{month:%Y%m}.pdf"]), names
    [daily, *_] = output_dir.rglob(f"daily_report_{today:%Y%m%d}.pdf")
    [north, *_] = output_dir.rglob(f"invoice_north_{month:%Y%m}.pdf")
    text, _ = pdf_text(daily)
    assert "Zebra Logistics Daily" in text and "4,242" in text
    text, _ = pdf_text(north)
    assert f"Z-{month:%Y%m}-north" in text and "North Depot" in text
