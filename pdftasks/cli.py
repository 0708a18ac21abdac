"""The ``pdftasks`` command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from pdftasks.enums import JobPriority, JobStatus
from pdftasks.errors import PdfTasksError

PRIORITY_CHOICE = click.Choice([p.label for p in JobPriority], case_sensitive=False)

#: Celery states -> JobStatus. Celery says PENDING for ids it has never seen, too.
_CELERY_STATES = {
    "PENDING": JobStatus.PENDING, "RECEIVED": JobStatus.PENDING,
    "STARTED": JobStatus.PROCESSING, "RETRY": JobStatus.RETRYING,
    "SUCCESS": JobStatus.COMPLETED, "FAILURE": JobStatus.FAILED,
    "REVOKED": JobStatus.CANCELLED,
}


def _load_data(data: str | None, data_file: str | None) -> dict[str, Any]:
    try:
        if data_file:
            text = sys.stdin.read() if data_file == "-" else Path(data_file).read_text()
        else:
            text = data or "{}"
        value = json.loads(text)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read JSON data: {exc}") from exc
    if not isinstance(value, dict):
        raise click.BadParameter("data must be a JSON object")
    return value


def _fail(exc: Exception) -> None:
    click.secho(f"error: {type(exc).__name__}: {exc}", fg="red", err=True)
    sys.exit(2)


@click.group()
@click.version_option(package_name="pdftasks")
def main() -> None:
    """pdftasks: turn Jinja2 HTML templates + JSON data into PDFs on Celery priority queues.

    Configuration comes from PDFTASKS_* environment variables (see the README). With no
    PDFTASKS_BROKER_URL, everything lives in files under PDFTASKS_HOME (default ./.pdftasks).
    """


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-c", "--concurrency", type=int, default=None,
              help="Worker processes (default PDFTASKS_CONCURRENCY, else the CPU count).")
@click.option("-l", "--loglevel", default=None, help="Log level (default PDFTASKS_LOG_LEVEL).")
@click.option("-n", "--hostname", default=None, help="Worker node name (Celery -n).")
@click.option("--queues", default=None,
              help="Comma-separated priorities to consume, in order (default: all four, "
                   "urgent first).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency: int | None, loglevel: str | None, hostname: str | None,
           queues: str | None, celery_args: tuple[str, ...]) -> None:
    """Start a Celery worker consuming the priority queues in strict order.

    Extra arguments are passed to `celery worker`.
    """
    from pdftasks.celery_app import app, queue_name, queue_names
    from pdftasks.settings import get_settings

    s = get_settings()
    q = ([queue_name(p) for p in queues.split(",")] if queues else queue_names())
    argv = ["worker", "-Q", ",".join(q), "-c", str(concurrency or s.concurrency),
            "--prefetch-multiplier", "1", "-O", "fair", "--loglevel", loglevel or s.log_level]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv=[*argv, *celery_args])


@main.command()
@click.argument("template")
@click.option("-o", "--output", "output_filename", required=True, help="Output file name (.pdf).")
@click.option("-d", "--data", default=None, help="Inline JSON object.")
@click.option("-f", "--data-file", default=None, help="JSON file ('-' = stdin).")
@click.option("-p", "--priority", type=PRIORITY_CHOICE, default="normal", show_default=True)
@click.option("--css", "css_file", default=None, help="Extra CSS file from the templates dir.")
@click.option("--wait/--no-wait", default=False, help="Wait for the PDF and print its result.")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait with --wait.")
def submit(template: str, output_filename: str, data: str | None, data_file: str | None,
           priority: str, css_file: str | None, wait: bool, timeout: float) -> None:
    """Queue one PDF job and print its id."""
    from pdftasks.tasks import generate_pdf

    payload = _load_data(data, data_file)
    try:
        result = generate_pdf.delay(template=template, data=payload,
                                    output_filename=output_filename, priority=priority,
                                    css_file=css_file)
    except PdfTasksError as exc:
        _fail(exc)
    click.echo(result.id)
    if wait:
        try:
            click.echo(json.dumps(result.get(timeout=timeout), indent=2))
        except Exception as exc:
            _fail(exc)


def job_state(job_id: str) -> dict[str, Any]:
    """Status document of a job from the result backend."""
    from celery.result import AsyncResult

    from pdftasks.celery_app import app

    res = AsyncResult(job_id, app=app)
    status = _CELERY_STATES.get(res.state, JobStatus.PENDING)
    doc: dict[str, Any] = {"job_id": job_id, "status": status.value, "celery_state": res.state}
    if status is JobStatus.PENDING:
        doc["note"] = "queued, or unknown id (the result backend cannot tell them apart)"
    if res.state == "SUCCESS":
        doc["result"] = res.result
    elif res.state in ("FAILURE", "RETRY"):
        doc["error"] = f"{type(res.result).__name__}: {res.result}"
    return doc


@main.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Print a job's status as JSON."""
    click.echo(json.dumps(job_state(job_id), indent=2, default=str))


