"""Scheduled reports and cleanup on Celery Beat.

The schedule is a list of ``Entry`` in ``PDFTASKS_SCHEDULE_FILE``, else ./beat_schedule.py,
else the packaged default ``pdftasks.contrib.default_schedule``. Times are wall-clock times in
``PDFTASKS_TIMEZONE``, so 09:00 stays 09:00 across daylight-saving changes.
``PDFTASKS_SCHEDULE_<NAME>`` re-times an entry (``"08:30"``) or switches it off (``"off"``)
without editing code.

Exactly once: beat computes the *slot* an entry fires for (the scheduled time, e.g. today
09:00) and passes it to the task; the task claims ``(entry, slot)`` in the job store (Redis
``SET NX`` or a SQLite unique row) before doing anything. Two beats started by mistake send
two messages for the same slot; only the first claim runs. A beat that was down at the
scheduled time fires the missed entry when it comes back, if that is within
``PDFTASKS_BEAT_GRACE_S`` (Celery's ``beat_cron_starting_deadline``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import importlib.util
import logging
import math
import os
import re
import time
import zoneinfo
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from celery import Celery, schedules
from celery.beat import PersistentScheduler

from pdftasks.models import JobPriority, JobStatus
from pdftasks.settings import Settings

log = logging.getLogger(__name__)

RUN_ENTRY = "pdftasks.run_scheduled"
#: How long a claimed (entry, slot) is remembered, in seconds: longer than any period.
CLAIM_TTL_S = 40 * 86400
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_SPEC = re.compile(
    r"^(?:(?P<dow>mon|tue|wed|thu|fri|sat|sun)\s+|(?:day\s+)?(?P<dom>\d{1,2})(?:st|nd|rd|th)?"
    r"\s+)?(?P<h>\d{1,2}):(?P<m>\d{2})\Z")
_EVERY = re.compile(r"^every\s+(?P<n>\d+)\s*s\Z")


@dataclasses.dataclass(frozen=True)
class Spec:
    """When an entry fires: daily ``HH:MM``, weekly ``mon HH:MM``, monthly ``1 HH:MM``,
    or ``every Ns`` (aligned to multiples of N seconds; for tests and demos)."""

    text: str
    hour: int = 0
    minute: int = 0
    day_of_week: int | None = None  # 0 = Monday
    day_of_month: int | None = None
    every_s: int | None = None

    @classmethod
    def parse(cls, text: str) -> Spec:
        value = " ".join(text.strip().lower().split())
        if m := _EVERY.match(value):
            return cls(value, every_s=max(1, int(m["n"])))
        m = _SPEC.match(value)
        if not m or int(m["h"]) > 23 or int(m["m"]) > 59 or (
                m["dom"] and not 1 <= int(m["dom"]) <= 28):
            raise ValueError(
                f"bad schedule {text!r}: use 'HH:MM', 'mon HH:MM', '1 HH:MM' (day 1-28), "
                "'every Ns' or 'off'")
        return cls(value, int(m["h"]), int(m["m"]),
                   _DAYS.index(m["dow"]) if m["dow"] else None,
                   int(m["dom"]) if m["dom"] else None)

    @property
    def period(self) -> str:
        if self.every_s:
            return "interval"
        return "monthly" if self.day_of_month else "weekly" if self.day_of_week is not None \
            else "daily"

    def _at(self, day: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
        # Wall-clock time in tz; a time skipped by a DST jump resolves to the later offset.
        local = dt.datetime(day.year, day.month, day.day, self.hour, self.minute, tzinfo=tz)
        return local.astimezone(dt.UTC).astimezone(tz)

    def _matches(self, day: dt.date) -> bool:
        if self.day_of_month is not None:
            return day.day == self.day_of_month
        if self.day_of_week is not None:
            return day.weekday() == self.day_of_week
        return True

    def last_fire(self, now: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
        """The latest scheduled time at or before ``now`` (the slot a firing belongs to)."""
        if self.every_s:
            ts = math.floor(now.timestamp() / self.every_s) * self.every_s
            return dt.datetime.fromtimestamp(ts, tz)
        day = now.astimezone(tz).date()
        for _ in range(40):
            if self._matches(day) and (at := self._at(day, tz)) <= now:
                return at
            day -= dt.timedelta(days=1)
        raise AssertionError("unreachable: a slot exists within 40 days")

    def next_fire(self, now: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
        """The first scheduled time strictly after ``now``."""
        if self.every_s:
            ts = (math.floor(now.timestamp() / self.every_s) + 1) * self.every_s
            return dt.datetime.fromtimestamp(ts, tz)
        day = now.astimezone(tz).date()
        for _ in range(40):
            if self._matches(day) and (at := self._at(day, tz)) > now:
                return at
            day += dt.timedelta(days=1)
        raise AssertionError("unreachable: a slot exists within 40 days")

    def celery_schedule(self, app: Celery) -> Any:
        if self.every_s:
            return AlignedInterval(self.every_s, app=app)
        return schedules.crontab(
            minute=self.minute, hour=self.hour,
            day_of_week="*" if self.day_of_week is None else (self.day_of_week + 1) % 7,
            day_of_month="*" if self.day_of_month is None else self.day_of_month, app=app)


class AlignedInterval(schedules.schedule):
    """Every N seconds at multiples of N (so every beat process agrees on the ticks)."""

    def __init__(self, every_s: int, app: Celery | None = None) -> None:
        self.every_s = every_s
        super().__init__(dt.timedelta(seconds=every_s), app=app)

    def is_due(self, last_run_at: dt.datetime) -> schedules.schedstate:
        now = time.time()
        tick = math.floor(now / self.every_s) * self.every_s
        due = last_run_at.timestamp() < tick
        return schedules.schedstate(due, tick + self.every_s - now)

    def __reduce__(self) -> Any:
        return self.__class__, (self.every_s,)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One line of the schedule.

    Attributes:
        name: Unique name; ``PDFTASKS_SCHEDULE_<NAME>`` (dashes as underscores) overrides
            ``at``.
        at: When (see ``Spec``), in ``PDFTASKS_TIMEZONE``; ``"off"`` disables the entry.
        kind: ``daily_report``, ``weekly_summary``, ``monthly_invoices`` or ``cleanup``.
        priority: Queue of the PDF jobs it creates.
        template: Template of the PDFs (reports: report.html, invoices: invoice.html).
    """

    name: str
    at: str
    kind: str
    priority: str = "normal"
    template: str | None = None

    @property
    def env_name(self) -> str:
        return "PDFTASKS_SCHEDULE_" + re.sub(r"\W", "_", self.name).upper()

    def effective_at(self, environ: Mapping[str, str] | None = None) -> str:
        return (environ if environ is not None else os.environ).get(self.env_name, self.at)

    def enabled(self, environ: Mapping[str, str] | None = None) -> bool:
        return self.effective_at(environ).strip().lower() not in ("off", "disabled", "")

    def spec(self, environ: Mapping[str, str] | None = None) -> Spec:
        return Spec.parse(self.effective_at(environ))


