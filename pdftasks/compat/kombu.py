"""kombu internals pdftasks uses, written for (and tested with) the versions in ``TESTED``.

Outside ``TESTED`` every use falls back to kombu's stock behaviour with a warning:

- ``REDIS_RESCUE`` (``pdftasks.brokers.redis``: messages taken off a queue just as Redis
  went away are spooled and put back): reads ``Message._raw``, calls the Redis channel's
  ``_do_restore_message`` and registers the transport in ``kombu.transport.
  TRANSPORT_ALIASES`` (clearing ``_transport_cache``). Fallback: kombu's own Redis
  transport (``install`` does not register pdftasks'), which can lose such a message.
- ``REDIS_GUARD`` (``pdftasks.brokers.redis_guard.guard_redis_channel``: unreadable broker
  messages are dead-lettered instead of raising into the event loop): replaces the Redis
  channel's ``handlers["BRPOP"]`` and its ``Message`` class. Fallback: the channel is not
  guarded (a broken envelope raises into the worker's consumer loop, as with stock kombu).
- ``SQS_PRIORITY_POLLING`` (``pdftasks.brokers.sqs.Channel``, urgent queues first): overrides
  the SQS channel's ``_schedule_queue`` and uses ``_active_queues``, ``_new_queue``,
  ``_get_message_estimate``, ``_release_messages``, ``_message_to_python`` and the
  connection's ``_callbacks`` (through ``SQSChannel`` below). Fallback: kombu's own polling
  loop, as with ``priority_polling`` off.
- ``REDIS_QUEUE_KEYS`` (``pdftasks.worker.lost``: whether a job's message still waits):
  the Redis channel's ``_q_for_pri`` names the list of each priority step of a queue.
  Fallback: only the queue's own list is read.
- ``REDIS_EVENT_PROBE`` (``pdftasks.contrib.monitoring``: task-sent events only while a
  monitor listens): asks the Redis channel for the Pub/Sub topics of an event with
  ``_get_publish_topics``. Fallback: task-sent events for every job, as with
  ``PDFTASKS_TASK_EVENTS=always``.
"""

from __future__ import annotations

from typing import Any

from pdftasks.compat import FALLBACK, Internal, check, installed_version

#: The kombu versions the uses below were written and tested for.
TESTED = ">=5.7,<5.8"
#: The installed version (tests replace it to simulate another one).
VERSION = installed_version("kombu")

REDIS_RESCUE = Internal(
    "kombu", "Redis rescue transport (messages taken during a Redis outage are put back)",
    names=("._raw", "._do_restore_message", ".TRANSPORT_ALIASES", "._transport_cache",
           "._pool"),
    fallback="kombu's stock Redis transport is used: a message taken off its queue just as "
             "Redis goes away can be lost (its job stays pending)", policy=FALLBACK)
REDIS_GUARD = Internal(
    "kombu", "Redis envelope guard (unreadable broker messages are dead-lettered)",
    names=("BRPOP", ".Message"),
    fallback="the Redis channel is not guarded: a message whose envelope kombu cannot read "
             "raises into the worker's consumer loop", policy=FALLBACK)
SQS_PRIORITY_POLLING = Internal(
    "kombu", "SQS priority polling (urgent queues polled first)",
    names=("._schedule_queue", "._active_queues", "._new_queue", "._get_message_estimate",
           "._release_messages", "._message_to_python", "connection._callbacks"),
    fallback="kombu's own SQS polling loop is used (as with priority_polling off): queues "
             "are polled independently, not urgent first", policy=FALLBACK)

REDIS_EVENT_PROBE = Internal(
    "kombu", "task-sent events on demand (sent only while a monitor listens)",
    names=("._get_publish_topics",),
    fallback="task-sent events are sent for every job, as with PDFTASKS_TASK_EVENTS=always",
    policy=FALLBACK)

REDIS_QUEUE_KEYS = Internal(
    "kombu", "Redis keys of a queue's priority steps (the lost-job check reads them)",
    names=("._q_for_pri",),
    fallback="only each queue's own list is read: a job whose message waits on a priority "
             "step's list can be taken for lost", policy=FALLBACK)

INTERNALS = (REDIS_RESCUE, REDIS_GUARD, SQS_PRIORITY_POLLING, REDIS_EVENT_PROBE,
             REDIS_QUEUE_KEYS)
PRIVATE_NAMES = tuple(name for internal in INTERNALS for name in internal.names)


def supported(internal: Internal) -> bool:
    """Whether ``internal`` may be used with the installed kombu (see ``compat.check``)."""
    return check(internal, VERSION, TESTED)


# REDIS_RESCUE


