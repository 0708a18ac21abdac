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

from pdftasks.cli.common import (
    ExitCode,
    PdfTasksGroup,
    fail,
    fail_with,
    no_worker_hint,
    use_project_root,
    warn,
    workers_consuming,
)
from pdftasks.errors import PdfTasksError
from pdftasks.models import JobPriority, JobStatus

PRIORITY_CHOICE = click.Choice([p.label for p in JobPriority], case_sensitive=False)

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


def _load_options(options: str | None, options_file: str | None) -> dict[str, Any] | None:
    """``--options`` / ``--options-file``: a JSON object of job options, or None."""
    if options is None and options_file is None:
        return None
    value = _load_data(options, options_file)
    return value or None


def _options_flags(fn: Any) -> Any:
    fn = click.option("--options-file", default=None,
                      help="Job options from a JSON file ('-' = stdin).")(fn)
    return click.option("--options", "options", default=None,
                        help="Job options, a JSON object: split, metadata, pdf_variant, "
                             "einvoice, watermark, encrypt, sign, attachments, merge.")(fn)


def _fail(exc: Exception) -> None:
    fail_with(exc)


@click.group(cls=PdfTasksGroup)
@click.version_option(package_name="pdftasks")
def main() -> None:
    """pdftasks: turn Jinja2 HTML templates + JSON data into PDFs on Celery priority queues.

    Configuration comes from PDFTASKS_* environment variables. With no PDFTASKS_BROKER_URL,
    everything lives in files under PDFTASKS_HOME (default .pdftasks in the project: the
    nearest directory up from here holding .pdftasks/ or templates/).

    Exit status of every command: 0 ok, 1 job failed or not found, 2 bad input,
    3 timeout or no worker. Errors are printed as `error: <Type>: <message>`.
    """
    use_project_root()


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
    ns = s.queue_namespace
    q = ([queue_name(p, ns) for p in queues.split(",")] if queues else queue_names(ns))
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
@click.option("-p", "--priority", type=PRIORITY_CHOICE, default="normal", show_default=True,
              help="Queue: urgent jobs are taken first, then high, normal, low.")
@click.option("--css", "css_file", default=None, help="Extra CSS file from the templates dir.")
@click.option("--wait/--no-wait", default=False, help="Wait for the PDF and print its result.")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait with --wait.")
@_options_flags
def submit(template: str, output_filename: str, data: str | None, data_file: str | None,
           priority: str, css_file: str | None, wait: bool, timeout: float,
           options: str | None, options_file: str | None) -> None:
    """Queue one PDF job and print its id (warns on stderr when no worker consumes its
    queue; with --wait, exit 1 if the job failed and 3 on timeout)."""
    from pdftasks.celery_app import queue_name
    from pdftasks.settings import get_settings

    s = get_settings()
    if s.is_local and not s.templates_dir.is_dir():
        # The worker of this zero-setup home would never find the template: refuse rather
        # than queue a job in a new .pdftasks/ here that no worker reads.
        fail(ExitCode.BAD_INPUT, "TemplateNotFoundError",
             f"no templates directory {s.templates_dir} and no PDFTASKS_BROKER_URL: run "
             "pdftasks in the project directory (where `templates/` is), or set "
             "PDFTASKS_TEMPLATES_DIR / PDFTASKS_BROKER_URL")
    from pdftasks import generate_pdf

    payload = _load_data(data, data_file)
    job_options = _load_options(options, options_file)
    try:
        result = generate_pdf.delay(template=template, data=payload,
                                    output_filename=output_filename, priority=priority,
                                    css_file=css_file, options=job_options)
    except PdfTasksError as exc:
        _fail(exc)
    click.echo(result.id)
    queue = queue_name(priority, s.queue_namespace)
    seen = workers_consuming(queue)
    if seen == 0:
        warn(no_worker_hint(queue))
    if wait:
        from celery.exceptions import TimeoutError as ResultTimeout

        try:
            click.echo(json.dumps(result.get(timeout=timeout), indent=2))
        except ResultTimeout:
            # Unsubscribe now: at interpreter exit the result's __del__ could not.
            result.backend.remove_pending_result(result)
            hint = f"; {no_worker_hint(queue)}" if workers_consuming(queue) == 0 else ""
            fail(ExitCode.TIMEOUT, "TimeoutError",
                 f"job {result.id} did not finish within {timeout:g} s{hint}")
        except Exception as exc:  # the job failed in the worker: its error, exit 1
            fail(ExitCode.FAILED, type(exc).__name__, str(exc))


def _manager() -> Any:
    from pdftasks.client import PDFQueueManager

    return PDFQueueManager()


