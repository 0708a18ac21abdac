"""``pdftasks api``: serve the HTTP API with uvicorn, and manage its keys."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="API processes (metrics are aggregated across them).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="uvicorn's log level.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="Log one line per request.")
@click.option("--timeout-keep-alive", type=click.IntRange(1, 3600), default=5,
              show_default=True,
              help="Seconds an idle keep-alive connection stays open (above a load "
                   "balancer's idle timeout).")
@click.option("--hash-key", metavar="KEY",
              help="Print the SHA-256 hash of KEY ('-' reads it from stdin) for "
                   "PDFTASKS_API_KEYS, and exit.")
@click.option("--new-key", metavar="TENANT",
              help="Make a random key for TENANT; print it and its PDFTASKS_API_KEYS entry, "
                   "and exit.")
@click.option("--webhook-secret-for", metavar="TENANT",
              help="Print TENANT's webhook signing secret (derived from "
                   "PDFTASKS_WEBHOOK_SECRET), and exit.")
def api(host: str, port: int, workers: int, log_level: str, access_log: bool,
        timeout_keep_alive: int, hash_key: str | None, new_key: str | None,
        webhook_secret_for: str | None) -> None:
    """Serve the HTTP API (FastAPI on uvicorn; app object pdftasks.api:app).

    Needs Redis (PDFTASKS_BROKER_URL=redis://...) and API keys in PDFTASKS_API_KEYS as
    tenant:<sha256 hex of the key> pairs. Clients send 'Authorization: Bearer <key>'.
    """
    from pdftasks.api import hash_key as digest
    from pdftasks.api import new_key as make_key
    from pdftasks.api import parse_api_keys
    from pdftasks.settings import get_settings

    if hash_key is not None:
        key = sys.stdin.readline().strip() if hash_key == "-" else hash_key
        if not key:
            raise click.UsageError("empty key")
        click.echo(digest(key))
        return
    if new_key is not None:
        try:
            parse_api_keys(f"{new_key}:{'0' * 64}")  # checks the tenant name
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        key = make_key()
        click.echo(f"key (give it to {new_key}; it is not stored): {key}")
        click.echo(f"PDFTASKS_API_KEYS entry: {new_key}:{digest(key)}")
        return
    s = get_settings()
    if webhook_secret_for is not None:
        from pdftasks.contrib.webhooks import tenant_secret

        if not s.webhook_secret:
            raise click.UsageError("PDFTASKS_WEBHOOK_SECRET is not set")
        click.echo(tenant_secret(s.webhook_secret.get_secret_value(), webhook_secret_for))
        return
    try:
        parse_api_keys(s.api_keys.get_secret_value())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if s.is_local or not s.effective_broker_url.startswith(("redis://", "rediss://")):
        raise click.UsageError("the HTTP API needs Redis: set PDFTASKS_BROKER_URL=redis://…")
    import uvicorn

    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="pdftasks-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("pdftasks.api:app", host=host, port=port, workers=workers,
                    log_level=log_level, access_log=access_log, proxy_headers=False,
                    timeout_keep_alive=timeout_keep_alive)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


COMMANDS = [api]