@main.command()
@click.argument("template")
@click.option("-o", "--output", "output_filename", required=True, help="Output file name (.pdf).")
@click.option("-d", "--data", default=None, help="Inline JSON object.")
@click.option("-f", "--data-file", default=None, help="JSON file ('-' = stdin).")
@click.option("--css", "css_file", default=None, help="Extra CSS file from the templates dir.")
def render(template: str, output_filename: str, data: str | None, data_file: str | None,
           css_file: str | None) -> None:
    """Render one PDF now, without a queue (for template authors).

    The same sandbox, URL rules and time/memory limits as a worker apply.
    """
    from pdftasks.render import PDFService, apply_memory_limit, time_limit
    from pdftasks.settings import get_settings

    s = get_settings()
    payload = _load_data(data, data_file)
    apply_memory_limit(s.render_memory_limit_mb)
    try:
        with time_limit(s.soft_time_limit_s):
            result = PDFService().generate_pdf(template, payload, output_filename, css_file)
    except PdfTasksError as exc:
        _fail(exc)
    click.echo(json.dumps(result.as_dict(), indent=2))


@main.command()
@click.option("-n", "--invoices", type=int, default=12, show_default=True)
@click.option("-c", "--concurrency", type=int, default=2, show_default=True)
@click.option("--timeout", type=float, default=300.0, show_default=True)
def demo(invoices: int, concurrency: int, timeout: float) -> None:
    """Start workers, queue sample invoices and reports with mixed priorities, show progress."""
    from pdftasks.samples import sample_invoice, sample_report
    from pdftasks.settings import get_settings
    from pdftasks.tasks import generate_pdf

    s = get_settings()
    where = "local files in " + str(s.home) if s.is_local else s.effective_broker_url
    click.echo(f"broker: {where}\ntemplates: {s.templates_dir}\noutput: {s.output_dir}")
    log_path = s.home / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdftasks", "worker", "-c", str(concurrency),
             "-l", "WARNING", "-n", f"demo-{os.getpid()}@%h"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        prios = ["urgent", "high", "normal", "low"]
        jobs = []
        for i in range(1, invoices + 1):
            prio = prios[i % 4]
            data = sample_invoice(i, items=60 if i % 6 == 0 else 5)
            jobs.append((prio, data["client_name"], generate_pdf.delay(
                template="invoice.html", data=data,
                output_filename=f"demo_invoice_{i:03d}.pdf", priority=prio)))
        for title, prio in (("Daily Sales Report", "high"), ("Weekly Summary", "normal"),
                            ("Monthly Overview", "low")):
            name = title.lower().replace(" ", "_")
            jobs.append((prio, title, generate_pdf.delay(
                template="report.html", data=sample_report(title),
                output_filename=f"demo_{name}.pdf", priority=prio)))
        click.echo(f"queued {len(jobs)} jobs; worker log: {log_path}")
        deadline = time.monotonic() + timeout
        done: set[str] = set()
        with click.progressbar(length=len(jobs), label="rendering") as bar:
            while len(done) < len(jobs) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise click.ClickException(f"the worker exited; see {log_path}")
                for _, _, res in jobs:
                    if res.id not in done and res.ready():
                        done.add(res.id)
                        bar.update(1)
                time.sleep(0.1)
        failures = 0
        for prio, label, res in jobs:
            if not res.ready():
                failures += 1
                click.secho(f"  {prio:<6} {label:<20} not finished", fg="yellow")
            elif res.successful():
                r = res.result
                click.echo(f"  {prio:<6} {label:<20} {r['pages']} page(s)  {r['path']}")
            else:
                failures += 1
                click.secho(f"  {prio:<6} {label:<20} FAILED: {res.result}", fg="red")
        click.echo(f"PDFs are in {s.output_dir}")
        if failures:
            raise click.ClickException(f"{failures} job(s) did not complete")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        click.echo("worker stopped")
