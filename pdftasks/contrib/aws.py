"""AWS operations: dead letters and setup.

- ``reap_dead_letters()`` records jobs whose messages SQS dead-lettered as FAILED; a worker
  on SQS runs it every minute (``worker_ready``).
- ``setup()``: the queues (each with a dead-letter queue), the DynamoDB table and the S3
  bucket, idempotent (``pdftasks aws-setup``).

The broker and results: ``pdftasks.brokers.sqs``; job records: ``pdftasks.stores.dynamodb``;
PDFs: ``pdftasks.storage.s3``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import logging
import threading
from typing import Any

from botocore.exceptions import ClientError
from celery import signals

from pdftasks.awsclient import _code, client, parse_s3_url
from pdftasks.brokers.sqs import (
    _dead_letter_url,
    predefined_queue_urls,
    queue_urls,
    sqs_queue_name,
)
from pdftasks.models import JobPriority, JobStatus
from pdftasks.settings import Settings
from pdftasks.stores.dynamodb import STATUS_INDEX, TTL_ATTRIBUTE

log = logging.getLogger(__name__)

#: How often a worker on SQS moves dead-lettered jobs to FAILED, in seconds.
DLQ_REAP_INTERVAL_S = 60
#: Receives of one message before SQS moves it to the dead-letter queue (at least).
MIN_MAX_RECEIVE_COUNT = 10
#: How long dead letters are kept by SQS, in seconds (the maximum: 14 days).
DLQ_RETENTION_S = 14 * 86400


# SQS dead letters.


def _message_job_id(body: str) -> str | None:
    """The Celery task id (= job id) of a raw SQS message body written by kombu."""
    text = body
    with contextlib.suppress(binascii.Error, ValueError, UnicodeDecodeError):
        text = base64.b64decode(body, validate=True).decode()
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    headers = payload.get("headers") or {} if isinstance(payload, dict) else {}
    return headers.get("id") or headers.get("task_id")


def reap_dead_letters(app: Any, dry_run: bool = False, max_messages: int = 1000) -> list[str]:
    """Record the jobs whose messages SQS moved to a dead-letter queue as FAILED.

    A message lands there after ``maxReceiveCount`` receives without an acknowledgement:
    the worker kept dying on it, or could not decode it. Its job would otherwise stay
    PENDING or PROCESSING; here it becomes FAILED with an error saying so (and appears in
    ``get_all_jobs(status=FAILED)``, ``pdftasks jobs --status failed``), and the message
    is deleted. ``pdftasks retry`` resubmits such jobs. Returns the job ids.
    """
    from pdftasks.worker.tasks import app_settings, emit, job_store

    s = app_settings(app)
    sqs = client("sqs", s, read_timeout=30)
    store = job_store(app)
    reaped: list[str] = []
    for name, url in queue_urls(s, sqs).items():
        if url is None:
            continue
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
        dlq = _dead_letter_url(sqs, attrs.get("Attributes", {}))
        if not dlq:
            continue
        while len(reaped) < max_messages:
            messages = sqs.receive_message(
                QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                VisibilityTimeout=30, MessageSystemAttributeNames=["ApproximateReceiveCount"]
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                job_id = _message_job_id(message.get("Body", ""))
                if job_id is None:
                    log.warning("dead letter in %s is not a pdftasks job; left there", dlq)
                    continue
                reaped.append(job_id)
                if dry_run:
                    continue
                error = (f"DeadLetterError: the job's message was received too many times "
                         f"without finishing and SQS moved it to the dead-letter queue of "
                         f"{name}")
                if store.transition(job_id, JobStatus.FAILED,
                                    (JobStatus.PENDING, JobStatus.PROCESSING,
                                     JobStatus.RETRYING), error=error,
                                    completed_at=dt.datetime.now(dt.UTC)):
                    emit(app, "failed", job_id, error)
                sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
            if dry_run:
                break
    return reaped


_reaper_stop = threading.Event()


@signals.worker_ready.connect
def _start_reaper(sender: Any = None, **_: Any) -> None:
    """On SQS, a worker's main process reaps dead letters every minute (daemon thread)."""
    from pdftasks.celery_app import is_pdftasks_app
    from pdftasks.worker.tasks import app_settings

    app = getattr(sender, "app", None)
    if not is_pdftasks_app(app) or not app_settings(app).is_sqs:
        return

    def loop() -> None:
        while not _reaper_stop.wait(DLQ_REAP_INTERVAL_S):
            try:
                reap_dead_letters(app)
            except Exception:
                log.exception("could not read the dead-letter queues")

    threading.Thread(target=loop, name="pdftasks-dlq", daemon=True).start()


