"""kombu's Redis transport, closed against one way of losing a job when Redis goes away.

kombu takes a message off its queue with ``BRPOP`` and only then records it as unacked
(``QoS.append``: a ZADD and an HSET in a second round trip). Late acknowledgement and the
visibility timeout bring back a message that is in that unacked record; a message whose
``BRPOP`` reply arrived but whose unacked record could not be written, because Redis stopped
or the connection broke in between, was in this process's memory only: kombu drops it with
the connection error, and the job stays *pending* for ever.

This transport writes such a message to a spool directory (transport option
``rescue_dir``; pdftasks sets ``<PDFTASKS_HOME>/rescued``) and pushes it back onto its queue
as soon as a channel to the same broker is open again (the worker reconnects on its own), so
the job is delivered again instead of lost. The spool is on disk so that a worker that exits
before the broker is back (Celery sometimes does on a lost connection) leaves the message to
the next worker started with the same home. If the unacked record was written after all (the
reply, not the command, was lost), the job is delivered twice; it runs at most once because
the worker claims it in the job store first (see ``pdftasks.worker.tasks``).

``install()`` makes ``redis://`` and ``rediss://`` URLs use it in this process (the URLs keep
their scheme, which tools such as Flower read); ``pdftasks.celery_app`` calls it for a Redis
broker. It relies on kombu internals (``pdftasks.compat.kombu.REDIS_RESCUE``): with a kombu
outside the tested versions, ``install()`` warns and leaves kombu's stock transport in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual

from pdftasks.compat import kombu as compat_kombu
from pdftasks.storage import process_alive, write_atomic

log = logging.getLogger(__name__)

#: Errors after which a command's fate on the server is unknown.
_LINK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
_TAKING = ".taking-"


def spool_dir(channel: kombu_redis.Channel) -> Path:
    """Where ``channel``'s rescued messages wait: one folder per broker (URL and database)."""
    client = channel.connection.client
    base = client.transport_options.get("rescue_dir") or (
        Path(tempfile.gettempdir()) / "pdftasks-rescued")
    broker = hashlib.sha256(client.as_uri(include_password=True).encode()).hexdigest()[:16]
    return Path(base) / broker


def rescue(channel: kombu_redis.Channel, payload: dict[str, Any], exchange: str,
           routing_key: str) -> Path:
    """Write a message to the spool (atomically) until it can be put back on its queue."""
    folder = spool_dir(channel)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.json"
    write_atomic(path, json.dumps({"payload": payload, "exchange": exchange,
                                   "routing_key": routing_key}).encode(), f".{path.name}.")
    return path


def _take(folder: Path) -> list[Path]:
    """Claim the spooled messages of ``folder`` for this process (rename, so two workers on
    one home never put back the same file), including claims of processes that died."""
    if not folder.is_dir():
        return []
    taken = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith("."):
            continue
        if _TAKING in name:
            pid = name.rsplit(_TAKING, 1)[1]
            if not pid.isdigit() or process_alive(int(pid)):
                continue
            name = name.rsplit(_TAKING, 1)[0]
        claimed = folder / f"{name}{_TAKING}{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            path.rename(claimed)
            taken.append(claimed)
    return taken