KINDS = {"daily_report", "weekly_summary", "monthly_invoices", "cleanup"}


#: The schedule shipped in the package, used without a schedule file.
DEFAULT_SCHEDULE = "pdftasks.contrib.default_schedule"


def schedule_source(s: Settings) -> Path | str | None:
    """Where the schedule comes from: ``PDFTASKS_SCHEDULE_FILE`` (None if it is missing),
    else ./beat_schedule.py, else the packaged default (its module name)."""
    if s.schedule_file:
        return s.schedule_file if s.schedule_file.is_file() else None
    local = Path.cwd() / "beat_schedule.py"
    return local if local.is_file() else DEFAULT_SCHEDULE


def schedule_path(s: Settings) -> Path | None:
    """The file of the schedule (see ``schedule_source``): for the packaged default, the
    installed ``pdftasks/contrib/default_schedule.py`` (a file to copy and edit)."""
    source = schedule_source(s)
    if isinstance(source, str):
        spec = importlib.util.find_spec(source)
        return Path(spec.origin) if spec and spec.origin else None
    return source


def load_entries(s: Settings) -> list[Entry]:
    """The entries of the schedule (its ``ENTRIES`` list)."""
    source = schedule_source(s)
    if source is None:
        raise FileNotFoundError(f"PDFTASKS_SCHEDULE_FILE {s.schedule_file} does not exist")
    if isinstance(source, str):
        module = importlib.import_module(source)
    else:
        spec = importlib.util.spec_from_file_location("pdftasks_beat_schedule", source)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    entries = list(module.ENTRIES)
    for entry in entries:
        if entry.kind not in KINDS:
            raise ValueError(f"{source}: entry {entry.name!r} has unknown kind {entry.kind!r}")
        JobPriority.parse(entry.priority)
        if entry.enabled():
            entry.spec()
    return entries


