"""``PdfRequest``, the Celery request of ``generate_pdf`` jobs: keeps the job record right
when the worker child dies.

Uses the record helpers of ``pdftasks.worker.tasks``, imported when called:
``tasks.PdfTask`` names this class, so ``tasks`` imports this module.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import states
from celery.exceptions import TaskRevokedError

from pdftasks.compat.celery import RedactedContextRequest
from pdftasks.worker import early

log = logging.getLogger(__name__)


class SecretOptionsRequest(RedactedContextRequest):
    """The request of a task whose kwargs may hold job options with secrets: what the
    worker's main process writes to the result backend itself (REVOKED for a cancelled or
    expired job, FAILURE when its process is lost or killed at the hard time limit, with
    ``result_extended``: the kwargs) holds them redacted. The pool process still receives
    the real ones.

    A request that cannot be handed to a pool process (the message guard let through
    something that fails on the way, such as pickling) is refused like a bad message, and
    its pool slot is given back: Celery gives it back for ``TaskRevokedError`` only, so
    that is what Celery sees. This runs when the slot is taken, at once or later, when a
    busy pool frees one."""

    def execute_using_pool(self, pool: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_using_pool(pool, **kwargs)
        except TaskRevokedError:
            raise
        except Exception as exc:
            from pdftasks.worker.guard import refuse_request

            log.exception("could not hand %s %s to a worker process", self.task.name, self.id)
            early.request_ended(self.id)
            refuse_request(self, exc)
            raise TaskRevokedError(f"{self.id} refused: it cannot reach a worker process") \
                from exc


class PdfRequest(SecretOptionsRequest):
    """Keeps the job record right when the worker child dies: FAILED when Celery's hard
    time limit kills it, COMPLETED when it died after its success was stored (a split job's
    part is then counted too). Each way a request ends gives back the extra message its
    render's end allowed (``pdftasks.worker.early``)."""

    # Celery's request class for a task overrides on_success (without calling this class's):
    # every end goes through acknowledge, reject or on_failure.
    def acknowledge(self) -> None:
        try:
            super().acknowledge()
        finally:
            early.request_ended(self.id)

    def reject(self, requeue: bool = False) -> None:
        try:
            super().reject(requeue)
        finally:
            early.request_ended(self.id)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if not soft:
            early.request_ended(self.id)
            from pdftasks.worker.tasks import describe, fail_job, hard_limit_error

            # Celery itself calls PdfTask.on_failure (with TimeLimitExceeded), except in a
            # cold shutdown; then this fails the record. Once FAILED, this is a no-op.
            fail_job(self.task.app, self.id, describe(hard_limit_error(timeout)))

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        # Celery cancels running jobs when the broker connection is lost, then announces the
        # cancel through the result backend. When that is the Redis that just went away,
        # the announcement fails after the child was signalled, the child's exit is taken
        # for a revoke, and the message is acknowledged: the job would be lost. Marked as
        # cancelled, the message stays unacknowledged and is delivered again (a Celery
        # internal: pdftasks.compat.celery.CANCEL_FLAG).
        from pdftasks.compat import celery as compat_celery

        try:
            super().cancel(pool, signal, emit_retry)
        finally:
            if self.time_start:
                compat_celery.mark_cancelled(self)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> None:
        try:
            super().on_failure(exc_info, send_failed_event=send_failed_event,
                               return_ok=return_ok)
        finally:
            early.request_ended(self.id)
        if not isinstance(getattr(exc_info.exception, "exc", exc_info.exception),
                          WorkerLostError):
            return
        # Celery stores SUCCESS before it calls on_success in the child. A child lost in
        # between leaves a PROCESSING record, and Celery acknowledges the message instead of
        # redelivering it (the job did succeed): complete the record here.
        try:
            meta = self.task.backend.get_task_meta(self.id)
            if meta.get("status") == states.SUCCESS:
                # With the message's arguments: a split part's on_success needs them.
                self.task.on_success(meta.get("result"), self.id, self.args, self.kwargs)
        except Exception:
            log.exception("could not complete the record of job %s after its worker "
                          "process was lost", self.id)