def job_document(job: Any) -> dict[str, Any]:
    """A job as a JSON-ready status document."""
    return {
        "job_id": job.job_id, "status": job.status.value, "priority": job.priority.label,
        "template": job.template, "output_filename": job.output_filename,
        "created_at": job.created_at, "started_at": job.started_at,
        "completed_at": job.completed_at, "duration_s": job.duration_s,
        "result_path": job.result_path, "pages": job.pages, "error": job.error,
        "retry_count": job.retry_count, "max_retries": job.max_retries,
        "metadata": job.metadata,
        **({"parts_total": job.parts_total, "parts_done": job.parts_done}
           if getattr(job, "parts_total", None) else {}),
    }


def _progress_bar(done: int, total: int, width: int = 24) -> str:
    """``[#########---------------]  3/8 parts``: a split job's parts rendered."""
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done:>{len(str(total))}}/{total} parts"


def _get_job(manager: Any, job_id: str) -> Any:
    job = manager.get_job(job_id)
    if job is None:
        fail(ExitCode.FAILED, "JobNotFoundError", f"no job {job_id}")
    return job


@main.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Print a job's status document as JSON (exit 1 if the id is unknown)."""
    job = _get_job(_manager(), job_id)
    click.echo(json.dumps(job_document(job), indent=2, default=str))


@main.command()
@click.option("-s", "--status", "status_", type=click.Choice([s.value for s in JobStatus]),
              default=None, help="Only jobs with this status.")
@click.option("-n", "--limit", type=int, default=50, show_default=True,
              help="Most jobs to list.")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array of status documents (as `status` prints them).")