def raw_payload(message: Any) -> Any:
    """The payload of a message of a virtual transport as it came off the queue (what kombu
    keeps in its unacked hash)."""
    return message._raw


def restore_message(channel: Any, payload: Any, exchange: str, routing_key: str,
                    pipe: Any) -> None:
    """Queue the commands that put ``payload`` back on the queues ``exchange`` and
    ``routing_key`` route to (marked redelivered) on the Redis pipeline ``pipe``."""
    channel._do_restore_message(payload, exchange, routing_key, pipe)


def redis_pool_made(channel: Any) -> bool:
    """Whether a kombu Redis channel has made its connection pool (it makes it on first
    use, from its connection's parameters)."""
    return channel._pool is not None


def use_transport(scheme: str, target: str) -> None:
    """Resolve the transport name ``scheme`` (a URL scheme) to ``target`` (``module:Class``)
    in this process, also if kombu resolved it before."""
    from kombu import transport

    transport.TRANSPORT_ALIASES[scheme] = target
    transport._transport_cache.pop(scheme, None)


# REDIS_GUARD


def redis_reader(channel: Any) -> Any:
    """The function a kombu Redis channel reads a message with (its ``BRPOP`` handler), or
    None."""
    handlers = getattr(channel, "handlers", None)
    return handlers.get("BRPOP") if isinstance(handlers, dict) else None


def set_redis_reader(channel: Any, read: Any) -> None:
    channel.handlers["BRPOP"] = read


def redis_message_class(channel: Any) -> Any:
    """The class a kombu Redis channel builds its messages with, or None."""
    return getattr(channel, "Message", None)


def set_redis_message_class(channel: Any, cls: type) -> None:
    channel.Message = cls


# REDIS_EVENT_PROBE


def fanout_listeners(channel: Any, exchange: str, routing_key: str) -> int:
    """How many subscribers a fanout message of ``exchange`` with ``routing_key`` would
    reach on ``channel``, a kombu Redis channel.

    One ``PUBLISH`` of an empty message on the message's own topic: Redis answers with the
    number of subscribers it reached, and kombu's subscribers skip an empty message
    (``_receive_one``: ``if payload['data']``), so no monitor ever sees it.
    """
    topics = channel._get_publish_topics(exchange, routing_key)  # where kombu publishes it
    with channel.conn_or_acquire() as client:
        return sum(int(client.publish(topic, b"")) for topic in topics)


# SQS_PRIORITY_POLLING


def _sqs_channel_class() -> type:
    from kombu.transport.SQS import Channel

    class SQSChannel(Channel):
        """kombu's SQS channel, with the internals pdftasks' priority polling uses under
        names of their own. Subclasses override ``poll_queue`` (kombu's ``_schedule_queue``:
        one step of its polling loop for a queue)."""

        def _schedule_queue(self, queue: str) -> None:
            self.poll_queue(queue)

        def poll_queue(self, queue: str) -> None:
            """kombu's own polling step for ``queue``."""
            Channel._schedule_queue(self, queue)

        @property
        def consumed_queues(self) -> list[str]:
            """The queues this channel consumes from, in the order they were added (live)."""
            return self._active_queues

        def queue_url(self, queue: str) -> str:
            """The URL of ``queue`` (created if missing)."""
            return self._new_queue(queue)  # type: ignore[no-any-return]

        def receive_estimate(self) -> int:
            """How many messages to ask for: what the prefetch limit allows (1-10)."""
            return self._get_message_estimate()  # type: ignore[no-any-return]

        def release_received(self, q_url: str, queue: str, messages: list[Any]) -> None:
            """Make received, undelivered messages visible again at once."""
            self._release_messages(q_url, queue, messages)

        def received_to_message(self, message: Any, queue: str, q_url: str) -> Any:
            """The kombu message of a received SQS message."""
            return self._message_to_python(message, queue, q_url)

        def consumer_callback(self, queue: str) -> Any:
            """The callback of the consumer of ``queue`` on this connection, or None."""
            return self.connection._callbacks.get(queue)

    return SQSChannel


def __getattr__(name: str) -> Any:
    # ``SQSChannel`` is built on first use: kombu's SQS transport needs boto3 (sqs extra).
    if name == "SQSChannel":
        cls = globals()["SQSChannel"] = _sqs_channel_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# REDIS_QUEUE_KEYS


def queue_keys(channel: Any, queue: str) -> list[str]:
    """The Redis lists a queue's messages wait on: its own and one per priority step."""
    if not supported(REDIS_QUEUE_KEYS):
        return [queue]
    steps = [p for p in getattr(channel, "priority_steps", [0]) if p]
    return [queue, *(channel._q_for_pri(queue, p) for p in steps)]