@signals.worker_shutting_down.connect
def _stop_reaper(**_: Any) -> None:
    _reaper_stop.set()


# Setup: queues with dead-letter queues, the table, the bucket.


def max_receive_count(settings: Settings) -> int:
    """``maxReceiveCount`` of the redrive policy: above pdftasks' own poison-job limit, so
    pdftasks fails a job that keeps killing workers before SQS dead-letters it, with room
    for the deliveries a warm shutdown or a busy worker hands back."""
    return max(MIN_MAX_RECEIVE_COUNT, settings.max_redeliveries + 4)


def ensure_queues(settings: Settings, max_receives: int | None = None) -> dict[str, str]:
    """Create (or update) the four SQS queues, each with a dead-letter queue
    ``<name>-dlq`` and a redrive policy. Returns {Celery queue name: URL}.

    With ``PDFTASKS_SQS_PREDEFINED_QUEUES`` the queues are not created, only checked.
    """
    from pdftasks.celery_app import queue_name

    s = settings
    sqs = client("sqs", s)
    receives = max_receives or max_receive_count(s)
    if predefined_queue_urls(s):
        urls = {k: v for k, v in queue_urls(s, sqs).items() if v}
        for url in urls.values():
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            if int(attrs["VisibilityTimeout"]) <= s.hard_time_limit_s:
                raise ValueError(f"{url}: VisibilityTimeout {attrs['VisibilityTimeout']} s is "
                                 f"not above the hard time limit {s.hard_time_limit_s:g} s")
            if "RedrivePolicy" not in attrs:
                log.warning("%s has no redrive policy (dead-letter queue)", url)
        return urls
    out = {}
    for prio in JobPriority:
        name = queue_name(prio, s.queue_namespace)
        sqs_name = sqs_queue_name(name, s)
        dlq_url = _create_or_update(sqs, f"{sqs_name}-dlq", {
            "MessageRetentionPeriod": str(DLQ_RETENTION_S)})
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        out[name] = _create_or_update(sqs, sqs_name, {
            "VisibilityTimeout": str(s.visibility_timeout_s),
            "ReceiveMessageWaitTimeSeconds": str(s.sqs_wait_time_s),
            "MessageRetentionPeriod": str(DLQ_RETENTION_S),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(receives)})})
    return out


def _create_or_update(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" not in _code(exc) and "QueueDoesNotExist" not in _code(exc):
            raise
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return str(url)


def table_definition(table: str) -> dict[str, Any]:
    """``CreateTable`` arguments: on-demand capacity, the status index."""
    return {
        "TableName": table, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "status_key", "AttributeType": "S"},
            {"AttributeName": "created_ts", "AttributeType": "N"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                      {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [{
            "IndexName": STATUS_INDEX,
            "KeySchema": [{"AttributeName": "status_key", "KeyType": "HASH"},
                          {"AttributeName": "created_ts", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"}}],
    }


def ensure_table(settings: Settings, timeout: float = 300) -> str:
    """Create the DynamoDB table (if missing) and switch on its TTL; return its name."""
    ddb = client("dynamodb", settings)
    table = settings.dynamodb_table
    try:
        ddb.describe_table(TableName=table)
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
        ddb.create_table(**table_definition(table))
        ddb.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": int(timeout / 2)})
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    return table


def ensure_bucket(settings: Settings) -> str | None:
    """Create the bucket of ``PDFTASKS_STORAGE`` (if it is on S3 and missing), private."""
    if not settings.storage.startswith("s3://"):
        return None
    bucket, _ = parse_s3_url(settings.storage)
    s3 = client("s3", settings)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if settings.aws_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.aws_region}
        s3.create_bucket(**kwargs)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True})
    return bucket


def setup(settings: Settings) -> dict[str, Any]:
    """Everything an SQS + DynamoDB (+ S3) deployment of ``settings`` needs, idempotent
    (``pdftasks aws-setup`` passes the environment's).

    Creates what is missing and updates queue attributes (visibility timeout, long
    polling, redrive policy). Needs administrative rights, unlike the workers.
    """
    s = settings
    out: dict[str, Any] = {"table": ensure_table(s), "bucket": ensure_bucket(s)}
    if s.is_sqs:
        out["queues"] = ensure_queues(s)
    return out
