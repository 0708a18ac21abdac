"""Unit tests (a real Redis on the test port, no worker): the Redis channel of
``pdftasks.brokers.redis`` when its connection was released during an outage."""

from __future__ import annotations

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
