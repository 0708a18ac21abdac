"""Celery internals pdftasks uses, written for (and tested with) the versions in ``TESTED``.

- ``Request._already_cancelled`` (``mark_cancelled``, called by
  ``pdftasks.worker.request.PdfRequest.cancel``): Celery's flag that a request was
  cancelled because the broker connection was lost; set, the message of a job whose child
  was killed stays unacknowledged and is delivered again. Outside ``TESTED``: *fallback* to
  Celery's own cancel, with a warning (on a lost Redis that is also the result backend, such
  a job can be acknowledged and lost).
- ``Request._context`` (``RedactedContextRequest``, the base of ``pdftasks.worker.request.
  SecretOptionsRequest``): the context the worker's main process gives the result backend
  when it writes a state itself (REVOKED, a lost process, the hard time limit); pdftasks
  gives it the kwargs with the job's secret options redacted. Outside ``TESTED``:
  *fallback* to ``result_extended`` off (``pdftasks.celery_app.configure``), so no result
  keeps task arguments.
- ``celery._state.get_current_task`` (``get_current_task``, for the job id in log lines and
  metrics): outside ``TESTED``, *fallback* to the public ``celery.current_task`` proxy, with
  a warning.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery.worker.request import Request

from pdftasks.compat import FALLBACK, Internal, check, installed_version

#: The Celery versions the uses below were written and tested for.
TESTED = ">=5.7,<5.8"
#: The installed version (tests replace it to simulate another one).
VERSION = installed_version("celery")

CANCEL_FLAG = Internal(
    "celery", "cancel flag (PdfRequest.cancel keeps a cancelled job's message unacked)",
    names=("._already_cancelled",),
    fallback="Celery's own cancel is used: a job cancelled because the broker connection was "
             "lost may be acknowledged instead of delivered again", policy=FALLBACK)
CURRENT_TASK = Internal(
    "celery", "current-task lookup (job ids in logs and metrics)", names=("celery._state",),
    fallback="the public celery.current_task proxy is used instead", policy=FALLBACK)

REQUEST_CONTEXT = Internal(
    "celery", "request context of the worker's main process (secrets left out of the "
    "results it writes)", names=("._context",),
    fallback="result_extended is off: results keep no task arguments", policy=FALLBACK)

INTERNALS = (CANCEL_FLAG, CURRENT_TASK, REQUEST_CONTEXT)
PRIVATE_NAMES = tuple(name for internal in INTERNALS for name in internal.names)


def supported(internal: Internal) -> bool:
    """Whether ``internal`` may be used with the installed Celery (see ``compat.check``)."""
    return check(internal, VERSION, TESTED)


def mark_cancelled(request: Any) -> None:
    """Mark a worker ``Request`` as cancelled, as Celery does when it cancels it itself, so
    that the loss of its process does not acknowledge its message."""
    if supported(CANCEL_FLAG):
        request._already_cancelled = True


def get_current_task() -> Any:
    """The task running in this thread (a ``celery.Task``), or None."""
    if supported(CURRENT_TASK):
        from celery._state import get_current_task as current

        return current()
    from celery import current_task

    return current_task if current_task else None


class RedactedContextRequest(Request):
    """Celery's worker ``Request`` whose ``_context`` (what the worker's main process gives
    the result backend) holds the kwargs without the job's secrets
    (``pdftasks.options.redact_task_kwargs``); the message, and so the pool process, keeps
    the real ones."""

    @cached_property
    def _context(self) -> Any:
        context = Request.__dict__["_context"].func(self)
        if supported(REQUEST_CONTEXT):
            from pdftasks.options import redact_task_kwargs

            hidden = redact_task_kwargs(getattr(context, "kwargs", None))
            if hidden is not None:
                context.kwargs = hidden  # the context's own attribute only
        return context