def jobs(status_: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first; failed jobs with their errors and an error summary."""
    from collections import Counter

    manager = _manager()
    found = manager.backend.get_all_jobs(status=JobStatus(status_) if status_ else None,
                                         limit=limit)
    if as_json:
        click.echo(json.dumps([job_document(job) for job in found], indent=2, default=str))
        return
    for job in found:
        when = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
        line = (f"{job.job_id}  {job.status.value:<10} {job.priority.label:<6} {when}  "
                f"{job.template} -> {job.output_filename}")
        if job.error:
            line += f"\n    error: {job.error}  (retries {job.retry_count}/{job.max_retries})"
        click.echo(line)
    errors = Counter((j.error or "").split(":", 1)[0] for j in found if j.error)
    if errors:
        click.echo("\nerrors by type: " + ", ".join(f"{k} x{v}" for k, v in
                                                     errors.most_common()))
    click.echo(f"{len(found)} job(s)")


@main.command("dead-letters")
@click.option("-n", "--limit", type=int, default=20, show_default=True,
              help="Most messages to list.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, one object per message.")
def dead_letters(limit: int, as_json: bool) -> None:
    """List messages the workers refused without a job to fail (newest first): unknown
    tasks, broken or undecodable messages, with the reason and excerpts."""
    found = _manager().store.dead_letters(limit)
    if as_json:
        click.echo(json.dumps(list(found), indent=2, default=str))
        return
    for entry in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.get("ts") or 0))
        click.echo(f"{when}  {entry.get('queue') or '?'}  {entry.get('task') or '-'}  "
                   f"{entry.get('message_id') or '-'}\n    reason: {entry.get('reason')}")
    click.echo(f"{len(found)} dead letter(s)")


def _stats_line(stats: dict[str, Any]) -> str:
    prio = " ".join(f"{k}={v}" for k, v in stats["pending_by_priority"].items())
    return (f"[{time.strftime('%H:%M:%S')}] pending {stats['pending']:4d} ({prio}) | "
            f"processing {stats['processing']:3d} | retrying {stats['retrying']:3d} | "
            f"completed {stats['completed']:5d} | failed {stats['failed']:4d} | "
            f"cancelled {stats['cancelled']:4d} | workers {stats['workers']}")


@main.command()
@click.option("-i", "--interval", type=float, default=2.0, show_default=True,
              help="Seconds between two lines.")
@click.option("--once", is_flag=True, help="Print one line (or JSON with --json) and exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def stats(interval: float, once: bool, as_json: bool) -> None:
    """Live view of the queue: counts per status, pending per priority and the worker
    processes answering on the broker (Ctrl-C stops)."""
    manager = _manager()
    while True:
        current = manager.get_queue_stats()
        # `running` is about workers a PDFQueueManager started itself: never this command.
        current.pop("running", None)
        if as_json:
            click.echo(json.dumps(current, default=str))
        else:
            click.echo(_stats_line(current))
        if once:
            return
        time.sleep(interval)


@main.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a pending or retrying job (exit 1 if it can no longer be cancelled)."""
    manager = _manager()
    job = _get_job(manager, job_id)
    if manager.cancel_job(job_id):
        click.echo(f"cancelled {job_id}")
    else:
        fail(ExitCode.FAILED, "JobNotCancellable", f"cannot cancel {job_id}: it is "
             f"{job.status.value}")


@main.command()
@click.argument("job_id", required=False)
@click.option("--all-failed", is_flag=True, help="Resubmit every failed job.")
def retry(job_id: str | None, all_failed: bool) -> None:
    """Resubmit a failed (or cancelled) job under the same id, or all failed jobs."""
    manager = _manager()
    if all_failed == bool(job_id):
        raise click.UsageError("give a JOB_ID or --all-failed")
    if job_id:
        job = _get_job(manager, job_id)
        try:
            retried = manager.retry_job(job_id)
        except PdfTasksError as exc:  # e.g. its secret options were not kept
            fail_with(exc)
        if not retried:
            fail(ExitCode.FAILED, "JobNotRetryable",
                 f"cannot retry {job_id}: it is {job.status.value} (only failed or "
                 "cancelled jobs are resubmitted)")
        click.echo(f"resubmitted {job_id}")
        return
    ids = [j.job_id for j in manager.backend.get_all_jobs(status=JobStatus.FAILED)]
    done, refused = [], []
    for i in ids:
        try:
            if manager.retry_job(i):
                done.append(i)
        except PdfTasksError as exc:
            refused.append(i)
            warn(f"not resubmitted {i}: {type(exc).__name__}: {exc}")
    click.echo(f"resubmitted {len(done)} job(s)"
               + (f", {len(refused)} could not be" if refused else ""))


@main.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Seconds (default: forever).")
def wait(job_id: str, timeout: float | None) -> None:
    """Wait for a job with a progress indicator; print its result (exit 1 if it failed,
    3 on timeout). On a terminal a spinner; otherwise one line per status change."""
    manager = _manager()
    _get_job(manager, job_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    spinner = "|/-\\"
    tty = sys.stderr.isatty()
    i, last = 0, None
    while True:
        job = manager.get_job(job_id)
        if job is None or job.status.is_final:
            break
        if deadline is not None and time.monotonic() > deadline:
            if tty:
                click.echo(err=True)
            from pdftasks.celery_app import queue_name

            queue = queue_name(job.priority, manager.settings.queue_namespace)
            hint = (f"; {no_worker_hint(queue)}"
                    if job.status is JobStatus.PENDING and workers_consuming(queue) == 0
                    else "")
            fail(ExitCode.TIMEOUT, "TimeoutError",
                 f"job {job_id} is still {job.status.value} after {timeout:g} s{hint}")
        parts = f" {_progress_bar(job.parts_done, job.parts_total)}" if job.parts_total else ""
        if tty:
            click.echo(f"\r{spinner[i % 4]} {job.status.value:<10} {i * 0.2:5.1f}s{parts}",
                       nl=False, err=True)
        elif (job.status, parts) != last:
            click.echo(f"{job.status.value} ({i * 0.2:.1f} s){parts}", err=True)
        last = (job.status, parts)
        i += 1
        time.sleep(0.2)
    if tty:
        click.echo("\r", nl=False, err=True)
    click.echo(json.dumps(job_document(job), indent=2, default=str))
    if job is None or job.status is not JobStatus.COMPLETED:
        sys.exit(1)


@main.command()
@click.argument("template")
@click.option("-o", "--output", "output_filename", required=True, help="Output file name (.pdf).")
@click.option("-d", "--data", default=None, help="Inline JSON object.")
@click.option("-f", "--data-file", default=None, help="JSON file ('-' = stdin).")
@click.option("--css", "css_file", default=None, help="Extra CSS file from the templates dir.")
@_options_flags
def render(template: str, output_filename: str, data: str | None, data_file: str | None,
           css_file: str | None, options: str | None, options_file: str | None) -> None:
    """Render one PDF now, without a queue (for template authors).

    The same sandbox, URL rules and time/memory limits as a worker apply.
    """
    from pdftasks.options import parse_options
    from pdftasks.render import PDFService, PDFServiceConfig, apply_memory_limit, time_limit
    from pdftasks.settings import get_settings

    s = get_settings()
    payload = _load_data(data, data_file)
    raw_options = _load_options(options, options_file)
    apply_memory_limit(s.render_memory_limit_mb)
    try:
        job_options = parse_options(raw_options)
        with time_limit(s.soft_time_limit_s):
            # One document: no stylesheet cache (and no WeasyPrint hook) to set up.
            result = PDFService(PDFServiceConfig.from_settings(s)).generate_pdf(
                template, payload, output_filename, css_file, options=job_options)
    except PdfTasksError as exc:
        _fail(exc)
    click.echo(json.dumps(result.as_dict(), indent=2))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def sample_data_for(template: Path) -> Path | None:
    """A template's sample data: ``sample_<name>.json`` or ``<name>.json`` next to it."""
    for candidate in (template.with_name(f"sample_{template.stem}.json"),
                      template.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON array of {template, sample_data}.")
def templates(as_json: bool) -> None:
    """List the templates (PDFTASKS_TEMPLATES_DIR), each with its sample data and a command
    that renders it."""
    from pdftasks.settings import get_settings

    directory = get_settings().templates_dir
    if not directory.is_dir():
        fail(ExitCode.BAD_INPUT, "TemplateNotFoundError",
             f"no templates directory {directory}: run pdftasks in the project directory or "
             "set PDFTASKS_TEMPLATES_DIR")
    found = [(path.relative_to(directory).as_posix(), sample_data_for(path))
             for path in sorted(directory.rglob("*.html"))]
    if as_json:
        click.echo(json.dumps([{"template": name, "sample_data": sample and str(sample)}
                               for name, sample in found], indent=2))
        return
    click.echo(f"templates in {_shown(directory)}:")
    for name, sample in found:
        if sample is None:
            click.echo(f"  {name:<24} (no sample data)")
            continue
        output = Path(name).with_suffix(".pdf").name
        click.echo(f"  {name:<24} sample data: {_shown(sample)}\n"
                   f"      pdftasks submit {name} -f {_shown(sample)} -o {output} --wait")


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script of pdftasks for SHELL.

    Load it from your shell's start-up file, e.g. in ~/.bashrc:
    eval "$(pdftasks completion bash)"
    """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    assert completer is not None  # click ships bash, zsh and fish
    click.echo(completer(main, {}, "pdftasks", "_PDFTASKS_COMPLETE").source())


def sample_templates_dir() -> Path | None:
    """The sample templates shipped in the package (``pdftasks.sample_templates``: the
    repository's templates/); in a source checkout, templates/ next to the package."""
    import importlib.util

    spec = importlib.util.find_spec("pdftasks.sample_templates")
    for location in (spec and spec.submodule_search_locations) or []:
        if Path(location).is_dir():
            return Path(location)
    checkout = Path(__file__).resolve().parents[2] / "templates"
    return checkout if (checkout / "invoice.html").is_file() else None


@main.command()
@click.option("-n", "--invoices", type=int, default=12, show_default=True,
              help="Sample invoices to queue (3 reports are added).")
@click.option("-c", "--concurrency", type=int, default=2, show_default=True,
              help="Render processes of the demo's one worker.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for every PDF.")
def demo(invoices: int, concurrency: int, timeout: float) -> None:
    """Start workers, queue sample invoices and reports with mixed priorities, show progress."""
    from pdftasks import generate_pdf
    from pdftasks.samples import sample_invoice, sample_report
    from pdftasks.settings import get_settings, redact_url

    s = get_settings()
    where = "local files in " + str(s.home) if s.is_local else redact_url(s.effective_broker_url)
    env, templates = dict(os.environ), str(s.templates_dir)
    samples = sample_templates_dir()
    if not s.templates_dir.is_dir() and "templates_dir" not in s.model_fields_set and samples:
        # No ./templates and no PDFTASKS_TEMPLATES_DIR: the worker renders the packaged samples.
        env["PDFTASKS_TEMPLATES_DIR"] = str(samples)
        templates = f"{samples} (the packaged samples: there is no {s.templates_dir})"
    click.echo(f"broker: {where}\ntemplates: {templates}\noutput: {s.output_dir}")
    log_path = s.home / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdftasks", "worker", "-c", str(concurrency),
             "-l", "WARNING", "-n", f"demo-{os.getpid()}@%h"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
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
        where = f"{s.storage}/" if s.storage else f"{s.output_dir}{os.sep}"
        click.echo(f"PDFs are in {where}{s.queue_namespace}/_/<job id>/")
        if failures:
            raise click.ClickException(f"{failures} job(s) did not complete")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        click.echo("worker stopped")


def _add_commands(*modules: str) -> None:
    """Commands that live next to their feature (each module lists them in COMMANDS)."""
    import importlib

    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        for command in module.COMMANDS:
            main.add_command(command)


_add_commands("pdftasks.cli.beat", "pdftasks.cli.api", "pdftasks.cli.ops",
              "pdftasks.cli.aws")
