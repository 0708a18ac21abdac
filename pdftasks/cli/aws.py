"""``pdftasks aws-setup`` and ``pdftasks aws-dead-letters``."""

from __future__ import annotations

import json

import click


@click.command("aws-setup")
@click.option("--json", "as_json", is_flag=True, help="Print what exists as JSON.")
def aws_setup(as_json: bool) -> None:
    """Create (or update) what an AWS deployment needs, from the PDFTASKS_* settings.

    The DynamoDB table (on-demand, status index, TTL), the S3 bucket of PDFTASKS_STORAGE
    (private), and with PDFTASKS_BROKER_URL=sqs:// the four SQS queues, each with its
    dead-letter queue and redrive policy. Idempotent; needs administrative rights.
    """
    from pdftasks.contrib.aws import setup
    from pdftasks.settings import get_settings

    s = get_settings()
    done = setup(s)
    if as_json:
        click.echo(json.dumps(done, indent=2))
        return
    click.echo(f"DynamoDB table: {done['table']} (index status-index, TTL expires_at)")
    click.echo(f"S3 bucket: {done['bucket'] or '(PDFTASKS_STORAGE is local)'}")
    for name, url in (done.get("queues") or {}).items():
        click.echo(f"SQS queue {name}: {url} (+ dead-letter queue)")
    if not s.is_sqs:
        click.echo("PDFTASKS_BROKER_URL is not sqs://: no queues created")


@click.command("aws-dead-letters")
@click.option("--dry-run", is_flag=True, help="Only list the jobs found.")
def aws_dead_letters(dry_run: bool) -> None:
    """Record jobs whose SQS messages were dead-lettered as FAILED (workers do it each
    minute; this does it now)."""
    from pdftasks.celery_app import app
    from pdftasks.contrib.aws import reap_dead_letters

    ids = reap_dead_letters(app, dry_run=dry_run)
    for job_id in ids:
        click.echo(job_id)
    click.echo(f"{'found' if dry_run else 'failed'} {len(ids)} dead-lettered job(s)")


COMMANDS = [aws_setup, aws_dead_letters]