def beat_schedule(app: Celery, s: Settings) -> dict[str, Any]:
    """Celery's ``beat_schedule`` from the enabled entries."""
    out = {}
    for entry in load_entries(s):
        if not entry.enabled():
            continue
        out[entry.name] = {
            "task": RUN_ENTRY,
            "schedule": entry.spec().celery_schedule(app),
            "kwargs": {"entry": entry.name, "kind": entry.kind, "at": entry.effective_at(),
                       "priority": entry.priority, "template": entry.template},
            "options": {"queue": f"{s.queue_namespace}.{JobPriority.parse(entry.priority).label}"},
        }
    return out


class Scheduler(PersistentScheduler):
    """Celery's persistent scheduler, reading ``beat_schedule.py`` when beat starts (not
    in every client), and passing each firing the slot it belongs to."""

    def setup_schedule(self) -> None:
        from pdftasks.worker.tasks import app_settings

        self.app.conf.beat_schedule = beat_schedule(self.app, app_settings(self.app))
        super().setup_schedule()

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True,
                    **kwargs: Any) -> Any:
        at = (entry.kwargs or {}).get("at")
        if at:
            tz = zoneinfo.ZoneInfo(str(self.app.conf.timezone or "UTC"))
            slot = Spec.parse(at).last_fire(dt.datetime.now(dt.UTC), tz)
            entry.kwargs = {**entry.kwargs, "slot": slot.isoformat()}
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


class ReportSource(Protocol):
    """Where scheduled reports get their data (``PDFTASKS_REPORT_SOURCE=module:object``).

    Each method returns the template data; ``monthly_invoices`` returns one mapping per
    customer, each with a ``customer`` key (used in the file name) and the invoice fields.
    """

    def daily_report(self, day: dt.date) -> Mapping[str, Any]: ...

    def weekly_summary(self, week_start: dt.date) -> Mapping[str, Any]: ...

    def monthly_invoices(self, month: dt.date) -> Iterable[Mapping[str, Any]]: ...


def load_source(path: str) -> ReportSource:
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(f"PDFTASKS_REPORT_SOURCE {path!r} must look like 'module:object'")
    source: ReportSource = getattr(importlib.import_module(module), name)
    return source


_CUSTOMER = re.compile(r"[^A-Za-z0-9_-]+")


def run_entry(app: Celery, entry: str, kind: str, slot: str | None, priority: str,
              template: str | None) -> dict[str, Any]:
    """Body of the scheduled task: claim the slot, then fan out the PDF jobs."""
    from pdftasks.client import submit_jobs
    from pdftasks.worker.tasks import app_settings, job_store

    s = app_settings(app)
    tz = zoneinfo.ZoneInfo(s.timezone)
    when = dt.datetime.fromisoformat(slot) if slot else dt.datetime.now(tz)
    if not job_store(app).claim(f"beat:{entry}:{when.astimezone(dt.UTC).isoformat()}",
                                CLAIM_TTL_S):
        log.info("schedule entry %s already ran for %s: skipped", entry, when)
        return {"entry": entry, "slot": when.isoformat(), "skipped": True}
    day = when.astimezone(tz).date()
    if kind == "cleanup":
        report = cleanup(app, s.cleanup_days)
        return {"entry": entry, "slot": when.isoformat(), **report.summary()}
    source = load_source(s.report_source)
    meta = {"schedule_entry": entry, "slot": when.isoformat()}
    if kind == "daily_report":
        items = [{"template": template or "report.html", "data": source.daily_report(day),
                  "output": f"daily_report_{day:%Y%m%d}.pdf"}]
    elif kind == "weekly_summary":
        monday = day - dt.timedelta(days=day.weekday())
        year, week, _ = monday.isocalendar()
        items = [{"template": template or "report.html",
                  "data": source.weekly_summary(monday),
                  "output": f"weekly_summary_{year}W{week:02d}.pdf"}]
    else:  # monthly_invoices: on the 1st, bill the month that just ended
        month = (day.replace(day=1) - dt.timedelta(days=1)).replace(day=1) \
            if day.day == 1 else day.replace(day=1)
        items = []
        for invoice in source.monthly_invoices(month):
            customer = _CUSTOMER.sub("-", str(invoice["customer"])).strip("-")[:60] or "customer"
            items.append({"template": template or "invoice.html", "data": dict(invoice),
                          "output": f"invoice_{customer}_{month:%Y%m}.pdf"})
    for item in items:
        item.update(priority=priority, metadata=meta)
    ids = submit_jobs(app, items)
    log.info("schedule entry %s (%s): queued %d job(s)", entry, when, len(ids))
    return {"entry": entry, "slot": when.isoformat(), "jobs": ids}


