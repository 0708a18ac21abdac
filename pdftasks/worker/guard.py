"""The worker's guard against poison messages.

Anything can sit on a pdftasks queue: a message from a client that bypassed every check,
broken JSON, pickle, a body nested 5,000 levels deep. Celery hands a job's decoded arguments
from the worker's main process to a pool process by pickling them, and lets most errors
raised while it takes a message in reach its consumer loop, which stops the whole worker
("Unrecoverable error"); the message goes back to its queue and stops the next worker too.

Three layers, each catching what the one below lets through:

- ``job_strategy``, the ``Strategy`` of ``generate_pdf`` (set in
  ``pdftasks.worker.tasks.register``):
  before Celery builds its request, checks the body's size, decodes it (the decoded body is
  cached on the message, so Celery does not decode it again), checks the headers and the
  arguments' shape and types, and the job's data with ``pdftasks.limits.check_data``. A bad
  job ends FAILED with the reason (its record created if missing), its message is
  acknowledged and never reaches a pool process. Other tasks get the generic checks.
- ``GuardedConsumer`` (Celery's ``worker_consumer``): the hooks for unknown tasks, invalid
  tasks, undecodable and unknown messages acknowledge the message and keep it in the job
  store's dead-letter list (``JobStore.dead_letter``) instead of requeueing or crashing;
  anything else raised while a message is taken in is caught, logged and dead-lettered.
- On the Redis transport, messages whose envelope kombu cannot read (not JSON, no
  properties, compressed: a decompression bomb) are dead-lettered instead of raising into
  the event loop (``guard_redis_channel``; kombu-internal, feature-checked).

Connection errors always go through: Celery reconnects on them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from typing import Any

import kombu
from celery.exceptions import InvalidTaskError
from celery.utils.time import maybe_iso8601
from celery.worker.consumer import Consumer
from celery.worker.strategy import default as default_strategy
from kombu.exceptions import ContentDisallowed, DecodeError

from pdftasks.errors import BrokerUnavailableError, InvalidDataError, InvalidJobError
from pdftasks.limits import DataLimits, check_data
from pdftasks.models import JobPriority, JobStatus
from pdftasks.stores import DEAD_LETTER_EXCERPT, Job

log = logging.getLogger(__name__)

#: ``generate_pdf``'s parameters, in order, and those without a default.
ARG_NAMES = ("template", "data", "output_filename", "priority", "css_file", "max_retries",
             "metadata")
REQUIRED = ("template", "data", "output_filename")
#: Longest job id (a message's ``id`` header; part of job store keys), in characters.
MAX_ID = 255
#: Longest template, CSS or output file name, in characters.
MAX_NAME = 1024
#: Most retries a message may ask for.
MAX_RETRIES = 1000
#: Bytes a message body may hold beyond the job's data and metadata (other arguments, JSON).
BODY_SLACK = 64 * 1024
#: Most values in a message's headers or properties (they hold a few dozen).
MAX_ENVELOPE_VALUES = 10_000

_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
#: Types of the headers that Celery's main process reads (others are only checked for size).
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "id": _OPT_STR, "task": _OPT_STR, "shadow": _OPT_STR, "lang": _OPT_STR, "root_id": _OPT_STR,
    "parent_id": _OPT_STR, "group": _OPT_STR, "origin": _OPT_STR, "argsrepr": _OPT_STR,
    "kwargsrepr": _OPT_STR, "eta": _OPT_STR, "expires": _OPT_STR, "retries": _OPT_INT,
    "group_index": _OPT_INT, "replaced_task_nesting": _OPT_INT,
    "ignore_result": (bool, type(None)), "timelimit": (list, tuple, type(None)),
    "stamps": (dict, type(None)), "stamped_headers": (list, type(None)),
}
_PROPERTY_TYPES: dict[str, tuple[type, ...]] = {
    "correlation_id": _OPT_STR, "reply_to": _OPT_STR, "priority": _OPT_INT,
    "delivery_info": (dict, type(None)),
}
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxstring, _repr.maxother = 6, 40, 40, 400, 200


class InvalidMessageError(InvalidJobError):
    """A queued message is not a valid job message (undecodable body, wrong content type,
    wrong arguments, bad headers); found by the worker before any process ran it."""


class BrokenEnvelopeError(Exception):
    """A broker message kombu cannot read; carries what was read of it."""

    def __init__(self, reason: str, payload: Any = None) -> None:
        super().__init__(reason)
        self.reason, self.payload = reason, payload


# Checks: pure functions of a kombu message, raising InvalidJobError subclasses.


def _name(value: Any) -> str:
    return type(value).__name__


def _cut(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def check_bounded(value: Any, what: str, limits: DataLimits,
                  max_values: int = MAX_ENVELOPE_VALUES) -> None:
    """Check a JSON-like value of a message (headers, properties, options) without
    recursion: nesting within ``limits.max_depth``, at most ``max_values`` values, strings
    within ``limits.max_string`` and ``limits.max_bytes`` characters in all."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = chars = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > max_values:
            raise InvalidMessageError(f"the message's {what} hold more than {max_values} values")
        if isinstance(item, str):
            chars += len(item)
            if len(item) > limits.max_string or chars > limits.max_bytes:
                raise InvalidMessageError(f"the message's {what} hold too long a string")
        elif isinstance(item, Mapping | list | tuple):
            if depth > limits.max_depth:
                raise InvalidMessageError(
                    f"the message's {what} are nested deeper than {limits.max_depth} levels")
            if isinstance(item, Mapping):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise InvalidMessageError(f"the message's {what} have a non-string key")
                    stack.append((key, depth + 1))
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidMessageError(f"the message's {what} hold {item}")
        elif not isinstance(item, int | float | bool | type(None)):
            raise InvalidMessageError(f"the message's {what} hold a {_name(item)}")


