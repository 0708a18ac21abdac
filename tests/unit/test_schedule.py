"""Unit tests (no services): schedule specs and DST, overrides, grace window, cleanup."""

from __future__ import annotations

import datetime as dt
import os
import time
import zoneinfo
from pathlib import Path

import pytest

from pdftasks.celery_app import create_app
from pdftasks.contrib.beat import Entry, Spec, cleanup, load_entries
from pdftasks.models import JobStatus
from pdftasks.settings import Settings
from pdftasks.stores import Job
from pdftasks.worker.tasks import job_store
from tests.conftest import ROOT

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
UTC = dt.UTC


@pytest.mark.parametrize("now_local,expected_utc", [
    # Spring forward (29 March 2026): 09:00 CEST is 07:00 UTC.
    (dt.datetime(2026, 3, 28, 10, 0, tzinfo=BERLIN), dt.datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
    (dt.datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN), dt.datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
    # Fall back (25 October 2026): 09:00 CET is 08:00 UTC.
    (dt.datetime(2026, 10, 24, 10, 0, tzinfo=BERLIN),
     dt.datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),
    (dt.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN),
     dt.datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),
])
def test_nine_oclock_berlin_across_dst(now_local, expected_utc) -> None:
    spec = Spec.parse("09:00")
    nxt = spec.next_fire(now_local, BERLIN)
    assert nxt == expected_utc
    assert (nxt.astimezone(BERLIN).hour, nxt.astimezone(BERLIN).minute) == (9, 0)
    assert spec.last_fire(nxt + dt.timedelta(minutes=5), BERLIN) == nxt


@pytest.mark.parametrize("last_local,now_local,hours", [
    (dt.datetime(2026, 3, 28, 9, 0, tzinfo=BERLIN), dt.datetime(2026, 3, 28, 10, 0,
                                                                tzinfo=BERLIN), 22),
    (dt.datetime(2026, 10, 24, 9, 0, tzinfo=BERLIN), dt.datetime(2026, 10, 24, 10, 0,
                                                                 tzinfo=BERLIN), 24),
])
def test_celery_crontab_agrees_across_dst(last_local, now_local, hours) -> None:
    # What beat will actually do with the crontab built from the spec.
    app = create_app(Settings(timezone="Europe/Berlin", broker_url="redis://127.0.0.1:1/0"))
    schedule = Spec.parse("09:00").celery_schedule(app)
    schedule.nowfun = lambda: now_local
    remaining = schedule.remaining_estimate(last_local)
    # Real elapsed time: 22 h over the short night, 24 h over the long one.
    assert remaining == dt.timedelta(hours=hours)
    assert now_local.astimezone(UTC) + remaining == Spec.parse("09:00").next_fire(
        now_local, BERLIN)


@pytest.mark.parametrize("text,period", [
    ("09:00", "daily"), ("mon 10:00", "weekly"), ("1 00:01", "monthly"),
    ("day 15 12:30", "monthly"), ("every 5s", "interval")])
def test_spec_formats(text: str, period: str) -> None:
    assert Spec.parse(text).period == period


@pytest.mark.parametrize("text", ["25:00", "9", "funday 10:00", "31 10:00", "every s"])
def test_bad_specs_are_refused_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="bad schedule"):
        Spec.parse(text)


def test_weekly_and_monthly_next_runs() -> None:
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday
    assert Spec.parse("mon 10:00").next_fire(now, UTC) == dt.datetime(2026, 11, 30, 10, 0,
                                                                      tzinfo=UTC)
    assert Spec.parse("1 00:01").next_fire(now, UTC) == dt.datetime(2026, 12, 1, 0, 1,
                                                                    tzinfo=UTC)
    assert Spec.parse("every 7s").next_fire(now, UTC).timestamp() % 7 == 0