@dataclasses.dataclass
class CleanupReport:
    files: list[Path | str]  # paths, or s3:// URIs on S3 storage
    jobs: list[str]
    results: int
    dry_run: bool
    dead_letters: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"deleted_files": len(self.files), "deleted_jobs": len(self.jobs),
                "deleted_results": self.results, "dry_run": self.dry_run,
                "dead_letters": len(self.dead_letters)}


def cleanup(app: Celery, days: float, dry_run: bool = False) -> CleanupReport:
    """Delete PDFs, finished job records and expired results older than ``days``.

    Only regular files directly inside the output directory are deleted; symlinks are
    never followed or removed. With ``PDFTASKS_STORAGE=s3://…``, the ``.pdf`` objects
    directly under the prefix, by their LastModified. On SQS, jobs whose messages were
    dead-lettered are recorded as FAILED first.
    """
    from pdftasks.storage import storage_for
    from pdftasks.worker.tasks import app_settings, job_store

    s = app_settings(app)
    cutoff = time.time() - days * 86400
    dead: list[str] = []
    if s.is_sqs:
        from pdftasks.contrib.aws import reap_dead_letters

        dead = reap_dead_letters(app, dry_run=dry_run)
    files = storage_for(s).delete_older_than(cutoff, dry_run=dry_run)
    store = job_store(app)
    final = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
    jobs = store.created_before(cutoff, final)
    results = 0
    if not dry_run:
        store.delete(jobs)
        results = _expire_results(app, s)
    return CleanupReport(files, jobs, results, dry_run, dead)


def _expire_results(app: Celery, s: Settings) -> int:
    """Expired Celery results: Redis expires them itself; database backends clean up;
    the local ``file://`` backend has no expiry, so old files are removed here."""
    backend_url = s.effective_result_backend
    if backend_url.startswith("file://"):
        folder = Path(backend_url.removeprefix("file://"))
        cutoff = time.time() - s.result_expires_s
        removed = 0
        if folder.is_dir():
            for entry in os.scandir(folder):
                if entry.is_file(follow_symlinks=False) and \
                        entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed
    cleanup_fn = getattr(app.backend, "cleanup", None)
    if callable(cleanup_fn):
        cleanup_fn()
    return 0


def register(app: Celery) -> None:
    """The scheduled-entry task, the schedule and the scheduler class, on ``app``."""
    from pdftasks.worker.tasks import app_settings

    s = app_settings(app)

    @app.task(name=RUN_ENTRY, bind=True, acks_late=True, shared=False)
    def run_scheduled(self: Any, entry: str, kind: str, at: str | None = None,
                      slot: str | None = None, priority: str = "normal",
                      template: str | None = None) -> dict[str, Any]:
        return run_entry(self.app, entry, kind, slot, priority, template)

    app.conf.update(
        beat_scheduler="pdftasks.contrib.beat:Scheduler",
        beat_schedule_filename=str(s.home / "celerybeat-schedule"),
        beat_cron_starting_deadline=s.beat_grace_s or None,
    )