def _release(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.rename(path.with_name(path.name.rsplit(_TAKING, 1)[0]))


#: Seconds at most that an acknowledgement waits to be written to Redis (see ``QoS.ack``).
ACK_FLUSH_S = 0.2


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS with two changes:

    - A message taken while Redis goes away is spooled (``_rescue``, see the module).
    - In a worker's event loop, an acknowledgement frees its prefetch slot at once but its
      removal from the unacked record is written with the next Redis command of this QoS:
      the next message's unacked record (taken right after, when there is a backlog), or
      the event loop's timer once it is ``ACK_FLUSH_S / 2`` old (so at the latest
      ``ACK_FLUSH_S`` later; with a backlog the next message comes first and the timer
      writes nothing), and when the channel closes. The timer runs only while some
      acknowledgement is not written: an idle worker has none to wake up for. One
      round trip less per job in the worker's main process, and the next ``BRPOP`` is sent
      without waiting for one. A process killed in between leaves the record of a message
      whose job ended: it is delivered again after the visibility timeout and does nothing
      (a job that is final is not run again). Pipelines are not transactions (kombu's are):
      the commands of one are independent.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Delivery tags acknowledged here whose unacked record is not removed yet.
        self.unwritten_acks: list[str] = []
        #: ``time.monotonic()`` of the oldest of them.
        self.unwritten_since = 0.0

    def ack(self, delivery_tag: str) -> None:
        if not getattr(self.channel.connection, "defers_acks", False):
            super().ack(delivery_tag)
            return
        self._hold([delivery_tag])
        kombu_virtual.QoS.ack(self, delivery_tag)  # the prefetch slot, in memory

    def _hold(self, tags: list[str], first: bool = False) -> None:
        """Keep ``tags`` to write with the next command (``first``: before those held), and
        make sure the event loop's flush timer will write them otherwise."""
        if not tags:
            return
        if not self.unwritten_acks:
            self.unwritten_since = time.monotonic()
        if first:
            self.unwritten_acks[:0] = tags
        else:
            self.unwritten_acks.extend(tags)
        self.channel.connection.arm_ack_flush()

    @contextlib.contextmanager
    def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        if pipe:
            yield pipe
            return
        with self.channel.conn_or_acquire(client) as client:
            pipe = client.pipeline(transaction=False)
            tags, self.unwritten_acks = self.unwritten_acks, []
            for tag in tags:
                pipe.zrem(self.unacked_index_key, tag).hdel(self.unacked_key, tag)
            try:
                yield pipe
            except BaseException:
                self._hold(tags, first=True)  # not written: with the next command
                raise

    def flush_acks(self, older_than: float = 0.0) -> None:
        """Write the acknowledgements not written yet if the oldest is ``older_than``
        seconds old (best effort: one not written is delivered again after the visibility
        timeout and does nothing)."""
        if self.unwritten_acks and time.monotonic() - self.unwritten_since >= older_than:
            with self.pipe_or_acquire() as pipe:
                pipe.execute()

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except _LINK_ERRORS:
            self._rescue(message, delivery_tag)
            raise

    def _rescue(self, message: Any, delivery_tag: str) -> None:
        info = message.delivery_info
        job = message.properties.get("correlation_id") or delivery_tag
        try:
            path = rescue(self.channel, compat_kombu.raw_payload(message), info["exchange"],
                          info["routing_key"])
        except OSError as exc:
            log.error("broker connection lost while taking message %s, and it could not be "
                      "spooled (%s): its job stays pending until resubmitted", job, exc)
            return
        log.warning("broker connection lost while taking message %s: it will be put back "
                    "on %s when the broker is reachable again (spooled in %s)",
                    job, info["routing_key"], path)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._commands_client: Any = None
        super().__init__(*args, **kwargs)
        self.put_back_rescued()

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        # kombu makes a new Redis client for each command it sends outside BRPOP (the
        # unacked record of every message taken, every acknowledgement): about 70 us of
        # the worker's main process each, twice per job. One client on the channel's
        # connection pool serves them all (a client is safe to share; each command or
        # pipeline still takes a connection from the pool).
        if client:
            yield client
            return
        shared = self._commands_client
        if not compat_kombu.redis_pool_made(self) and \
                getattr(self.connection, "client", None) is None:
            # Closing after the connection was released (a broker outage): kombu restores
            # the unacknowledged messages now, and making a pool would raise AttributeError,
            # which stops the worker (celery/kombu#582). The client we have, or a connection
            # error that Celery ignores there (the visibility timeout restores them later).
            if shared is None:
                raise redis.ConnectionError("the broker connection is closed")
            yield shared
            return
        pool = self.pool
        if shared is None or shared.connection_pool is not pool:  # new pool: reconnected
            kwargs: dict[str, Any] = {"connection_pool": pool}
            provider = pool.connection_kwargs.get("credential_provider")
            if provider is not None:
                kwargs["credential_provider"] = provider
            shared = self._commands_client = self.Client(**kwargs)
        yield shared

    def close(self) -> None:
        qos = self.qos
        if qos.unwritten_acks and not self.closed:
            try:
                qos.flush_acks()
            except Exception:  # the broker is away: the visibility timeout restores them
                log.warning("could not write %d acknowledgement(s) before closing",
                            len(qos.unwritten_acks), exc_info=True)
        super().close()

    def put_back_rescued(self) -> int:
        """Push the spooled messages for this broker back on their queues; their number."""
        taken = _take(spool_dir(self))
        if not taken:
            return 0
        try:
            with self.conn_or_acquire() as client, client.pipeline() as pipe:
                for path in taken:
                    held = json.loads(path.read_text())
                    compat_kombu.restore_message(self, held["payload"], held["exchange"],
                                                 held["routing_key"], pipe)
                pipe.execute()
        except BaseException:
            _release(taken)
            raise
        for path in taken:
            path.unlink(missing_ok=True)
        log.warning("put %d message(s) taken during a broker outage back on their queues",
                    len(taken))
        return len(taken)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the ``Channel`` above."""

    Channel = Channel
    #: True while an event loop writes deferred acknowledgements (``QoS.ack``).
    defers_acks = False
    #: The event loop that does, and its pending flush timer (None: none pending).
    _loop: Any = None
    _ack_tref: Any = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        if self._ack_tref is not None:  # registered again after a reconnect
            self._ack_tref.cancel()
            self._ack_tref = None
        self._loop = loop
        self.defers_acks = True
        self.arm_ack_flush()  # acknowledgements left from before the reconnect, if any

    def arm_ack_flush(self) -> None:
        """Make sure the event loop's flush timer is pending if some acknowledgement is not
        written yet. A one-shot timer, armed again from ``_ack_timer`` while some remain:
        a repeating one woke an idle worker ten times a second for nothing."""
        if self._ack_tref is not None or self._loop is None:
            return
        if any(channel.qos.unwritten_acks for channel in list(self.channels)):
            self._ack_tref = self._loop.call_later(ACK_FLUSH_S / 2, self._ack_timer)

    def _ack_timer(self) -> None:
        # Every ACK_FLUSH_S / 2 while some are unwritten, those at least that old: at most
        # ACK_FLUSH_S late, and none written on their own while the next messages keep
        # coming (each message's unacked record writes them).
        self._ack_tref = None
        try:
            self.flush_acks(ACK_FLUSH_S / 2)
        finally:
            self.arm_ack_flush()

    def flush_acks(self, older_than: float = 0.0) -> None:
        for channel in list(self.channels):
            qos = channel.qos
            if not qos.unwritten_acks:
                continue
            try:
                qos.flush_acks(older_than)
            except _LINK_ERRORS:
                log.warning("could not write %d acknowledgement(s); they are written with "
                            "the next command (or the messages come back after the "
                            "visibility timeout and do nothing)", len(qos.unwritten_acks))


def install() -> None:
    """Resolve the ``redis`` and ``rediss`` transport names to ``Transport`` in this process.

    Only behaviour after a lost connection differs from kombu's own transport. (A
    ``broker_transport`` setting would do the same for Celery's connections but rename the
    URL scheme to the class path, which Flower cannot read.) Does nothing, with a warning,
    on a kombu outside the versions this was written for (``compat.kombu.REDIS_RESCUE``).
    """
    if not compat_kombu.supported(compat_kombu.REDIS_RESCUE):
        return
    for scheme in ("redis", "rediss"):
        compat_kombu.use_transport(scheme, f"{__name__}:Transport")