def test_repository_schedule_and_env_overrides(monkeypatch) -> None:
    entries = {e.name: e for e in load_entries(Settings(schedule_file=ROOT / "beat_schedule.py"))}
    assert {n: (e.at, e.priority) for n, e in entries.items()} == {
        "daily-report": ("09:00", "high"), "weekly-summary": ("mon 10:00", "high"),
        "monthly-invoices": ("1 00:01", "normal"), "cleanup-old-pdfs": ("02:00", "low")}
    monkeypatch.setenv("PDFTASKS_SCHEDULE_DAILY_REPORT", "08:30")
    monkeypatch.setenv("PDFTASKS_SCHEDULE_CLEANUP_OLD_PDFS", "off")
    assert entries["daily-report"].spec().hour == 8
    assert not entries["cleanup-old-pdfs"].enabled()
    monkeypatch.setenv("PDFTASKS_SCHEDULE_WEEKLY_SUMMARY", "someday")
    with pytest.raises(ValueError, match="bad schedule 'someday'"):
        Entry("weekly-summary", at="mon 10:00", kind="weekly_summary").spec()


@pytest.mark.parametrize("now_local,due", [
    (dt.datetime(2026, 11, 28, 9, 5, tzinfo=UTC), True),    # beat back 5 min late: runs
    (dt.datetime(2026, 11, 28, 11, 0, tzinfo=UTC), False),  # 2 h late, grace 1 h: skipped
])
def test_missed_run_within_the_grace_window(now_local, due) -> None:
    app = create_app(Settings(beat_grace_s=3600, broker_url="redis://127.0.0.1:1/0"))
    schedule = Spec.parse("09:00").celery_schedule(app)
    schedule.nowfun = lambda: now_local
    last_run = dt.datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert schedule.is_due(last_run).is_due is due


def _age(path: Path, days: float) -> None:
    old = time.time() - days * 86400
    os.utime(path, (old, old), follow_symlinks=False)


def test_cleanup_deletes_only_old_files_inside_the_output_dir(tmp_path: Path) -> None:
    # Jobs' PDFs live in per-job folders (<namespace>/<owner>/<job id>/<name>.pdf): old ones
    # are deleted with their emptied folders; symlinks (to files or folders) are not followed.
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "old.pdf").write_bytes(b"%PDF old")
    (out / "new.pdf").write_bytes(b"%PDF new")
    (outside / "precious.pdf").write_bytes(b"%PDF keep me")
    (out / "link.pdf").symlink_to(outside / "precious.pdf")
    (out / "pdf" / "_" / "job1").mkdir(parents=True)
    (out / "pdf" / "_" / "job1" / "old.pdf").write_bytes(b"%PDF nested")
    (out / "linkdir").symlink_to(outside)
    (out / "notes.txt").write_text("not a pdf")
    for p in (out / "old.pdf", outside / "precious.pdf", out / "link.pdf",
              out / "pdf" / "_" / "job1" / "old.pdf", out / "notes.txt"):
        _age(p, 40)
    app = create_app(Settings(home=tmp_path / "home", output_dir=out, broker_url=None))
    store = job_store(app)
    old_job = Job("old-job", "invoice.html", {}, "old.pdf", status=JobStatus.COMPLETED,
                  created_at=dt.datetime.now(UTC) - dt.timedelta(days=40))
    new_job = Job("new-job", "invoice.html", {}, "new.pdf", status=JobStatus.COMPLETED)
    store.create_many([old_job, new_job])

    dry = cleanup(app, days=30, dry_run=True)
    old_files = sorted([out / "old.pdf", out / "pdf" / "_" / "job1" / "old.pdf"])
    assert sorted(dry.files) == old_files and dry.jobs == ["old-job"]
    assert (out / "old.pdf").exists() and store.get("old-job") is not None

    report = cleanup(app, days=30)
    assert sorted(report.files) == old_files
    assert not (out / "old.pdf").exists() and (out / "new.pdf").exists()
    assert not (out / "pdf").exists()  # the emptied job folders are gone too
    assert (out / "link.pdf").is_symlink() and (outside / "precious.pdf").exists()
    assert (out / "linkdir").is_symlink() and (out / "notes.txt").exists()
    assert store.get("old-job") is None and store.get("new-job") is not None


def test_the_example_schedule_is_the_packaged_default() -> None:
    # beat_schedule.py (the example to copy) and pdftasks.contrib.default_schedule (what an
    # installed wheel uses) hold the same entries; a change to one must reach the other.
    import importlib.util

    from pdftasks.contrib import default_schedule

    spec = importlib.util.spec_from_file_location("example_schedule", ROOT / "beat_schedule.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.ENTRIES == default_schedule.ENTRIES