def _check_typed(values: Any, types: dict[str, tuple[type, ...]], what: str,
                 limits: DataLimits) -> None:
    if not isinstance(values, Mapping):
        raise InvalidMessageError(f"the message's {what} are a {_name(values)}, not an object")
    for key, allowed in types.items():
        value = values.get(key)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise InvalidMessageError(
                f"the message's {what[:-1]} {key!r} is a {_name(value)}")
    check_bounded(values, what, limits)


def job_id_of(message: Any, body: Any = None) -> str | None:
    """The job id of ``message`` (its ``id`` header; in a protocol 1 body, its ``id``), or
    None when it has none that can name a job record."""
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    job_id = headers.get("id")
    if job_id is None and isinstance(body, Mapping):
        job_id = body.get("id")
    return valid_id(job_id)


def valid_id(job_id: Any) -> str | None:
    """``job_id`` if it can name a job record (printable text, 1-``MAX_ID`` characters)."""
    if isinstance(job_id, str) and 0 < len(job_id) <= MAX_ID and job_id.isprintable():
        return job_id
    return None


def body_limit(limits: DataLimits) -> int:
    """Largest message body accepted: data and metadata at their limit, and some more."""
    return 2 * limits.max_bytes + BODY_SLACK


def check_headers(headers: Any, limits: DataLimits) -> None:
    """Types and bounds of the headers Celery's main process reads (``timelimit``,
    ``retries``, ``eta``, ``expires``, ids, ...); every header bounded."""
    _check_typed(headers, _HEADER_TYPES, "headers", limits)
    timelimit = headers.get("timelimit")
    if timelimit is not None and (len(timelimit) != 2 or not all(
            t is None or isinstance(t, int | float) and not isinstance(t, bool)
            and math.isfinite(t) and 0 <= t <= 1e7 for t in timelimit)):
        raise InvalidMessageError("the message's 'timelimit' header must be [hard, soft] "
                                  "in seconds (or nulls)")
    retries = headers.get("retries")
    if retries is not None and not 0 <= retries <= 10_000:
        raise InvalidMessageError(f"the message's 'retries' header is {retries}")
    for key in ("eta", "expires"):
        if headers.get(key) is not None:
            try:
                maybe_iso8601(headers[key])
            except Exception as exc:
                raise InvalidMessageError(
                    f"the message's {key!r} header is not an ISO 8601 time: "
                    f"{_cut(str(exc), 200)}") from None


