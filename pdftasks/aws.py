"""AWS deployment: SQS as broker, DynamoDB for job records and results, S3 for PDFs.

Chosen only through settings (``PDFTASKS_BROKER_URL=sqs://``, ``PDFTASKS_STORAGE=s3://…``);
nothing else in pdftasks changes. The pieces:

- ``Transport``/``Channel``: kombu's SQS transport with the endpoint taken from the settings
  and *priority polling*: a worker with a free process asks the queues one after the other,
  most urgent first (short polls), and long-polls all of them only when all are empty.
  kombu's own loop polls each queue independently, so a free process takes whichever
  queue answers first.
- ``DynamoDBJobStore``: the job store on one DynamoDB table (records, a status index,
  counters, claims, lifecycle events), with a TTL attribute for retention.
- ``DynamoDBResultBackend``: Celery results as items of the same table, with the same TTL.
- ``S3Storage``: PDFs as S3 objects, presigned download URLs, cleanup by age.
- ``setup()``: the queues (each with a dead-letter queue), the table and the bucket;
  ``reap_dead_letters()`` records jobs whose messages were dead-lettered as FAILED.

The table (``PDFTASKS_DYNAMODB_TABLE``, default ``pdftasks``) has a string partition key
``pk`` and sort key ``sk``; every item carries its kind in ``pk``:

==============================  ========  ==================================================
``pk``                          ``sk``    what
==============================  ========  ==================================================
``{ns}#job#{job_id}``           ``job``   one job record; ``status_key`` = ``{ns}#{status}``
                                          and ``created_ts`` feed the ``status-index`` GSI
``{ns}#counts#{day}#{shard}``   ``n``     counters ``{status}_{priority}`` of the jobs
                                          created that day (UTC), split over shards
``{ns}#claim#{key}``            ``claim`` a claimed beat slot (``claim()``)
``{ns}#events``                 ``{ts}…`` a lifecycle event, kept one hour
``result#{celery key}``         ``r``     a Celery result
==============================  ========  ==================================================

Every item has ``expires_at`` (epoch seconds), the table's TTL attribute. DynamoDB deletes
expired items within days, so reads also skip items whose ``expires_at`` has passed.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from celery import signals
from celery.backends.base import KeyValueStoreBackend
from kombu.transport.SQS import CHARS_REPLACE_TABLE
from kombu.transport.SQS import Transport as _SQSTransport
from vine import promise

from pdftasks.compat import kombu as compat_kombu
from pdftasks.errors import BrokerUnavailableError, InvalidDataError, StorageError
from pdftasks.models import JobPriority, JobStatus
from pdftasks.settings import JOB_RETENTION_S, Settings, get_settings
from pdftasks.storage import check_key
from pdftasks.stores import Job, JobStore, _encode

log = logging.getLogger(__name__)

#: Name of the table's global secondary index on (status_key, created_ts).
STATUS_INDEX = "status-index"
#: The table's TTL attribute (epoch seconds).
TTL_ATTRIBUTE = "expires_at"
#: Counter items per day: transitions of different jobs rarely touch the same item, so
#: concurrent transactions seldom conflict.
COUNTER_SHARDS = 8
#: How long lifecycle events are kept, in seconds (listeners read them within seconds).
EVENT_TTL_S = 3600
#: Seconds between event polls of a listening manager.
EVENT_POLL_S = 0.25
#: Largest job record accepted, in bytes: a DynamoDB item holds at most 400 KB.
MAX_RECORD_BYTES = 350_000
#: Default lifetime of a presigned download URL, in seconds.
PRESIGN_EXPIRES_S = 3600
#: How often a worker on SQS moves dead-lettered jobs to FAILED, in seconds.
DLQ_REAP_INTERVAL_S = 60
#: Receives of one message before SQS moves it to the dead-letter queue (at least).
MIN_MAX_RECEIVE_COUNT = 10
#: How long dead letters are kept by SQS, in seconds (the maximum: 14 days).
DLQ_RETENTION_S = 14 * 86400
_FINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
_RANK = {p.label: int(p) for p in JobPriority}
_RETRY_CODES = {"ProvisionedThroughputExceededException", "ThrottlingException",
                "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable",
                "TransactionInProgressException"}


# Clients and names.


def _config(read_timeout: float = 10) -> Config:
    return Config(connect_timeout=5, read_timeout=read_timeout,
                  retries={"mode": "standard", "max_attempts": 4})


def client(service: str, settings: Settings | None = None, **config: Any) -> Any:
    """A boto3 client for ``service`` with the region and endpoint of ``settings``.

    Credentials come from boto3's usual chain (environment, profile, instance role).
    """
    s = settings or get_settings()
    kwargs: dict[str, Any] = {"region_name": s.aws_region, "config": _config(**config)}
    if s.aws_endpoint_url:
        kwargs["endpoint_url"] = s.aws_endpoint_url
    if service == "s3":
        kwargs["config"] = kwargs["config"].merge(Config(signature_version="s3v4"))
    return boto3.session.Session().client(service, **kwargs)


def sqs_queue_name(queue: str, settings: Settings) -> str:
    """The SQS name of a Celery queue (kombu's rule: prefix + name, ``.`` → ``-``)."""
    return (settings.sqs_queue_prefix + queue).translate(CHARS_REPLACE_TABLE)


def predefined_queue_urls(settings: Settings) -> dict[str, str]:
    """``PDFTASKS_SQS_PREDEFINED_QUEUES`` as {priority label: queue URL} (may be empty).

    Accepted forms: ``urgent=URL,high=URL,…``, a JSON object with the same keys, or one
    URL ending in ``-{namespace}`` style base: ``https://…/pdf`` names ``…/pdf-urgent`` etc.
    """
    raw = (settings.sqs_predefined_queues or "").strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        pairs = dict(json.loads(raw))
    elif "=" in raw:
        pairs = dict(item.strip().split("=", 1) for item in raw.split(",") if item.strip())
    else:
        pairs = {p.label: f"{raw.rstrip('/')}-{p.label}" for p in JobPriority}
    out = {JobPriority.parse(k.strip()).label: str(v).strip() for k, v in pairs.items()}
    missing = [p.label for p in JobPriority if p.label not in out]
    if missing:
        raise ValueError(f"PDFTASKS_SQS_PREDEFINED_QUEUES lacks {', '.join(missing)}")
    return out


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's ``broker_transport_options`` for SQS (see ``pdftasks.celery_app``)."""
    s = settings
    options: dict[str, Any] = {
        "region": s.aws_region,
        "queue_name_prefix": s.sqs_queue_prefix,
        # SQS hides a received message this long; it must outlast the hard time limit, or
        # a job still rendering is delivered to a second worker.
        "visibility_timeout": s.visibility_timeout_s,
        "wait_time_seconds": s.sqs_wait_time_s,
        "polling_interval": s.sqs_polling_interval_s,
        "priority_polling": s.sqs_priority_polling,
    }
    if s.aws_endpoint_url:
        options["endpoint_url"] = s.aws_endpoint_url
    urls = predefined_queue_urls(s)
    if urls:
        from pdftasks.celery_app import queue_name

        options["predefined_queues"] = {
            sqs_queue_name(queue_name(label, s.queue_namespace), s): {"url": url}
            for label, url in urls.items()}
    return options


# The broker: kombu's SQS transport with priority polling.


class Channel(compat_kombu.SQSChannel):
    """kombu's SQS channel, polling the most urgent queue first.

    kombu runs one polling loop per queue: when a worker process becomes free, whichever
    loop fires next takes a message, so a high job waits behind low ones about as often
    as not. Here:

    - The most urgent queue the worker serves is long-polled all the time, also while
      every process is busy; a job from it is taken at once and starts on the next
      process that becomes free, ahead of anything else.
    - A free process starts a *sweep* over the other queues: a short poll (no wait) of
      each in priority order, restarting at the top after every message taken.
    - When every queue is empty, all of them are long-polled (``wait_time_seconds``);
      the first message to arrive starts a new sweep. A message from a lower queue that
      arrives when no process is free (two long polls answering at once) is made visible
      again at once instead of waiting in this worker.

    With ``priority_polling`` off (transport option), kombu's own loop runs unchanged; also,
    with a warning, on a kombu outside the versions this was written for (it uses kombu's
    internals through ``pdftasks.compat.kombu.SQSChannel``: ``SQS_PRIORITY_POLLING``).
    """

    #: Seconds between checks for a free process while all are busy (no SQS request).
    busy_recheck_s = 0.25
    #: Seconds between checks that the polling chain is alive.
    watchdog_s = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sweeping = False
        self._recheck_pending = False
        self._long_polls: set[str] = set()
        self._progress = time.monotonic()
        self._watchdog: Any = None
        super().__init__(*args, **kwargs)

    @property
    def endpoint_url(self) -> str | None:  # type: ignore[override]
        configured = self.transport_options.get("endpoint_url")
        if configured:
            return str(configured)
        if self.conninfo.hostname is not None:
            scheme = "https" if self.is_secure else "http"
            port = f":{self.conninfo.port}" if self.conninfo.port is not None else ""
            return f"{scheme}://{self.conninfo.hostname}{port}"
        return None

    @property
    def priority_polling(self) -> bool:
        return bool(self.transport_options.get("priority_polling", True)) and \
            compat_kombu.supported(compat_kombu.SQS_PRIORITY_POLLING)

    def poll_queue(self, queue: str) -> None:
        if not self.priority_polling:
            super().poll_queue(queue)
            return
        self._kick()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        try:
            super().basic_ack(delivery_tag, multiple=multiple)
        finally:
            if self.priority_polling:
                self._kick()  # a process is free: look for the most urgent job now

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().basic_reject(delivery_tag, requeue=requeue)
        finally:
            if self.priority_polling:
                self._kick()

    def close(self) -> None:
        if self._watchdog is not None:
            with contextlib.suppress(Exception):
                self._watchdog.cancel()
            self._watchdog = None
        super().close()

    def _kick(self) -> None:
        if self.hub is None or self.closed:
            return
        queues = self._ordered_queues()
        if queues and queues[0] not in self._long_polls:
            self._long_poll(queues[0])  # the most urgent queue: always listened to
        if self._sweeping:
            return
        self._sweeping = True
        if self._watchdog is None:
            self._watchdog = self.hub.call_repeatedly(self.watchdog_s, self._watch)
        self.hub.call_soon(self._sweep, 0)

    def _ordered_queues(self) -> list[str]:
        active = list(self.consumed_queues)
        return sorted(active, key=lambda q: (_RANK.get(q.rsplit(".", 1)[-1], 9),
                                             active.index(q)))

    def _sweep(self, index: int) -> None:
        self._progress = time.monotonic()
        queues = self._ordered_queues()
        if self.closed or not queues:
            self._sweeping = False
            return
        if not self.qos.can_consume():
            self._sweeping = False
            if not self._recheck_pending:  # acks kick at once; this is the fallback
                self._recheck_pending = True
                self.hub.call_later(self.busy_recheck_s, self._recheck)
            return
        if index == 0 and len(queues) > 1:
            index = 1  # the most urgent queue is long-polled all the time
        if index >= len(queues):
            self._sweeping = False
            if self.wait_time_seconds:
                for queue in queues:
                    self._long_poll(queue)
            else:  # short polling only: sweep again after the polling interval
                self._recheck_pending = True
                self.hub.call_later(self.connection.polling_interval or 1, self._recheck)
            return
        self._receive(queues[index], 0, lambda n: self.hub.call_soon(
            self._sweep, 0 if n else index + 1))

    def _recheck(self) -> None:
        self._recheck_pending = False
        self._kick()

    def _long_poll(self, queue: str) -> None:
        if queue in self._long_polls:
            return
        self._long_polls.add(queue)

        def done(delivered: int) -> None:
            self._long_polls.discard(queue)
            self._progress = time.monotonic()
            if queue not in self.consumed_queues or self.closed:
                return
            if self._is_top(queue):
                self._long_poll(queue)
                if delivered:
                    self._kick()
            elif delivered:
                self._kick()
            elif not self._sweeping and self.qos.can_consume():
                self._long_poll(queue)

        self._receive(queue, int(self.wait_time_seconds) or 1, done)

    def _is_top(self, queue: str) -> bool:
        queues = self._ordered_queues()
        return bool(queues) and queues[0] == queue

    def _receive(self, queue: str, wait: int, done: Callable[[int], None]) -> None:
        q_url = self.queue_url(queue)
        qname = self.canonical_queue_name(queue)

        def on_response(response: Any) -> None:
            done(self._deliver_received(queue, q_url, response, busy_ok=self._is_top(queue)))

        self.asynsqs(queue=qname).receive_message(
            qname, q_url, number_messages=self.receive_estimate(),
            wait_time_seconds=wait, callback=promise(on_response))

    def _deliver_received(self, queue: str, q_url: str, response: Any,
                          busy_ok: bool = False) -> int:
        messages = (response or {}).get("Messages") or [] if isinstance(response, dict) \
            else []
        callback = self.consumer_callback(queue)
        delivered = 0
        for i, message in enumerate(messages):
            if callback is None or self.closed or not (busy_ok or self.qos.can_consume()):
                self.release_received(q_url, queue, messages[i:])
                break
            callback(self.received_to_message(message, queue, q_url))
            delivered += 1
        return delivered

    def _watch(self) -> None:
        """Restart polling if a request never answered (its callback is then lost)."""
        if self.closed:
            return
        stale = time.monotonic() - self._progress > float(self.wait_time_seconds) + 30
        if (self._sweeping or self._long_polls) and stale:
            log.warning("SQS polling made no progress for %.0f s; restarting it",
                        time.monotonic() - self._progress)
            self._sweeping = False
            self._long_polls.clear()
        queues = self._ordered_queues()
        if not queues:
            return
        idle_and_unheard = (not self._sweeping and not self._recheck_pending
                            and len(self._long_polls) < len(queues))
        if queues[0] not in self._long_polls or idle_and_unheard:
            self._kick()


class Transport(_SQSTransport):
    """kombu's SQS transport with pdftasks' ``Channel`` (``broker_transport`` on SQS)."""

    Channel = Channel


# Job records on DynamoDB.


def _s(value: Any) -> dict[str, str]:
    return {"S": str(value)}


def _n(value: Any) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _plain(attr: Mapping[str, Any]) -> Any:
    if "S" in attr:
        return attr["S"]
    if "N" in attr:
        return attr["N"]
    if "B" in attr:
        return attr["B"]
    if "NULL" in attr:
        return None
    raise ValueError(f"unexpected DynamoDB attribute {attr!r}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _batch_get(ddb: Any, table: str, keys: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``BatchGetItem`` of any number of keys (100 per call), retrying unprocessed keys."""
    for start in range(0, len(keys), 100):
        request = {table: {"Keys": keys[start:start + 100], "ConsistentRead": True}}
        for attempt in range(10):
            reply = ddb.batch_get_item(RequestItems=request)
            yield from reply.get("Responses", {}).get(table, [])
            request = reply.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(random.uniform(0, 0.05 * 2 ** attempt))


class _AwsErrors:
    """Turn unreachable-endpoint and throttling failures into ``BrokerUnavailableError``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        if isinstance(exc, BotoCoreError) or (
                isinstance(exc, ClientError) and _code(exc) in _RETRY_CODES):
            raise BrokerUnavailableError(f"cannot reach the DynamoDB job store: {exc}") from exc


def thread_client(local: threading.local, service: str, settings: Settings) -> Any:
    """A boto3 client per thread and process (boto3 clients do not cross a fork)."""
    c = getattr(local, "client", None)
    if c is None or getattr(local, "pid", None) != os.getpid():
        c = client(service, settings)
        local.client, local.pid = c, os.getpid()
    return c


class DynamoDBJobStore(JobStore):
    """Job records on one DynamoDB table (layout: this module's docstring).

    - **Transitions** read the job's status, then write it back in one
      ``TransactWriteItems`` with ``ConditionExpression: status = <what was read>``,
      together with the counter update; a concurrent change cancels the transaction and
      the transition is re-read and retried, so each change happens exactly once.
    - **Counts** are counter items updated in the same transactions (one per day of
      creation and shard): ``counts()`` reads a few items instead of counting records.
      Counters of days older than the retention are left out, so counts cover whole days.
    - **Listing** queries the ``status-index`` GSI (partition ``{ns}#{status}``, sort key
      ``created_ts``) newest first, per status, merging statuses.
    - **Events** are items in one partition per namespace with a time-ordered sort key,
      polled by listeners.

    Args:
        table: Table name.
        namespace: Queue namespace; records of other namespaces are invisible.
        retention_s: Records expire (TTL) this long after creation.
        settings: Region, endpoint and credentials source; default: the environment.
    """

    def __init__(self, table: str, namespace: str, retention_s: int = JOB_RETENTION_S,
                 settings: Settings | None = None) -> None:
        super().__init__(namespace, retention_s)
        self.table = table
        self.settings = settings or get_settings()
        self._local = threading.local()

    @property
    def ddb(self) -> Any:
        return thread_client(self._local, "dynamodb", self.settings)

    # Keys.

    def _job_key(self, job_id: str) -> dict[str, Any]:
        return {"pk": _s(f"{self.namespace}#job#{job_id}"), "sk": _s("job")}

    def _status_key(self, status: JobStatus) -> str:
        return f"{self.namespace}#{status.value}"

    @staticmethod
    def _day(created_ts: float) -> str:
        return dt.datetime.fromtimestamp(created_ts, dt.UTC).strftime("%Y%m%d")

    def _counter_key(self, job_id: str, created_ts: float) -> dict[str, Any]:
        shard = zlib.crc32(job_id.encode()) % COUNTER_SHARDS
        return {"pk": _s(f"{self.namespace}#counts#{self._day(created_ts)}#{shard}"),
                "sk": _s("n")}

    def _counter_update(self, key: dict[str, Any], changes: Mapping[str, int],
                        created_ts: float) -> dict[str, Any]:
        names, values, adds = {"#exp": TTL_ATTRIBUTE}, {}, []
        for i, (attr, delta) in enumerate(changes.items()):
            names[f"#c{i}"] = attr
            values[f":d{i}"] = _n(delta)
            adds.append(f"#c{i} :d{i}")
        day_end = (int(created_ts) // 86400 + 1) * 86400
        values[":exp"] = _n(day_end + self.retention_s + 2 * 86400)
        return {"Update": {
            "TableName": self.table, "Key": key,
            "UpdateExpression": f"ADD {', '.join(adds)} SET #exp = if_not_exists(#exp, :exp)",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}

    @staticmethod
    def _counter_attr(status: JobStatus | str, priority: int) -> str:
        return f"{JobStatus(status).value}_{int(priority)}"

    # Records.

    def _item(self, job: Job) -> dict[str, Any]:
        created = job.created_at.timestamp()
        item: dict[str, Any] = {
            **self._job_key(job.job_id),
            "status_key": _s(self._status_key(job.status)),
            "created_ts": _n(created),
            TTL_ATTRIBUTE: _n(math.ceil(created + self.retention_s)),
        }
        for name, value in job.to_record().items():
            item[name] = _n(int(value or 0)) if name == "attempts" else _s(value)
        return item

    @staticmethod
    def _job(item: Mapping[str, Any]) -> Job:
        rec = {name: str(_plain(attr)) for name, attr in item.items()
               if name not in ("pk", "sk", "status_key", "created_ts", TTL_ATTRIBUTE)}
        return Job.from_record(rec)

    @staticmethod
    def _expired(item: Mapping[str, Any], now: float | None = None) -> bool:
        exp = item.get(TTL_ATTRIBUTE)
        return exp is not None and float(exp["N"]) <= (now or time.time())

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """``TransactWriteItems``, retried on conflicts with other transactions."""
        for attempt in range(12):
            try:
                self.ddb.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if _code(exc) == "TransactionCanceledException" and \
                        "ConditionalCheckFailed" not in reasons and attempt < 11 and \
                        any(r in ("TransactionConflict", "ThrottlingError") for r in reasons):
                    time.sleep(random.uniform(0, min(1.0, 0.01 * 2 ** attempt)))
                    continue
                raise

    @staticmethod
    def _condition_failed(exc: ClientError) -> bool:
        if _code(exc) == "ConditionalCheckFailedException":
            return True
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
        return _code(exc) == "TransactionCanceledException" and \
            "ConditionalCheckFailed" in reasons

    def create_many(self, jobs: Iterable[Job]) -> None:
        chunk: list[Job] = []
        size = 0
        with _AwsErrors():
            for job in jobs:
                item_size = len(json.dumps(job.to_record()))
                if item_size > MAX_RECORD_BYTES:
                    raise InvalidDataError(
                        f"job {job.job_id}: its record is {item_size} bytes, above the "
                        f"{MAX_RECORD_BYTES} bytes a DynamoDB item can hold; send less data "
                        "(or a reference to it) with the job")
                if chunk and (len(chunk) >= 80 or size + item_size > 3_000_000):
                    self._create_chunk(chunk)
                    chunk, size = [], 0
                chunk.append(job)
                size += item_size
            if chunk:
                self._create_chunk(chunk)

    def _create_chunk(self, jobs: list[Job]) -> None:
        """Up to 80 records and their counters in one transaction (<= 100 actions)."""
        counters: dict[str, tuple[dict[str, Any], dict[str, int], float]] = {}
        items = []
        for job in jobs:
            created = job.created_at.timestamp()
            items.append({"Put": {"TableName": self.table, "Item": self._item(job),
                                  "ConditionExpression": "attribute_not_exists(pk)"}})
            key = self._counter_key(job.job_id, created)
            entry = counters.setdefault(key["pk"]["S"], (key, {}, created))
            attr = self._counter_attr(job.status, job.priority)
            entry[1][attr] = entry[1].get(attr, 0) + 1
        items += [self._counter_update(key, changes, created)
                  for key, changes, created in counters.values()]
        try:
            self._transact(items)
        except ClientError as exc:
            if not self._condition_failed(exc):
                raise
            # A job id that exists already (a caller's own task_id): replace it like the
            # other stores do, keeping the counters right.
            existing = [j.job_id for j in jobs if self.get(j.job_id) is not None]
            if not existing:
                raise
            self.delete(existing)
            self._transact(items)

    def get(self, job_id: str) -> Job | None:
        with _AwsErrors():
            item = self.ddb.get_item(TableName=self.table, Key=self._job_key(job_id),
                                        ConsistentRead=True).get("Item")
        if not item or self._expired(item):
            return None
        return self._job(item)

    def _current(self, job_id: str) -> dict[str, Any] | None:
        item = self.ddb.get_item(
            TableName=self.table, Key=self._job_key(job_id), ConsistentRead=True,
            ProjectionExpression="#st, #pr, #ct, #exp",
            ExpressionAttributeNames={"#st": "status", "#pr": "priority", "#ct": "created_ts",
                                      "#exp": TTL_ATTRIBUTE}).get("Item")
        return None if not item or self._expired(item) else item

    def transition(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
                   **values: Any) -> bool:
        allowed = {s.value for s in allowed_from}
        names = {"#st": "status", "#sk": "status_key"}
        attrs = {":to": _s(to.value), ":sk": _s(self._status_key(to))}
        sets = ["#st = :to", "#sk = :sk"]
        for i, (name, value) in enumerate(_encode(values).items()):
            names[f"#v{i}"] = name
            attrs[f":v{i}"] = _n(int(value or 0)) if name == "attempts" else _s(value)
            sets.append(f"#v{i} = :v{i}")
        with _AwsErrors():
            for _ in range(50):
                item = self._current(job_id)
                if item is None or item["status"]["S"] not in allowed:
                    return False
                current = item["status"]["S"]
                update = {
                    "TableName": self.table, "Key": self._job_key(job_id),
                    "UpdateExpression": "SET " + ", ".join(sets),
                    "ConditionExpression": "#st = :cur",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": {**attrs, ":cur": _s(current)}}
                try:
                    if current == to.value:
                        self.ddb.update_item(**update)
                    else:
                        created = float(item["created_ts"]["N"])
                        prio = int(item["priority"]["S"])
                        self._transact([{"Update": update}, self._counter_update(
                            self._counter_key(job_id, created),
                            {self._counter_attr(current, prio): -1,
                             self._counter_attr(to, prio): 1}, created)])
                    return True
                except ClientError as exc:
                    if not self._condition_failed(exc):
                        raise
                    # The status changed since it was read: read it again.
        raise BrokerUnavailableError(f"job {job_id}: status kept changing; transition gave up")

    def add_attempt(self, job_id: str) -> int:
        with _AwsErrors():
            try:
                reply = self.ddb.update_item(
                    TableName=self.table, Key=self._job_key(job_id),
                    UpdateExpression="ADD attempts :one",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":one": _n(1)}, ReturnValues="UPDATED_NEW")
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    return 0
                raise
        return int(reply["Attributes"]["attempts"]["N"])

    def delete(self, job_ids: Iterable[str]) -> None:
        with _AwsErrors():
            for job_id in job_ids:
                for _ in range(50):
                    item = self.ddb.get_item(
                        TableName=self.table, Key=self._job_key(job_id), ConsistentRead=True,
                        ProjectionExpression="#st, #pr, #ct",
                        ExpressionAttributeNames={"#st": "status", "#pr": "priority",
                                                  "#ct": "created_ts"}).get("Item")
                    if item is None:
                        break
                    created = float(item["created_ts"]["N"])
                    try:
                        self._transact([
                            {"Delete": {"TableName": self.table, "Key": self._job_key(job_id),
                                        "ConditionExpression": "#st = :cur",
                                        "ExpressionAttributeNames": {"#st": "status"},
                                        "ExpressionAttributeValues": {
                                            ":cur": item["status"]}}},
                            self._counter_update(self._counter_key(job_id, created), {
                                self._counter_attr(item["status"]["S"],
                                                   int(item["priority"]["S"])): -1},
                                created)])
                        break
                    except ClientError as exc:
                        if not self._condition_failed(exc):
                            raise

    def _query_status(self, status: JobStatus, limit: int | None = None,
                      newest_first: bool = True, before: float | None = None,
                      projection: str | None = None) -> Iterator[dict[str, Any]]:
        now = time.time()
        condition = "status_key = :k"
        values: dict[str, Any] = {":k": _s(self._status_key(status)), ":now": _n(int(now))}
        if before is not None:
            condition += " AND created_ts < :before"
            values[":before"] = _n(before)
        kwargs: dict[str, Any] = {
            "TableName": self.table, "IndexName": STATUS_INDEX,
            "KeyConditionExpression": condition, "ScanIndexForward": not newest_first,
            "FilterExpression": "attribute_not_exists(#exp) OR #exp > :now",
            "ExpressionAttributeValues": values,
            "ExpressionAttributeNames": {"#exp": TTL_ATTRIBUTE}}
        if projection:
            kwargs["ProjectionExpression"] = projection
        if limit is not None:
            kwargs["Limit"] = max(limit, 1)
        found = 0
        while True:
            page = self.ddb.query(**kwargs)
            for item in page.get("Items", []):
                yield item
                found += 1
                if limit is not None and found >= limit:
                    return
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list(self, status: JobStatus | None = None, limit: int | None = 100) -> list[Job]:
        statuses = [status] if status else list(JobStatus)
        with _AwsErrors():
            items = [item for s in statuses for item in self._query_status(s, limit)]
        items.sort(key=lambda item: float(item["created_ts"]["N"]), reverse=True)
        if limit is not None:
            items = items[:limit]
        return [self._job(item) for item in items]

    def created_before(self, cutoff: float, statuses: Iterable[JobStatus]
                       ) -> builtins.list[str]:
        with _AwsErrors():
            return [item["job_id"]["S"] for s in statuses for item in self._query_status(
                s, newest_first=False, before=cutoff, projection="job_id")]

    def claim(self, key: str, ttl_s: int) -> bool:
        now = time.time()
        with _AwsErrors():
            try:
                self.ddb.put_item(
                    TableName=self.table,
                    Item={"pk": _s(f"{self.namespace}#claim#{key}"), "sk": _s("claim"),
                          TTL_ATTRIBUTE: _n(int(now + ttl_s))},
                    ConditionExpression="attribute_not_exists(pk) OR #exp < :now",
                    ExpressionAttributeNames={"#exp": TTL_ATTRIBUTE},
                    ExpressionAttributeValues={":now": _n(int(now))})
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def counts(self) -> dict[JobStatus, dict[JobPriority, int]]:
        out = {s: {p: 0 for p in JobPriority} for s in JobStatus}
        today = int(time.time()) // 86400
        first = int(time.time() - self.retention_s) // 86400
        keys = [{"pk": _s(f"{self.namespace}#counts#{self._day(day * 86400)}#{shard}"),
                 "sk": _s("n")}
                for day in range(first, today + 1) for shard in range(COUNTER_SHARDS)]
        with _AwsErrors():
            for item in _batch_get(self.ddb, self.table, keys):
                for status in JobStatus:
                    for prio in JobPriority:
                        attr = item.get(self._counter_attr(status, prio))
                        if attr is not None:
                            out[status][prio] += int(attr["N"])
        return out

    def publish(self, event: dict[str, Any]) -> None:
        now = time.time()
        with _AwsErrors():
            self.ddb.put_item(TableName=self.table, Item={
                "pk": _s(f"{self.namespace}#events"),
                "sk": _s(f"{now:017.6f}#{uuid.uuid4().hex}"),
                "body": _s(json.dumps(event)), TTL_ATTRIBUTE: _n(int(now + EVENT_TTL_S))})

    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        return self._follow(time.time(), stop)

    def _follow(self, start: float, stop: threading.Event) -> Iterator[dict[str, Any]]:
        # Events are read again from a few seconds back, so one written late by a worker
        # whose clock is slightly behind is not missed; ``seen`` drops the repeats.
        skew_s = 5.0
        newest = start
        seen: dict[str, float] = {}
        while not stop.is_set():
            try:
                items = self._events_since(newest - skew_s)
            except (BotoCoreError, ClientError):
                stop.wait(1.0)
                continue
            for item in items:
                sk = item["sk"]["S"]
                ts = float(sk.split("#", 1)[0])
                if sk in seen or ts < start:
                    continue
                seen[sk] = ts
                newest = max(newest, ts)
                yield json.loads(item["body"]["S"])
            for sk in [k for k, ts in seen.items() if ts < newest - 2 * skew_s]:
                del seen[sk]
            stop.wait(EVENT_POLL_S)

    def _events_since(self, since: float) -> builtins.list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND sk > :since",
            "ExpressionAttributeValues": {":pk": _s(f"{self.namespace}#events"),
                                          ":since": _s(f"{max(since, 0):017.6f}")}}
        items: builtins.list[dict[str, Any]] = []
        while True:
            page = self.ddb.query(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# Celery results on the same table.


class DynamoDBResultBackend(KeyValueStoreBackend):
    """Celery result backend on the job table (``result#…`` items with the TTL attribute).

    Selected by ``PDFTASKS_RESULT_BACKEND`` = ``pdftasks.aws.DynamoDBResultBackend+
    dynamodb://TABLE`` (the default on SQS). Region and endpoint come from the app's
    settings. Results expire after ``PDFTASKS_RESULT_EXPIRES_S`` (DynamoDB TTL; reads skip
    expired items).
    """

    supports_autoexpire = True
    implements_incr = False

    def __init__(self, url: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, url=url, **kwargs)
        self.settings: Settings = getattr(self.app, "pdftasks_settings", None) or get_settings()
        self.url = url
        self.table = (urlsplit(url).netloc if url else "") or self.settings.dynamodb_table
        self._local = threading.local()

    @property
    def ddb(self) -> Any:
        return thread_client(self._local, "dynamodb", self.settings)

    @staticmethod
    def _key(key: str | bytes) -> dict[str, Any]:
        text = key.decode() if isinstance(key, bytes) else str(key)
        return {"pk": _s(f"result#{text}"), "sk": _s("r")}

    @staticmethod
    def _value(item: Mapping[str, Any] | None) -> Any:
        if not item or DynamoDBJobStore._expired(item):
            return None
        attr = item["v"]
        return attr["B"] if "B" in attr else attr["S"]

    def get(self, key: str | bytes) -> Any:
        with _AwsErrors():
            reply = self.ddb.get_item(TableName=self.table, Key=self._key(key),
                                         ConsistentRead=True)
        return self._value(reply.get("Item"))

    def mget(self, keys: Iterable[str | bytes]) -> list[Any]:
        wanted = [self._key(k) for k in keys]
        found: dict[str, Any] = {}
        with _AwsErrors():
            for item in _batch_get(self.ddb, self.table, wanted):
                found[item["pk"]["S"]] = self._value(item)
        return [found.get(k["pk"]["S"]) for k in wanted]

    def set(self, key: str | bytes, value: Any) -> None:
        attr = {"B": value} if isinstance(value, bytes | bytearray) else {"S": str(value)}
        item = {**self._key(key), "v": attr}
        if self.expires:
            item[TTL_ATTRIBUTE] = _n(int(time.time() + self.expires))
        with _AwsErrors():
            self.ddb.put_item(TableName=self.table, Item=item)

    def delete(self, key: str | bytes) -> None:
        with _AwsErrors():
            self.ddb.delete_item(TableName=self.table, Key=self._key(key))

    def incr(self, key: str | bytes) -> int:
        raise NotImplementedError("chords are not supported by pdftasks' DynamoDB backend")


# PDFs on S3.


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at the ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an S3 URL: {url!r} (use s3://bucket/prefix)")
    return parts.netloc, parts.path.strip("/")


class S3Storage:
    """Writes PDFs as S3 objects under ``s3://bucket/prefix/`` (``PDFTASKS_STORAGE``).

    ``write`` returns the object's ``s3://`` URI, which becomes the job's ``result_path``.
    Failures are ``StorageError`` (transient): the job is retried with backoff.

    Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix``.
        settings: Region and endpoint; default: the environment.
    """

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.settings = settings or get_settings()
        self._local = threading.local()

    @property
    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None or getattr(self._local, "pid", None) != os.getpid():
            c = client("s3", self.settings, read_timeout=60)
            self._local.client, self._local.pid = c, os.getpid()
        return c

    def key_for(self, key: str) -> str:
        """The object key of storage key ``key`` (``pdftasks.storage.storage_key``)."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, filename: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(filename)}"

    def write(self, filename: str, data: bytes,
              metadata: Mapping[str, str] | None = None) -> str:
        """Upload ``data`` as storage key ``filename`` (``application/pdf``); return its
        ``s3://`` URI.

        S3 replaces an object in one step, so readers never see a partial PDF.

        Raises:
            StorageError: the bucket is missing or not writable, or S3 cannot be reached.
        """
        key = self.key_for(filename)
        meta = {"generator": "pdftasks", "filename": key.rsplit("/", 1)[-1],
                "bytes": str(len(data)),
                **{k: str(v) for k, v in (metadata or {}).items()}}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType="application/pdf", Metadata=meta)
        except (BotoCoreError, ClientError) as exc:
            detail = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            raise StorageError(
                f"cannot write {key.rsplit('/', 1)[-1]!r} to s3://{self.bucket}: "
                f"{detail}") from exc
        return f"s3://{self.bucket}/{key}"

    def discard_stale_temps(self, key: str) -> list[str]:
        """Nothing to discard: S3 replaces an object in one step, with no temporary file."""
        return []

    def presigned_url(self, uri: str, expires_s: int = PRESIGN_EXPIRES_S,
                      download_name: str | None = None) -> str:
        """A time-limited HTTPS GET URL for an object written here (its ``s3://`` URI);
        with ``download_name``, S3 answers with that name in ``Content-Disposition``."""
        bucket, key = parse_s3_url(uri)
        if bucket != self.bucket:
            raise ValueError(f"{uri!r} is not in this storage's bucket {self.bucket!r}")
        params = {"Bucket": bucket, "Key": key}
        if download_name:
            params["ResponseContentDisposition"] = \
                f'attachment; filename="{download_name.replace(chr(34), "")}"'
        return str(self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=int(expires_s)))

    def read(self, uri: str) -> bytes:
        bucket, key = parse_s3_url(uri)
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot read {uri}: {exc}") from exc

    def delete_older_than(self, cutoff: float, dry_run: bool = False) -> list[str]:
        """Delete ``.pdf`` objects under the prefix (each job's key is
        ``<namespace>/<owner>/<job id>/<name>.pdf``) last modified before ``cutoff``.

        Returns the URIs deleted (or, with ``dry_run``, that would be).
        """
        prefix = f"{self.prefix}/" if self.prefix else ""
        old: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["Key"].lower().endswith(".pdf") and \
                            obj["LastModified"].timestamp() < cutoff:
                        old.append(obj["Key"])
            if not dry_run:
                for start in range(0, len(old), 1000):
                    self.client.delete_objects(Bucket=self.bucket, Delete={
                        "Objects": [{"Key": k} for k in old[start:start + 1000]],
                        "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot clean up s3://{self.bucket}/{prefix}: {exc}") from exc
        return [f"s3://{self.bucket}/{k}" for k in old]


# SQS queue statistics and dead letters.


def queue_urls(settings: Settings, sqs: Any = None) -> dict[str, str | None]:
    """{Celery queue name: SQS URL or None if it does not exist}, most urgent first."""
    from pdftasks.celery_app import queue_name

    predefined = predefined_queue_urls(settings)
    sqs = sqs or client("sqs", settings)
    out: dict[str, str | None] = {}
    for prio in JobPriority:
        name = queue_name(prio, settings.queue_namespace)
        if prio.label in predefined:
            out[name] = predefined[prio.label]
            continue
        out[name] = _queue_url(sqs, sqs_queue_name(name, settings))
    return out


#: Queue URLs already looked up, by (endpoint, name, owner): a URL never changes.
_URLS: dict[tuple[str, str, str | None], str] = {}


def _queue_url(sqs: Any, name: str, owner: str | None = None) -> str | None:
    key = (str(sqs.meta.endpoint_url), name, owner)
    if key not in _URLS:
        kwargs = {"QueueName": name, **({"QueueOwnerAWSAccountId": owner} if owner else {})}
        try:
            _URLS[key] = str(sqs.get_queue_url(**kwargs)["QueueUrl"])
        except ClientError as exc:
            if "NonExistentQueue" not in _code(exc) and "QueueDoesNotExist" not in _code(exc):
                raise
            return None
    return _URLS[key]


@dataclass
class QueueAttributes:
    """What SQS tells about one priority queue (approximate, as SQS says)."""

    waiting: int
    in_flight: int
    delayed: int
    dead_letters: int | None = None


def queue_attributes(settings: Settings) -> dict[str, QueueAttributes]:
    """Per priority queue: messages waiting (``ApproximateNumberOfMessages``), received
    but not acknowledged (``…NotVisible``: jobs rendering, or held for a retry), delayed,
    and waiting in its dead-letter queue."""
    sqs = client("sqs", settings)
    out = {}
    for name, url in queue_urls(settings, sqs).items():
        if url is None:
            out[name] = QueueAttributes(0, 0, 0, None)
            continue
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed", "RedrivePolicy"])["Attributes"]
        dead = None
        dlq_url = _dead_letter_url(sqs, attrs)
        if dlq_url:
            dead = int(sqs.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])[
                "Attributes"]["ApproximateNumberOfMessages"])
        out[name] = QueueAttributes(int(attrs.get("ApproximateNumberOfMessages", 0)),
                                    int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                                    int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
                                    dead)
    return out


def _dead_letter_url(sqs: Any, attrs: Mapping[str, str]) -> str | None:
    policy = attrs.get("RedrivePolicy")
    if not policy:
        return None
    arn = json.loads(policy)["deadLetterTargetArn"]
    _, _, _, _region, account, name = arn.split(":", 5)
    return _queue_url(sqs, name, account)


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


def setup(settings: Settings | None = None) -> dict[str, Any]:
    """Everything an SQS + DynamoDB (+ S3) deployment needs, idempotent.

    Creates what is missing and updates queue attributes (visibility timeout, long
    polling, redrive policy). Needs administrative rights, unlike the workers.
    """
    s = settings or get_settings()
    out: dict[str, Any] = {"table": ensure_table(s), "bucket": ensure_bucket(s)}
    if s.is_sqs:
        out["queues"] = ensure_queues(s)
    return out
