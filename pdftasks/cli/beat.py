"""``pdftasks beat``, ``pdftasks schedule`` and ``pdftasks cleanup``."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("-l", "--loglevel", default=None, help="Log level (default PDFTASKS_LOG_LEVEL).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str | None, celery_args: tuple[str, ...]) -> None:
    """Start Celery Beat with the schedule of beat_schedule.py (run exactly one).

    A second beat started by mistake does not make entries fire twice: each task claims
    its (entry, slot) first. Extra arguments go to `celery beat`.
    """
    from pdftasks.celery_app import app
    from pdftasks.settings import get_settings

    s = get_settings()
    s.home.mkdir(parents=True, exist_ok=True)
    app.start(argv=["beat", "--loglevel", loglevel or s.log_level, *celery_args])


@click.command("schedule")
@click.option("--json", "as_json", is_flag=True, help="One JSON document per entry.")
def show_schedule(as_json: bool) -> None:
    """Print the schedule's entries and their next run times (in PDFTASKS_TIMEZONE)."""
    from pdftasks.contrib.beat import load_entries, schedule_path
    from pdftasks.settings import get_settings

    s = get_settings()
    tz = zoneinfo.ZoneInfo(s.timezone)
    now = dt.datetime.now(dt.UTC)
    if not as_json:
        click.echo(f"schedule: {schedule_path(s)}  (time zone {s.timezone})")
    for entry in load_entries(s):
        doc = {"name": entry.name, "at": entry.effective_at(), "kind": entry.kind,
               "priority": entry.priority, "enabled": entry.enabled(),
               "next_run": entry.spec().next_fire(now, tz).isoformat()
               if entry.enabled() else None}
        if as_json:
            click.echo(json.dumps(doc))
        else:
            when = (entry.spec().next_fire(now, tz).strftime("%a %Y-%m-%d %H:%M %Z")
                    if entry.enabled() else "off")
            click.echo(f"  {entry.name:<18} {doc['at']:<11} {entry.kind:<17} "
                       f"{entry.priority:<7} next: {when}")


@click.command()
@click.option("--days", type=float, default=None,
              help="Delete what is older than this (default PDFTASKS_CLEANUP_DAYS).")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
def cleanup(days: float | None, dry_run: bool) -> None:
    """Delete old PDFs (only inside the output dir, never through symlinks), their job
    records and expired results."""
    from pdftasks.celery_app import app
    from pdftasks.contrib.beat import cleanup as run_cleanup
    from pdftasks.settings import get_settings

    s = get_settings()
    report = run_cleanup(app, days if days is not None else s.cleanup_days, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for path in report.files:
        click.echo(f"{verb} {path}")
    click.echo(f"{verb} {len(report.files)} file(s), {len(report.jobs)} job record(s), "
               f"{report.results} expired result(s)")


COMMANDS = [beat, show_schedule, cleanup]
