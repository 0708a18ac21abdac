"""``pdftasks flower``, ``pdftasks metrics`` and ``pdftasks heartbeat``: operating pdftasks."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from pdftasks.cli.common import ExitCode, fail, warn

#: Flower's port when none is given.
FLOWER_PORT = 5555


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        fail(ExitCode.BAD_INPUT, "ModuleNotFoundError",
             f"{module} is not installed: pip install 'pdftasks[ops]'")


def _check_basic_auth(value: str) -> None:
    for pair in value.split(","):
        user, sep, password = pair.partition(":")
        if not (user and sep and password):
            raise click.UsageError(
                "PDFTASKS_FLOWER_BASIC_AUTH must be user:password (several separated by ',')")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=FLOWER_PORT, show_default=True,
              help="Flower's TCP port.")
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Start without authentication (local development only).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, address: str, insecure_no_auth: bool,
           flower_args: tuple[str, ...]) -> None:
    """Start Flower (web monitor) for the configured broker, with basic auth.

    The credentials come from PDFTASKS_FLOWER_BASIC_AUTH (user:password); without them
    Flower is not started unless --insecure-no-auth is given. Extra arguments go to Flower
    (e.g. --url_prefix=flower, --max_tasks=50000).
    """
    from pdftasks.settings import get_settings

    _require("flower")
    s = get_settings()
    # Flower reads FLOWER_* variables too: only our setting decides about authentication.
    for name in ("FLOWER_BASIC_AUTH", "FLOWER_AUTH", "FLOWER_UNAUTHENTICATED_API"):
        os.environ.pop(name, None)
    if s.flower_basic_auth:
        _check_basic_auth(s.flower_basic_auth.get_secret_value())
        # In the environment rather than on the command line, where `ps` would show it.
        os.environ["FLOWER_BASIC_AUTH"] = s.flower_basic_auth.get_secret_value()
    elif insecure_no_auth:
        warn(f"Flower runs WITHOUT authentication: anyone who reaches port {port} can see "
             "jobs and control workers")
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    else:
        fail(ExitCode.BAD_INPUT, "UsageError",
             "PDFTASKS_FLOWER_BASIC_AUTH is not set. Set it to user:password, or pass "
             "--insecure-no-auth for a local, unauthenticated Flower.")
    if s.is_local:
        warn("no PDFTASKS_BROKER_URL: Flower cannot show queue lengths or control workers "
             "on the local file broker")

    from pdftasks.celery_app import app

    app.start(argv=["flower", f"--port={port}", f"--address={address}", *flower_args])


@click.command()
@click.option("--port", type=int, default=None,
              help="Port to serve /metrics on (default PDFTASKS_METRICS_PORT, 9808).")
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
def metrics(port: int | None, address: str) -> None:
    """Serve Prometheus metrics: queue depth per priority, jobs per status and priority,
    finished jobs, retries and the render duration histogram (Ctrl-C or SIGTERM stops)."""
    _require("prometheus_client")
    from prometheus_client import start_http_server

    from pdftasks.celery_app import app
    from pdftasks.contrib.monitoring import configure_logging, log, metrics_registry

    s = app.pdftasks_settings  # read once, by the default app
    configure_logging(s)
    port = port or s.metrics_port
    server, thread = start_http_server(port, addr=address, registry=metrics_registry(app))
    log.info("serving metrics on http://%s:%d/metrics", address, port)
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)


@click.command()
@click.option("--file", "path", type=click.Path(path_type=Path), default=None,
              help="Heartbeat file (default PDFTASKS_HEARTBEAT_FILE).")
@click.option("--max-age", type=float, default=None,
              help="Seconds (default: 60, or 30 with --ready).")
@click.option("--ready", is_flag=True, help="Also require the worker to be consuming.")
def heartbeat(path: Path | None, max_age: float | None, ready: bool) -> None:
    """Check a worker's heartbeat file; print it; exit 1 if stale (or not consuming)."""
    from pdftasks.contrib.monitoring import (
        HEARTBEAT_LIVENESS_MAX_AGE_S,
        HEARTBEAT_READINESS_MAX_AGE_S,
        read_heartbeat,
    )
    from pdftasks.settings import get_settings

    path = path or get_settings().heartbeat_file
    if path is None:
        raise click.UsageError("no heartbeat file: set PDFTASKS_HEARTBEAT_FILE or pass --file")
    limit = max_age if max_age is not None else (
        HEARTBEAT_READINESS_MAX_AGE_S if ready else HEARTBEAT_LIVENESS_MAX_AGE_S)
    try:
        age, document = read_heartbeat(path)
    except OSError as exc:
        fail(ExitCode.FAILED, "NoHeartbeat", f"no heartbeat: {exc}")
    click.echo(json.dumps({"file": str(path), "age_s": round(age, 3), **document}))
    if age > limit:
        fail(ExitCode.FAILED, "StaleHeartbeat", f"stale: {age:.1f} s old (limit {limit:g} s)")
    if ready and not document.get("consuming"):
        fail(ExitCode.FAILED, "NotConsuming", "the worker is alive but not consuming")


COMMANDS = [flower, metrics, heartbeat]
