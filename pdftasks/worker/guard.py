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
  The checks themselves are in ``pdftasks.worker.checks``.
- ``GuardedConsumer`` (Celery's ``worker_consumer``): the hooks for unknown tasks, invalid
  tasks, undecodable and unknown messages acknowledge the message and keep it in the job
  store's dead-letter list (``JobStore.dead_letter``) instead of requeueing or crashing;
  anything else raised while a message is taken in is caught, logged and dead-lettered.
- On the Redis transport, messages whose envelope kombu cannot read (not JSON, no
  properties, compressed: a decompression bomb) are dead-lettered instead of raising into
  the event loop (``guard_redis_channel``, in ``pdftasks.brokers.redis_guard``;
  kombu-internal, feature-checked).

Connection errors always go through: Celery reconnects on them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from celery.worker.strategy import default as default_strategy
from kombu.exceptions import ContentDisallowed, DecodeError

from pdftasks.brokers.redis_guard import (
    BrokenEnvelopeError,
    envelope_problem,
    guard_redis_channel,
)
from pdftasks.errors import BrokerUnavailableError, InvalidJobError
from pdftasks.limits import MAX_ID, DataLimits
from pdftasks.models import JobPriority, JobStatus
from pdftasks.options.document import SECRET_PATHS
from pdftasks.stores import DEAD_LETTER_EXCERPT, Job
from pdftasks.worker.checks import (
    ARG_NAMES,
    BODY_SLACK,
    MAX_ENVELOPE_VALUES,
    MAX_NAME,
    MAX_RETRIES,
    REQUIRED,
    InvalidMessageError,
    _cut,
    _name,
    bind_arguments,
    body_limit,
    check_arguments,
    check_bounded,
    check_envelope,
    check_headers,
    check_job_message,
    check_task_message,
    decode_body,
    job_id_of,
    split_body,
    valid_id,
)

__all__ = [
    # Checks (pdftasks.worker.checks) and the Redis channel guard (pdftasks.brokers.redis_guard)
    "ARG_NAMES", "BODY_SLACK", "MAX_ENVELOPE_VALUES", "MAX_ID", "MAX_NAME", "MAX_RETRIES",
    "REQUIRED", "BrokenEnvelopeError", "InvalidMessageError", "bind_arguments", "body_limit",
    "check_arguments", "check_bounded", "check_envelope", "check_headers",
    "check_job_message", "check_task_message", "decode_body", "envelope_problem",
    "guard_redis_channel", "job_id_of", "split_body", "valid_id",
    # This module
    "GuardedConsumer", "GuardedStrategy", "Refuser", "cap_time_limits", "dead_letter",
    "envelope_info", "excerpt", "job_strategy", "message_info", "record_failure",
]

log = logging.getLogger(__name__)

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxstring, _repr.maxother = 6, 40, 40, 400, 200


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


#: A secret option (``SECRET_PATHS``) and its value in a message's text, JSON (``"k": "v"``)
#: or Python repr (``'k': 'v'``), also cut short by an excerpt's end.
_SECRET_KEYS = "|".join(sorted({re.escape(path.rsplit(".", 1)[-1]) for path in SECRET_PATHS}))
_SECRET_VALUE = re.compile(
    r"""(?P<q>["'])(?P<key>""" + _SECRET_KEYS
    + r""")(?P=q)\s*:\s*(?P<v>["'])(?:\\.|(?!(?P=v)).)*((?P=v)|$)""", re.DOTALL)
#: Headers that repeat the arguments (Celery's ``argsrepr``/``kwargsrepr``).
_ARGUMENT_HEADERS = frozenset({"argsrepr", "kwargsrepr"})


def redact_secrets(text: str | None) -> str | None:
    """``text`` (an excerpt of a message) with the values of secret options replaced."""
    if not text:
        return text
    return _SECRET_VALUE.sub(lambda m: f"{m['q']}{m['key']}{m['q']}: {m['v']}***{m['v']}",
                             text)


def message_info(message: Any) -> dict[str, Any]:
    """Where ``message`` came from and excerpts of it, for a dead letter (secret options
    redacted: a dead letter is kept, and shown by ``pdftasks dead-letters``)."""
    info: dict[str, Any] = {"worker_pid": os.getpid()}
    try:
        headers = message.headers if isinstance(message.headers, Mapping) else {}
        delivery = message.delivery_info if isinstance(message.delivery_info, Mapping) else {}
        shown = ({k: v for k, v in headers.items() if k not in _ARGUMENT_HEADERS}
                 if headers else message.headers)
        info.update(
            queue=excerpt(delivery.get("routing_key")), exchange=excerpt(delivery.get("exchange")),
            task=excerpt(headers.get("task")), message_id=excerpt(headers.get("id")),
            content_type=excerpt(message.content_type),
            content_encoding=excerpt(message.content_encoding),
            body=redact_secrets(excerpt(message.body)),
            headers=redact_secrets(excerpt(shown)))
    except Exception as exc:  # a message too broken to describe
        info["error"] = excerpt(f"{_name(exc)}: {exc}")
    return info


def _decoded_excerpt(payload: Mapping[str, Any]) -> Any:
    """The start of an envelope's body, decoded when kombu base64-encoded it (so that its
    secrets can be found and redacted)."""
    body = payload.get("body")
    props = payload.get("properties")
    if isinstance(body, str) and isinstance(props, Mapping) \
            and props.get("body_encoding") == "base64":
        try:
            return base64.b64decode(body[:(DEAD_LETTER_EXCERPT * 4 // 3 + 4) // 4 * 4])
        except (ValueError, TypeError):
            return "<a body that is not base64>"
    return body


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
            headers = {k: v for k, v in headers.items() if k not in _ARGUMENT_HEADERS}
        info.update(content_type=excerpt(payload.get("content-type")),
                    body=redact_secrets(excerpt(_decoded_excerpt(payload))),
                    headers=redact_secrets(excerpt(headers)))
    elif isinstance(exc, BrokenEnvelopeError):
        info["envelope"] = redact_secrets(excerpt(exc.payload))
    elif isinstance(exc, json.JSONDecodeError):
        info["envelope"] = redact_secrets(excerpt(exc.doc))
    elif isinstance(exc, UnicodeDecodeError):
        info["envelope"] = redact_secrets(excerpt(exc.object))
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
        #: The pool's slots (``WorkController.semaphore``: one per process), or None.
        self.slots = getattr(getattr(consumer, "controller", None), "semaphore", None)

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
        slots = self.slots
        free = getattr(slots, "value", None)
        try:
            return self.handler(message, body, *args, **kwargs)
        except (InvalidTaskError, ContentDisallowed, DecodeError, *self.errors):
            raise  # Celery's own handling: GuardedConsumer's hooks
        except Exception as exc:
            if slots is not None and free is not None and getattr(slots, "value", free) < free:
                # The message took a pool slot (Celery's semaphore) and never reached a
                # process: give it back, or the worker serves one job fewer for good.
                slots.release()
            log.exception("could not hand a %s message to a worker process", self.task.name)
            return self.refuser.refuse(
                message, InvalidMessageError(f"the worker could not accept this job "
                                             f"({_name(exc)}: {_cut(str(exc), 200)})"),
                body, seen.get("bound"), self.is_job)


def refuse_request(request: Any, exc: BaseException) -> None:
    """Refuse a request the worker took but could not hand to a pool process: its job
    FAILED (its record created for ``generate_pdf``), or dead-lettered; its message
    acknowledged; Celery's bookkeeping of it ended (``task_ready``)."""
    from celery.worker import state as worker_state

    from pdftasks.celery_app import GENERATE_PDF

    app = request.task.app
    conn = app.connection_for_read()  # not connected: only its transport's error types
    try:
        consumer = SimpleNamespace(app=app, connection_errors=conn.connection_errors,
                                   channel_errors=conn.channel_errors)
    finally:
        conn.release()
    kwargs = request.kwargs if isinstance(request.kwargs, Mapping) else {}
    Refuser(consumer).refuse(
        request.message, InvalidMessageError(f"the worker could not accept this job "
                                             f"({_name(exc)}: {_cut(str(exc), 200)})"),
        None, dict(kwargs) or None, request.task.name == GENERATE_PDF)
    worker_state.task_ready(request)


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