def check_envelope(message: Any, body: Any, limits: DataLimits) -> Any:
    """The checks every task's message gets; return its decoded body.

    ``body`` is what Celery passes a strategy: None, or an already decoded protocol 1
    body. The body is decoded with the message's own ``decode`` (content type checked
    against the accepted ones), which caches it for Celery.
    """
    headers = message.headers
    check_headers(headers, limits)
    if body is None and (not isinstance(headers.get("id"), str) or
                         not isinstance(headers.get("task"), str)):
        raise InvalidMessageError("the message has no 'id' and 'task' headers")
    if job_id_of(message, body) is None:
        raise InvalidMessageError(
            f"the message's id must be printable text of 1-{MAX_ID} characters")
    _check_typed(message.properties, _PROPERTY_TYPES, "properties", limits)
    info = message.delivery_info
    if info is not None and not isinstance(info, Mapping):
        raise InvalidMessageError(f"the message's delivery info is a {_name(info)}")
    raw = message.body
    size = len(raw) if isinstance(raw, bytes | bytearray | str) else None
    if size is None:
        raise InvalidMessageError(f"the message body is a {_name(raw)}")
    if size > body_limit(limits):
        raise InvalidMessageError(
            f"the message body is {size} bytes, above the limit of {body_limit(limits)}")
    payload = body if body is not None else decode_body(message)
    if isinstance(payload, Mapping):
        # Protocol 1 and hybrid bodies: Celery takes the headers it lacks from the body.
        effective = {k: v for k, v in payload.items() if k not in ("args", "kwargs")}
        effective.update(headers)
        check_headers(effective, limits)
    return payload


def decode_body(message: Any) -> Any:
    """``message.decode()``, whose failures (content type, syntax, depth, size) all raise
    ``InvalidMessageError``."""
    try:
        return message.decode()
    except ContentDisallowed:
        raise InvalidMessageError(
            f"content type {_cut(repr(message.content_type), 100)} is not accepted "
            "(job messages are JSON)") from None
    except Exception as exc:
        cause = exc.__context__ if isinstance(exc, DecodeError) else exc  # kombu wraps
        if isinstance(cause, RecursionError):
            raise InvalidMessageError(
                "the message body is nested too deeply to decode") from None
        if isinstance(cause, MemoryError):
            raise InvalidMessageError("the message body is too large to decode") from None
        raise InvalidMessageError(f"the message body cannot be decoded ({_name(exc)}: "
                                  f"{_cut(str(exc), 200)})") from None


def split_body(payload: Any) -> tuple[Any, Any, Any]:
    """``(args, kwargs, options)`` of a decoded body: Celery protocol 2 ``[args, kwargs,
    options]``, or an object with ``args`` and ``kwargs`` (protocol 1 and hybrid)."""
    if isinstance(payload, list | tuple):
        if len(payload) != 3:
            raise InvalidMessageError(
                f"the message body must be [args, kwargs, options], not a list of "
                f"{len(payload)} items")
        args, kwargs, options = payload
    elif isinstance(payload, Mapping):
        args, kwargs = payload.get("args", ()), payload.get("kwargs", {})
        options = {k: v for k, v in payload.items() if k not in ("args", "kwargs")}
    else:
        raise InvalidMessageError(
            f"the message body must be [args, kwargs, options], not a {_name(payload)}")
    if not isinstance(args, list | tuple):
        raise InvalidMessageError(f"the message's args are a {_name(args)}, not a list")
    if not isinstance(kwargs, Mapping):
        raise InvalidMessageError(f"the message's kwargs are a {_name(kwargs)}, not an object")
    if options is not None and not isinstance(options, Mapping):
        raise InvalidMessageError(
            f"the message's options are a {_name(options)}, not an object")
    return args, kwargs, options


