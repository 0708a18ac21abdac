"""Group commit of single submits (:class:`SubmitBatcher`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pdftasks.api.constants import MAX_BATCH
from pdftasks.api.models import _accepted
from pdftasks.errors import InvalidJobError

if TYPE_CHECKING:
    from pdftasks.api.idempotency import Idempotency
    from pdftasks.api.state import ApiState

log = logging.getLogger("pdftasks.api")


@dataclass
class _Submit:
    item: dict[str, Any]
    tenant: str
    idempotency: Idempotency | None
    future: concurrent.futures.Future[str]


class SubmitBatcher:
    """Group commit of single submits: what arrives while a batch is being queued goes
    into the next one, as one ``submit_batch`` call (one Redis pipeline for the records,
    one for the messages) and one pipeline for the tenant index, counters and
    idempotency keys. A lone request is a batch of one and waits for nothing."""

    def __init__(self, state: ApiState, max_batch: int = MAX_BATCH) -> None:
        self.state = state
        self.max_batch = max_batch
        self._pending: list[_Submit] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pdftasks-api-submit",
                                        daemon=True)
        self._thread.start()

    async def submit(self, item: dict[str, Any], tenant: str,
                     idempotency: Idempotency | None) -> str:
        """Queue ``item`` (a ``submit_batch`` item); return its job id."""
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the API is shutting down")
            self._pending.append(_Submit(item, tenant, idempotency, future))
            self._cond.notify()
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
            try:
                self._queue(batch)
            except BaseException as exc:  # never leave a request waiting forever
                log.exception("submit batch failed")
                for one in batch:
                    if not one.future.done():
                        one.future.set_exception(exc)

    def _queue(self, batch: list[_Submit]) -> None:
        manager = self.state.manager
        try:
            ids: list[str | BaseException] = list(manager.submit_batch(
                [s.item for s in batch]))
        except InvalidJobError:
            # Checked before, so something changed (a template removed?): queue one by one
            # so that only the bad item fails.
            ids = []
            for one in batch:
                try:
                    ids.append(manager.submit_batch([one.item])[0])
                except Exception as exc:
                    ids.append(exc)
        except BaseException as exc:
            for one in batch:
                one.future.set_exception(exc)
            return
        done = [(one, job_id) for one, job_id in zip(batch, ids, strict=True)
                if isinstance(job_id, str)]
        try:
            self.state.record_submitted(
                [(one.tenant, job_id, one.item["priority"], one.idempotency,
                  (202, _accepted(job_id))) for one, job_id in done])
        except Exception:  # the jobs are queued: say so, even if the index missed them
            log.exception("could not index %d submitted jobs", len(done))
        for one, job_id in zip(batch, ids, strict=True):
            if isinstance(job_id, str):
                one.future.set_result(job_id)
            else:
                one.future.set_exception(job_id)
