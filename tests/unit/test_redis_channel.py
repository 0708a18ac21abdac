"""Unit tests (a real Redis on the test port, no worker): the Redis channel of
``pdftasks.brokers.redis`` when its connection was released during an outage."""

from __future__ import annotations

import time

import pytest
import redis
from kombu import Connection

from pdftasks.brokers.redis import Transport


def test_closing_after_the_connection_was_released_does_not_stop_the_worker(
        redis_url) -> None:
    # Given a channel whose kombu connection was released (what Celery does when the
    # broker goes away) before its pool was made
    conn = Connection(redis_url, transport=Transport)
    channel = conn.default_channel
    channel._pool = None
    channel._commands_client = None
    channel.connection.client = None
    # Then asking for a client is a connection error (ignored by Celery while closing),
    # not the AttributeError that ended the worker
    with pytest.raises(redis.ConnectionError), channel.conn_or_acquire():
        pass
    # And with a client already made, that client serves (to restore unacked messages)
    shared = redis.Redis.from_url(redis_url)
    channel._commands_client = shared
    with channel.conn_or_acquire() as client:
        assert client is shared and client.ping()


def test_an_acknowledgement_in_an_event_loop_is_written_with_the_next_command(
        redis_url, redis_client) -> None:
    # Given a channel of a worker's event loop (the transport defers acknowledgements)
    # with three messages taken from a queue
    conn = Connection(redis_url, transport=Transport)
    channel = conn.default_channel
    conn.transport.defers_acks = True
    queue = "deferred-acks"
    channel.queue_declare(queue)
    channel.basic_qos(prefetch_size=0, prefetch_count=1, apply_global=False)
    for i in range(3):
        channel.basic_publish(channel.prepare_message(f"m{i}"), exchange="", routing_key=queue)
    first = channel.basic_get(queue)
    tags = lambda: {t.decode() for t in redis_client.hkeys("unacked")}  # noqa: E731
    assert tags() == {first.delivery_tag} and not channel.qos.can_consume()
    # When it is acknowledged: its prefetch slot is free at once, its record still there
    first.ack()
    assert channel.qos.can_consume()
    assert tags() == {first.delivery_tag} and channel.qos.unwritten_acks == [first.delivery_tag]
    # Then the next message's unacked record removes it in the same round trip
    second = channel.basic_get(queue)
    assert tags() == {second.delivery_tag} and channel.qos.unwritten_acks == []
    assert redis_client.zrange("unacked_index", 0, -1) == [second.delivery_tag.encode()]
    # And with no next message, the event loop's timer (flush_acks) writes it once it is
    # old enough (not before: the next message may still come), or closing does
    second.ack()
    conn.transport.flush_acks(older_than=60)
    assert tags() == {second.delivery_tag}
    conn.transport.flush_acks(older_than=0.05)
    assert tags() == {second.delivery_tag}
    time.sleep(0.06)
    conn.transport.flush_acks(older_than=0.05)
    assert tags() == set()
    third = channel.basic_get(queue)
    third.ack()
    assert tags() == {third.delivery_tag}
    channel.close()
    assert tags() == set() and redis_client.zcard("unacked_index") == 0
    conn.release()


def test_outside_an_event_loop_an_acknowledgement_is_written_at_once(
        redis_url, redis_client) -> None:
    conn = Connection(redis_url, transport=Transport)
    channel = conn.default_channel
    assert conn.transport.defers_acks is False
    channel.queue_declare("plain-acks")
    channel.basic_publish(channel.prepare_message("m"), exchange="", routing_key="plain-acks")
    message = channel.basic_get("plain-acks")
    assert redis_client.hlen("unacked") == 1
    message.ack()
    assert redis_client.hlen("unacked") == 0 and channel.qos.unwritten_acks == []
    conn.release()


def _flush_timers(hub) -> list:
    """The event loop's pending acknowledgement-flush timers."""
    return [s.entry for s in hub.timer.queue if not s.entry.canceled
            and getattr(s.entry.fun, "__name__", "") == "_ack_timer"]


def test_the_acknowledgement_timer_runs_only_while_one_is_unwritten(
        redis_url, redis_client) -> None:
    from kombu.asynchronous import Hub

    # Given a channel registered with a worker's event loop
    conn = Connection(redis_url, transport=Transport)
    channel = conn.default_channel
    hub = Hub()
    conn.transport.register_with_event_loop(conn.connection, hub)
    queue = "timer-acks"
    channel.queue_declare(queue)
    channel.basic_publish(channel.prepare_message("m"), exchange="", routing_key=queue)
    # Then with nothing to write, no flush timer wakes the (idle) loop
    assert _flush_timers(hub) == []
    message = channel.basic_get(queue)
    assert redis_client.hlen("unacked") == 1
    # When the message is acknowledged: one timer, armed once for many acknowledgements
    message.ack()
    assert len(_flush_timers(hub)) == 1 and redis_client.hlen("unacked") == 1
    conn.transport.arm_ack_flush()
    assert len(_flush_timers(hub)) == 1
    # Then once it is due it writes the acknowledgement and is not armed again
    deadline = time.monotonic() + 5
    while redis_client.hlen("unacked") and time.monotonic() < deadline:
        hub.fire_timers(propagate=(Exception,))
        time.sleep(0.01)
    assert redis_client.hlen("unacked") == 0 and channel.qos.unwritten_acks == []
    assert _flush_timers(hub) == []
    hub.close()
    conn.release()
