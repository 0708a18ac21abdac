"""SQS as Celery's broker (``PDFTASKS_BROKER_URL=sqs://``), Celery results on DynamoDB.

- ``Transport``/``Channel``: kombu's SQS transport with the endpoint taken from the settings
  and *priority polling*: a worker with a free process asks the queues one after the other,
  most urgent first (short polls), and long-polls all of them only when all are empty.
  kombu's own loop polls each queue independently, so a free process takes whichever
  queue answers first. ``transport_options`` are its ``broker_transport_options``.
- ``DynamoDBResultBackend``: Celery results as items of the job table
  (``pdftasks.stores.dynamodb``), with the same TTL.
- ``queue_attributes``: what SQS tells about each priority queue and its dead-letter queue.

Setup and the dead-letter reaper: ``pdftasks.contrib.aws``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError
from celery.backends.base import KeyValueStoreBackend
from celery.exceptions import ImproperlyConfigured
from kombu.transport.SQS import CHARS_REPLACE_TABLE
from kombu.transport.SQS import Transport as _SQSTransport
from vine import promise

from pdftasks.awsclient import _code, client, thread_client
from pdftasks.compat import kombu as compat_kombu
from pdftasks.models import JobPriority
from pdftasks.settings import Settings
from pdftasks.stores.dynamodb import (
    TTL_ATTRIBUTE,
    DynamoDBJobStore,
    _AwsErrors,
    _batch_get,
    _n,
    _s,
)

log = logging.getLogger(__name__)

_RANK = {p.label: int(p) for p in JobPriority}


# Names and transport options.


def _celery_queue(priority: object, settings: Settings) -> str:
    """The Celery queue of a priority, ``pdftasks.celery_app.queue_name`` (a layer above)."""
    return f"{settings.queue_namespace}.{JobPriority.parse(priority).label}"


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
        options["predefined_queues"] = {
            sqs_queue_name(_celery_queue(label, s), s): {"url": url}
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
    def endpoint_url(self) -> str | None:
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


# Celery results on the same table.


class DynamoDBResultBackend(KeyValueStoreBackend):
    """Celery result backend on the job table (``result#…`` items with the TTL attribute).

    Selected by ``PDFTASKS_RESULT_BACKEND`` = ``pdftasks.brokers.sqs.DynamoDBResultBackend+
    dynamodb://TABLE`` (the default on SQS). Region and endpoint come from the app's
    settings (``app.pdftasks_settings``: only pdftasks apps, made by ``create_app``, can
    use it). Results expire after ``PDFTASKS_RESULT_EXPIRES_S`` (DynamoDB TTL; reads skip
    expired items).
    """

    supports_autoexpire = True
    implements_incr = False

    def __init__(self, url: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, url=url, **kwargs)
        settings: Settings | None = getattr(self.app, "pdftasks_settings", None)
        if settings is None:
            raise ImproperlyConfigured(
                f"{type(self).__name__} takes its region, endpoint and table from a pdftasks "
                f"app's settings; {self.app!r} is not one (use pdftasks.create_app)")
        self.settings = settings
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


# SQS queue statistics (also read by the dead-letter reaper, pdftasks.contrib.aws).


def queue_urls(settings: Settings, sqs: Any = None) -> dict[str, str | None]:
    """{Celery queue name: SQS URL or None if it does not exist}, most urgent first."""
    predefined = predefined_queue_urls(settings)
    sqs = sqs or client("sqs", settings)
    out: dict[str, str | None] = {}
    for prio in JobPriority:
        name = _celery_queue(prio, settings)
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
