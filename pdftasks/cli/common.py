"""What every ``pdftasks`` command shares: exit codes, the one error format, warnings, the
worker check and the zero-setup project directory."""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from pdftasks.errors import BrokerUnavailableError, InvalidJobError


class ExitCode(enum.IntEnum):
    """The exit status of every ``pdftasks`` command (documented in docs/reference/cli.md)."""

    #: Done: the job was queued, rendered, cancelled, or the check passed.
    OK = 0
    #: The job failed, was not found, cannot be cancelled; or a health check failed.
    FAILED = 1
    #: Bad input: usage, options, JSON data, template, priority, output name.
    BAD_INPUT = 2
    #: Timed out, or nothing to do the work: no worker seen, broker unreachable.
    TIMEOUT = 3


#: Settings that decide where the zero-setup default keeps its state, and the directory
#: name each has inside the project (the defaults are relative to the working directory).
PROJECT_DIRS = {"PDFTASKS_HOME": ".pdftasks", "PDFTASKS_TEMPLATES_DIR": "templates",
                "PDFTASKS_OUTPUT_DIR": "output"}


def fail(code: ExitCode, kind: str, message: str) -> NoReturn:
    """Print ``error: <kind>: <message>`` on stderr and exit with ``code``."""
    click.secho(f"error: {kind}: {message}", fg="red", err=True)
    sys.exit(int(code))


def fail_with(exc: BaseException) -> NoReturn:
    """``fail`` for an exception, with the exit code its type calls for."""
    fail(exit_code_for(exc), type(exc).__name__, str(exc) or repr(exc))


def warn(message: str) -> None:
    """Print ``warning: <message>`` on stderr."""
    click.secho(f"warning: {message}", fg="yellow", err=True)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code for an exception: bad input 2, broker down or timeout 3, else 1."""
    if isinstance(exc, InvalidJobError | click.UsageError | ValueError):
        return ExitCode.BAD_INPUT
    if isinstance(exc, BrokerUnavailableError | TimeoutError | ConnectionError):
        return ExitCode.TIMEOUT
    return ExitCode.FAILED


class PdfTasksGroup(click.Group):
    """click's group, with click's own errors (usage, bad option values) printed in the one
    ``error: <Type>: <message>`` format and exit code 2, like every other bad input."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
                # `pdftasks` alone (click >= 8.2 raises this): the help is the answer.
                click.echo(exc.ctx.get_help())
                sys.exit(int(ExitCode.OK))
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            fail(ExitCode.BAD_INPUT, type(exc).__name__, exc.format_message() + hint)
        except click.ClickException as exc:
            code = exc.exit_code if exc.exit_code in set(ExitCode) else ExitCode.FAILED
            fail(ExitCode(code), type(exc).__name__, exc.format_message())
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest directory, from ``start`` (default: the working directory) up, holding
    the zero-setup state (``.pdftasks/``) or a ``templates/`` directory."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / ".pdftasks").is_dir() or (directory / "templates").is_dir():
            return directory
    return None


def use_project_root() -> Path | None:
    """Zero-setup default only (no ``PDFTASKS_BROKER_URL``): run every command as if from
    the project's root directory, so a command started in a subdirectory uses the same
    queue, templates and output as the worker started at the root. Settings given in the
    environment win. Returns the root used, or None."""
    if os.environ.get("PDFTASKS_BROKER_URL"):
        return None
    root = find_project_root()
    if root is None or root == Path.cwd().resolve():
        return root
    for variable, name in PROJECT_DIRS.items():
        os.environ.setdefault(variable, str(root / name))
    return root


def workers_consuming(queue: str, timeout: float = 1.0) -> int | None:
    """How many workers were seen consuming ``queue``: remote-control replies (Redis and the
    zero-setup default), or a fresh heartbeat file saying the worker consumes. None when
    this broker cannot tell (SQS has no remote control)."""
    from pdftasks.celery_app import app
    from pdftasks.contrib.monitoring import HEARTBEAT_LIVENESS_MAX_AGE_S, read_heartbeat

    s = app.pdftasks_settings
    if s.heartbeat_file is not None:
        try:
            age, document = read_heartbeat(s.heartbeat_file)
        except (OSError, ValueError):
            pass
        else:
            if age <= HEARTBEAT_LIVENESS_MAX_AGE_S and document.get("consuming"):
                return 1
    if s.is_sqs:
        return None
    def consuming(limit: int | None) -> int:
        replies = app.control.inspect(timeout=timeout, limit=limit).active_queues() or {}
        return sum(1 for queues in replies.values()
                   if any(q.get("name") == queue for q in queues or []))

    try:
        # The first reply ends the wait when it consumes the queue (the usual case: every
        # worker consumes every priority); only then is the whole reply window waited out.
        return consuming(1) or consuming(None)
    except Exception:
        return None


def no_worker_hint(queue: str) -> str:
    """What to do when no worker consumes ``queue``."""
    return (f"no worker is consuming {queue}: the job waits until one starts. Start one "
            "with `pdftasks worker` in the project directory (another terminal).")
