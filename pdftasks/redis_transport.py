"""kombu's Redis transport, closed against one way of losing a job when Redis goes away.

kombu takes a message off its queue with ``BRPOP`` and only then records it as unacked
(``QoS.append``: a ZADD and an HSET in a second round trip). Late acknowledgement and the
visibility timeout bring back a message that is in that unacked record; a message whose
``BRPOP`` reply arrived but whose unacked record could not be written, because Redis stopped
or the connection broke in between, was in this process's memory only: kombu drops it with
the connection error, and the job stays *pending* for ever.

This transport keeps such a message and pushes it back onto its queue as soon as a channel
to the same broker is open again (the worker reconnects on its own), so the job is delivered
again instead of lost. If the unacked record was written after all (the reply, not the
command, was lost), the job is delivered twice; a job runs at most once because the worker
claims it in the job store first (see ``pdftasks.tasks``).

``install()`` makes ``redis://`` and ``rediss://`` URLs use it in this process (the URLs keep
their scheme, which tools such as Flower read); ``pdftasks.celery_app`` calls it for a Redis
broker.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

#: Errors after which a command's fate on the server is unknown.
_LINK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)

_lock = threading.Lock()
#: broker URI -> messages (payload, exchange, routing key) to put back on their queues
_rescued: dict[str, list[tuple[dict[str, Any], str, str]]] = {}


def _broker_key(channel: kombu_redis.Channel) -> str:
    return str(channel.connection.client.as_uri(include_password=True))


def rescued_count() -> int:
    """Messages held in this process, waiting for the broker to come back."""
    with _lock:
        return sum(len(held) for held in _rescued.values())


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except _LINK_ERRORS:
            info = message.delivery_info
            with _lock:
                _rescued.setdefault(_broker_key(self.channel), []).append(
                    (message._raw, info["exchange"], info["routing_key"]))
            log.warning("broker connection lost while taking message %s: it will be put "
                        "back on %s when the broker is reachable again",
                        message.properties.get("correlation_id") or delivery_tag,
                        info["routing_key"])
            raise


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._put_back_rescued()

    def _put_back_rescued(self) -> None:
        key = _broker_key(self)
        with _lock:
            held = _rescued.pop(key, [])
        if not held:
            return
        try:
            with self.conn_or_acquire() as client, client.pipeline() as pipe:
                for payload, exchange, routing_key in held:
                    self._do_restore_message(payload, exchange, routing_key, pipe)
                pipe.execute()
        except BaseException:
            with _lock:
                _rescued.setdefault(key, [])[:0] = held
            raise
        log.warning("put %d message(s) taken during a broker outage back on their queues",
                    len(held))


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the ``Channel`` above."""

    Channel = Channel


def install() -> None:
    """Resolve the ``redis`` and ``rediss`` transport names to ``Transport`` in this process.

    Only behaviour after a lost connection differs from kombu's own transport. (A
    ``broker_transport`` setting would do the same for Celery's connections but rename the
    URL scheme to the class path, which Flower cannot read.)
    """
    from kombu import transport

    for scheme in ("redis", "rediss"):
        transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
        transport._transport_cache.pop(scheme, None)  # resolved before: resolve again