def bind_arguments(args: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``generate_pdf``'s arguments by name, as Python would bind them; no unknown ones."""
    if len(args) > len(ARG_NAMES):
        raise InvalidMessageError(
            f"generate_pdf takes at most {len(ARG_NAMES)} arguments, got {len(args)}")
    bound = dict(zip(ARG_NAMES, args, strict=False))
    for key in kwargs:
        if not isinstance(key, str) or key not in ARG_NAMES:
            raise InvalidMessageError(
                f"generate_pdf got an unknown argument {_cut(repr(key), 80)}")
        if key in bound:
            raise InvalidMessageError(f"generate_pdf got two values for argument {key!r}")
    bound.update(kwargs)
    missing = [name for name in REQUIRED if name not in bound]
    if missing:
        raise InvalidMessageError(f"generate_pdf is missing arguments: {', '.join(missing)}")
    return bound


def _check_name(bound: Mapping[str, Any], key: str, optional: bool = False) -> None:
    value = bound.get(key)
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidMessageError(f"{key} must be a string, not {_name(value)}")
    if not 0 < len(value) <= MAX_NAME:
        raise InvalidMessageError(f"{key} must be 1-{MAX_NAME} characters long")


_DATA_WORD = re.compile(r"\bdata\b")


def check_arguments(bound: Mapping[str, Any], limits: DataLimits) -> None:
    """Types of ``generate_pdf``'s arguments; the data (and metadata) within ``limits``."""
    check_data(bound["data"], limits)
    _check_name(bound, "template")
    _check_name(bound, "output_filename")
    _check_name(bound, "css_file", optional=True)
    priority = bound.get("priority")
    if isinstance(priority, str) and len(priority) > 32:
        raise InvalidMessageError("priority must be urgent, high, normal or low (or 0-3)")
    if priority is not None:
        JobPriority.parse(priority)
    retries = bound.get("max_retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)
                                or not 0 <= retries <= MAX_RETRIES):
        raise InvalidMessageError(f"max_retries must be a whole number from 0 to {MAX_RETRIES}")
    metadata = bound.get("metadata")
    if metadata:
        try:
            check_data(metadata, limits)
        except InvalidDataError as exc:
            raise InvalidDataError(_DATA_WORD.sub("metadata", str(exc))) from None
    elif metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidDataError(f"metadata must be a JSON object (dict), not {_name(metadata)}")


def check_job_message(message: Any, body: Any, limits: DataLimits,
                      seen: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a ``generate_pdf`` message; return its arguments by name.

    Raises ``InvalidJobError`` (``InvalidMessageError``, ``InvalidDataError``,
    ``InvalidPriorityError``). ``seen`` receives the arguments as soon as they are known,
    for the record of a job that fails the later checks.
    """
    payload = check_envelope(message, body, limits)
    args, kwargs, options = split_body(payload)
    bound = bind_arguments(args, kwargs)
    if seen is not None:
        seen["bound"] = bound
    check_arguments(bound, limits)
    if options:
        check_bounded(options, "options", limits)
    return bound


def check_task_message(message: Any, body: Any, limits: DataLimits) -> None:
    """Check the message of any other task: envelope, size, a decodable bounded body."""
    payload = check_envelope(message, body, limits)
    args, kwargs, options = split_body(payload)
    check_bounded([args, kwargs, options], "arguments", limits,
                  max_values=limits.max_bytes // 2 + 1)


# What a refused message leaves behind.


def excerpt(value: Any) -> str | None:
    """At most ``DEAD_LETTER_EXCERPT`` characters of a message part, never all of it."""
    if value is None:
        return None
    try:
        if isinstance(value, bytes | bytearray):
            text = bytes(value[:DEAD_LETTER_EXCERPT]).decode("utf-8", "replace")
        elif isinstance(value, str):
            text = value[:DEAD_LETTER_EXCERPT]
        else:
            text = _repr.repr(value)
    except Exception:
        text = f"<{_name(value)}>"
    return text[:DEAD_LETTER_EXCERPT]


def message_info(message: Any) -> dict[str, Any]:
    """Where ``message`` came from and excerpts of it, for a dead letter."""
    info: dict[str, Any] = {"worker_pid": os.getpid()}
    try:
        headers = message.headers if isinstance(message.headers, Mapping) else {}
        delivery = message.delivery_info if isinstance(message.delivery_info, Mapping) else {}
        info.update(
            queue=excerpt(delivery.get("routing_key")), exchange=excerpt(delivery.get("exchange")),
            task=excerpt(headers.get("task")), message_id=excerpt(headers.get("id")),
            content_type=excerpt(message.content_type),
            content_encoding=excerpt(message.content_encoding),
            body=excerpt(message.body), headers=excerpt(message.headers))
    except Exception as exc:  # a message too broken to describe
        info["error"] = excerpt(f"{_name(exc)}: {exc}")
    return info


def envelope_info(exc: BaseException) -> dict[str, Any]:
    """What a broken broker envelope (as raised while kombu read it) shows of itself."""
    info: dict[str, Any] = {"worker_pid": os.getpid()}
    if isinstance(exc, BrokenEnvelopeError) and isinstance(exc.payload, Mapping):
        payload = exc.payload
        props = payload.get("properties")
        delivery = props.get("delivery_info") if isinstance(props, Mapping) else None
        headers = payload.get("headers")
        if isinstance(delivery, Mapping):
            info.update(queue=excerpt(delivery.get("routing_key")),
                        exchange=excerpt(delivery.get("exchange")))
        if isinstance(headers, Mapping):
            info.update(task=excerpt(headers.get("task")), message_id=excerpt(headers.get("id")))
        info.update(content_type=excerpt(payload.get("content-type")),
                    body=excerpt(payload.get("body")), headers=excerpt(headers))
    elif isinstance(exc, BrokenEnvelopeError):
        info["envelope"] = excerpt(exc.payload)
    elif isinstance(exc, json.JSONDecodeError):
        info["envelope"] = excerpt(exc.doc)
    elif isinstance(exc, UnicodeDecodeError):
        info["envelope"] = excerpt(exc.object)
    return info


def _ack(message: Any, errors: tuple[type[BaseException], ...]) -> None:
    try:
        if not message.acknowledged:
            message.ack_log_error(log, errors)
    except errors:
        raise
    except Exception:
        log.exception("could not acknowledge a refused message")


def dead_letter(app: Any, reason: str, info: dict[str, Any]) -> None:
    """Keep a refused message's reason and excerpts in the job store; never raises."""
    from pdftasks.worker.tasks import job_store

    log.error("message refused and dead-lettered: %s (queue %s, task %s, id %s)", reason,
              info.get("queue"), info.get("task"), info.get("message_id"))
    try:
        job_store(app).dead_letter(reason, info)
    except Exception:
        log.exception("could not dead-letter a refused message: %s", reason)


def record_failure(app: Any, job_id: str, error: str, bound: Mapping[str, Any] | None,
                   create: bool) -> str:
    """Fail job ``job_id``'s record: ``"failed"``; ``"created"`` when there was none and
    ``create`` (a FAILED record from what ``bound`` shows); ``"final"`` when it had ended;
    ``"absent"``. Raises ``BrokerUnavailableError`` when the job store is unreachable."""
    from pdftasks.worker.tasks import _RUNNABLE, job_store

    store = job_store(app)
    now = dt.datetime.now(dt.UTC)
    if store.transition(job_id, JobStatus.FAILED, _RUNNABLE, error=error, completed_at=now):
        return "failed"
    if store.get(job_id) is not None:
        return "final"
    if not create:
        return "absent"
    bound = bound or {}

    def name(key: str) -> str | None:
        value = bound.get(key)
        return value[:MAX_NAME] if isinstance(value, str) else None

    try:
        priority = JobPriority.parse(bound.get("priority", JobPriority.NORMAL))
    except Exception:
        priority = JobPriority.NORMAL
    store.create(Job(job_id=job_id, template=name("template") or "", data={},
                     output_filename=name("output_filename") or "", css_file=name("css_file"),
                     status=JobStatus.FAILED, priority=priority, created_at=now,
                     completed_at=now, error=error, max_retries=0))
    return "created"


class Refuser:
    """Ends refused messages: fails the job record when there is one to write (creating
    it for ``generate_pdf``), dead-letters the rest, and acknowledges the message."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.app = consumer.app
        self.errors = tuple(consumer.connection_errors) + tuple(consumer.channel_errors)

    def refuse(self, message: Any, exc: BaseException, body: Any = None,
               bound: Mapping[str, Any] | None = None, create: bool = False) -> None:
        """Never raises, except the connection errors Celery recovers from."""
        try:
            self._refuse(message, exc, body, bound, create)
        except self.errors:
            raise
        except Exception:
            log.exception("could not end a refused message properly")
            _ack(message, self.errors)

    def _refuse(self, message: Any, exc: BaseException, body: Any,
                bound: Mapping[str, Any] | None, create: bool) -> None:
        if self.settle(job_id_of(message, body), exc, bound, create,
                       lambda: message_info(message)):
            _ack(message, self.errors)
        else:  # not the message's fault: it comes back once the job store does
            message.reject_log_error(log, self.errors, requeue=True)

    def settle(self, job_id: str | None, exc: BaseException,
               bound: Mapping[str, Any] | None, create: bool,
               info: Callable[[], dict[str, Any]]) -> bool:
        """Fail job ``job_id``'s record (see ``record_failure``) and tell listeners and
        Celery; dead-letter what no record took (``info()`` describes it). False, with
        nothing done, when the job store cannot be reached."""
        from pdftasks.worker.tasks import describe, emit

        error = _cut(describe(exc))
        outcome = "absent"
        if job_id is not None:
            try:
                outcome = record_failure(self.app, job_id, error, bound, create)
            except BrokerUnavailableError as store_exc:
                log.warning("job %s refused (%s), but %s", job_id, error, store_exc)
                return False
            except Exception:
                log.exception("could not record the failure of job %s", job_id)
        if job_id is not None and outcome in ("failed", "created"):
            log.error("job %s failed before it reached a worker process: %s", job_id, error)
            emit(self.app, "failed", job_id, error)
        if job_id is not None and outcome != "final":
            self._tell_celery(job_id, exc, error)
        if outcome != "failed":
            details = info()
            if outcome == "created":
                details["job_record"] = "created FAILED"
            dead_letter(self.app, error, details)
        return True

    def _tell_celery(self, job_id: str, exc: BaseException, error: str) -> None:
        try:
            self.app.backend.mark_as_failure(job_id, exc)
        except Exception:
            log.warning("could not store the failure of %s in the result backend", job_id,
                        exc_info=True)
        dispatcher = getattr(self.consumer, "event_dispatcher", None)
        try:
            if dispatcher is not None and dispatcher.enabled:
                dispatcher.send("task-failed", uuid=job_id, exception=error)
        except Exception:
            log.warning("could not send the task-failed event of %s", job_id, exc_info=True)


# Strategies.


def cap_time_limits(message: Any, body: Any, limits: tuple[float, float]) -> None:
    """Hold the message's ``timelimit`` ([hard, soft], which Celery obeys) to the worker's
    own limits: a client, or a message that bypassed every client, can ask for less time
    but not switch the worker's limits off."""
    holder = body if isinstance(body, dict) and "timelimit" in body else message.headers
    if not isinstance(holder, dict):
        return
    asked = holder.get("timelimit") or (None, None)
    holder["timelimit"] = [limit if t is None else min(t, limit)
                           for t, limit in zip(asked, limits, strict=True)]


class GuardedStrategy:
    """A task's strategy behind ``check``; what fails it is refused, not run."""

    pdftasks_guarded = True

    def __init__(self, task: Any, app: Any, consumer: Any, handler: Callable[..., Any],
                 is_job: bool) -> None:
        from pdftasks.worker.tasks import app_settings

        self.task, self.handler, self.is_job = task, handler, is_job
        s = app_settings(app)
        self.limits = DataLimits.from_settings(s)
        #: The worker's own time limits: a message may ask for shorter ones, never longer.
        from pdftasks.celery_app import celery_soft_time_limit

        self.time_limits = (s.hard_time_limit_s, celery_soft_time_limit(s))
        self.refuser = Refuser(consumer)
        self.errors = self.refuser.errors

    def __call__(self, message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        seen: dict[str, Any] = {}
        try:
            if self.is_job:
                check_job_message(message, body, self.limits, seen)
            else:
                check_task_message(message, body, self.limits)
        except InvalidJobError as exc:
            return self.refuser.refuse(message, exc, body, seen.get("bound"), self.is_job)
        except self.errors:
            raise
        except Exception as exc:  # the guard's own failure: refuse, never crash
            log.exception("the message guard failed on a %s message", self.task.name)
            return self.refuser.refuse(
                message, InvalidMessageError(f"the worker could not check this message "
                                             f"({_name(exc)})"), body, seen.get("bound"),
                self.is_job)
        cap_time_limits(message, body, self.time_limits)
        try:
            return self.handler(message, body, *args, **kwargs)
        except (InvalidTaskError, ContentDisallowed, DecodeError, *self.errors):
            raise  # Celery's own handling: GuardedConsumer's hooks
        except Exception as exc:
            log.exception("could not hand a %s message to a worker process", self.task.name)
            return self.refuser.refuse(
                message, InvalidMessageError(f"the worker could not accept this job "
                                             f"({_name(exc)}: {_cut(str(exc), 200)})"),
                body, seen.get("bound"), self.is_job)


def job_strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> GuardedStrategy:
    """``Task.Strategy`` of ``generate_pdf``: Celery's default strategy behind the job
    checks (``check_job_message``)."""
    return GuardedStrategy(task, app, consumer,
                           default_strategy(task, app, consumer, **kwargs), is_job=True)


# The consumer.


class GuardedConsumer(Consumer):
    """Celery's consumer, whose handling of bad messages never stops the worker and never
    sends a message back to its queue for ever (``worker_consumer``)."""

    def _refuser(self) -> Refuser:
        return Refuser(self)

    def _refuse(self, message: Any, reason: str, exc: BaseException | None = None) -> None:
        self._refuser().refuse(message, exc or InvalidMessageError(reason))

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._refuse(message, "the message is not a Celery task message (no 'task' header)")

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        name = message.headers.get("task") if isinstance(message.headers, Mapping) else None
        self._refuse(message, f"unknown task {_cut(repr(name), 200)}: no such task here")

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        self._refuse(message, f"invalid task message: {_cut(str(exc), 300)}")

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        self._refuse(message, f"the message cannot be decoded ({_name(exc)}: "
                              f"{_cut(str(exc), 200)})")

    def update_strategies(self) -> None:
        super().update_strategies()
        for name, strategy in list(self.strategies.items()):
            if not getattr(strategy, "pdftasks_guarded", False):
                self.strategies[name] = GuardedStrategy(self.app.tasks[name], self.app, self,
                                                        strategy, is_job=False)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        # Called each time the consumer loop starts, after the task consumer's channel is
        # open: the place to guard that channel too.
        try:
            channel = getattr(self.task_consumer, "channel", None)
            if channel is not None:
                guard_redis_channel(channel, self._on_broken_envelope)
        except Exception:
            log.exception("could not guard the broker channel against broken messages")
        handler = super().create_task_handler(*args, **kwargs)
        errors = tuple(self.connection_errors) + tuple(self.channel_errors)

        def on_task_received(message: Any) -> Any:
            try:
                return handler(message)
            except errors:
                raise
            except Exception as exc:
                log.exception("a message raised while it was taken in")
                self._refuse(message, f"the worker could not take this message in "
                                      f"({_name(exc)}: {_cut(str(exc), 200)})")
                return None

        return on_task_received

    def _on_broken_envelope(self, exc: BaseException) -> None:
        # The message is off its queue already: nothing to acknowledge or requeue.
        reason = exc.reason if isinstance(exc, BrokenEnvelopeError) else \
            f"the broker message cannot be read ({_name(exc)}: {_cut(str(exc), 200)})"
        info = envelope_info(exc)
        job_id = None
        if isinstance(exc, BrokenEnvelopeError) and isinstance(exc.payload, Mapping):
            headers = exc.payload.get("headers")
            job_id = valid_id(headers.get("id")) if isinstance(headers, Mapping) else None
        if not self._refuser().settle(job_id, InvalidMessageError(reason), None, False,
                                      lambda: info):
            dead_letter(self.app, reason, info)


# The Redis transport (kombu-internal names: feature-checked, skipped when absent).


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

        class GuardedMessage(base):  # type: ignore[misc, valid-type]
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
