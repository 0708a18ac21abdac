"""The worker's guard on kombu's Redis channel: a broker message whose envelope kombu cannot
read (not JSON, no properties, compressed: a decompression bomb) is handed to a callback
(``pdftasks.worker.guard.GuardedConsumer`` dead-letters it) instead of raising into the
worker's event loop.

Kept apart from ``pdftasks.brokers.redis`` (the rescue transport), which needs the
``redis`` package: this module does not, and every worker's consumer imports it. Uses kombu
internals through ``pdftasks.compat.kombu`` (``REDIS_GUARD``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import kombu

from pdftasks.limits import MAX_ID

log = logging.getLogger(__name__)


class BrokenEnvelopeError(Exception):
    """A broker message kombu cannot read; carries what was read of it."""

    def __init__(self, reason: str, payload: Any = None) -> None:
        super().__init__(reason)
        self.reason, self.payload = reason, payload


# Two helpers of pdftasks.worker.checks, repeated: brokers sit below the worker.


def _name(value: Any) -> str:
    return type(value).__name__


def _cut(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def envelope_problem(payload: Any) -> str | None:
    """Why kombu's Redis transport could not (or should not) read ``payload``, or None."""
    if not isinstance(payload, Mapping):
        return f"the broker message is a JSON {_name(payload)}, not an object"
    props = payload.get("properties")
    if not isinstance(props, Mapping):
        return "the broker message has no properties object"
    tag = props.get("delivery_tag")
    if not isinstance(tag, str) or not 0 < len(tag) <= MAX_ID:
        return "the broker message has no delivery tag"
    if props.get("body_encoding") not in (None, "base64", "utf-8"):
        return "the broker message's body encoding is not base64"
    if not isinstance(props.get("delivery_info"), Mapping | None):
        return "the broker message's delivery info is not an object"
    if not isinstance(payload.get("body"), str | None):
        return "the broker message's body is not a string"
    for key in ("content-type", "content-encoding"):
        if not isinstance(payload.get(key), str | None):
            return f"the broker message's {key} is not a string"
    headers = payload.get("headers")
    if not isinstance(headers, Mapping | None):
        return "the broker message's headers are not an object"
    if headers and headers.get("compression"):
        return "compressed messages are refused (pdftasks never compresses its messages)"
    return None


_guarded_classes: dict[type, type] = {}


def _guarded_message_class(base: type) -> type:
    if getattr(base, "pdftasks_guarded", False):
        return base
    if base not in _guarded_classes:

        class GuardedMessage(base):
            pdftasks_guarded = True

            def __init__(self, payload: Any, *args: Any, **kwargs: Any) -> None:
                problem = envelope_problem(payload)
                if problem:
                    raise BrokenEnvelopeError(problem, payload)
                try:
                    super().__init__(payload, *args, **kwargs)
                except Exception as exc:
                    raise BrokenEnvelopeError(
                        f"the broker message cannot be read ({_name(exc)}: "
                        f"{_cut(str(exc), 200)})", payload) from exc

        _guarded_classes[base] = GuardedMessage
    return _guarded_classes[base]


def guard_redis_channel(channel: Any, on_broken: Callable[[BaseException], None]) -> bool:
    """On a kombu Redis channel, dead-letter messages that cannot be read instead of raising
    into the worker's event loop: checks each envelope before kombu builds its message, and
    catches what reading one raises (the message is already off its queue). True if done.

    Uses two kombu internals (``pdftasks.compat.kombu.REDIS_GUARD``): the function that reads
    a message and the channel's message class. Not done, with a warning, on a kombu outside
    the versions this was written for, or when either is missing.
    """
    from pdftasks.compat import kombu as compat_kombu

    if getattr(getattr(channel, "connection", None), "driver_type", None) != "redis":
        return False
    if not compat_kombu.supported(compat_kombu.REDIS_GUARD):
        return False
    read = compat_kombu.redis_reader(channel)
    message_cls = compat_kombu.redis_message_class(channel)
    if not callable(read) or not isinstance(message_cls, type):
        log.warning("kombu %s: cannot guard the Redis channel against unreadable messages",
                    kombu.__version__)
        return False
    compat_kombu.set_redis_message_class(channel, _guarded_message_class(message_cls))
    if getattr(read, "pdftasks_guarded", False):
        return True
    from queue import Empty

    transport = channel.connection
    passthrough = (Empty, *transport.connection_errors, *transport.channel_errors)

    def guarded_read(*args: Any, **kwargs: Any) -> Any:
        try:
            return read(*args, **kwargs)
        except passthrough:
            raise
        except Exception as exc:
            try:
                on_broken(exc)
            except Exception:
                log.exception("could not dead-letter an unreadable broker message")
            return True

    guarded_read.pdftasks_guarded = True  # type: ignore[attr-defined]
    compat_kombu.set_redis_reader(channel, guarded_read)
    return True
