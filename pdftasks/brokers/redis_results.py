"""Celery's Redis result backend, minus result tracking for jobs published in a batch.

Celery's Redis backend subscribes to a job's result channel when the job is published (so
that ``AsyncResult.get()`` hears of it), a Redis round trip per job. ``submit_batch``
returns job ids, not ``AsyncResult`` objects, and its jobs are followed in the job store, so
inside ``untracked()`` this backend does not subscribe (and Celery then has nothing to
unsubscribe when the ``AsyncResult`` is dropped). That was about a third of the time of a
``submit_batch`` (``benchmarks/submit_rate.py``: about 1,700 -> 2,500 jobs/s). A result
asked for later with ``.get()`` still subscribes then, and reads a result stored before.
Everything else, including ``generate_pdf.delay(...).get()``, is Celery's backend unchanged.

``pdftasks.celery_app`` selects it for ``redis://`` and ``rediss://`` result backends
(``pdftasks.brokers.redis_results.RedisBackend+redis://…``, Celery's ``Class+URL`` form).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend as CeleryRedisBackend
from kombu.utils.encoding import bytes_to_str

_state = threading.local()


@contextmanager
def untracked() -> Iterator[None]:
    """Within this block, jobs published by this thread are not followed for results."""
    before = getattr(_state, "untracked", False)
    _state.untracked = True
    try:
        yield
    finally:
        _state.untracked = before


class RedisBackend(CeleryRedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        if not getattr(_state, "untracked", False):
            super().on_task_call(producer, task_id)

    # Result writes made by the job store (worker pool processes of pdftasks apps).
    #
    # Celery writes a job's STARTED state before the task runs and its SUCCESS after it
    # returned, each a GET (never overwrite a SUCCESS) then a SET + PUBLISH: four round
    # trips per job next to the job record's own. In a worker process where the job store
    # is on the same Redis database (``JobStore.supports_result_writes``), ``defer_jobs``
    # is set and these two writes of ``generate_pdf`` jobs are held instead (encoded by
    # Celery as usual); the task hands them to the job store, which makes them in the same
    # script as the record's change (``JobStore.begin`` / ``finish``), with the same
    # never-over-SUCCESS rule. ``flush`` writes what is still held the usual way.

    #: Task whose STARTED and SUCCESS writes are held when ``defer_jobs`` is set.
    deferred_task: str | None = None
    defer_jobs: bool = False

    def store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None,
                     request: Any = None, **kwargs: Any) -> Any:
        held = self._held()
        if (self.defer_jobs and state in (states.STARTED, states.SUCCESS)
                and getattr(request, "task", None) == self.deferred_task):
            if state == states.STARTED:
                held.clear()  # one job at a time: anything held is from an ended job
            _state.deferring = str(task_id)
            try:
                return super().store_result(task_id, result, state, traceback, request,
                                            **kwargs)
            finally:
                _state.deferring = None
        held.pop(str(task_id), None)  # a later state replaces a held one
        return super().store_result(task_id, result, state, traceback, request, **kwargs)

    def get(self, key: Any) -> Any:
        if getattr(_state, "deferring", None) is not None:
            return None  # the write is held: the job store's script checks for SUCCESS
        return super().get(key)

    def set(self, key: Any, value: Any, expires: Any = None, **retry_policy: Any) -> Any:
        task_id = getattr(_state, "deferring", None)
        if task_id is not None:
            ttl = expires if expires is not None else self.expires
            self._held()[task_id] = (bytes_to_str(key), bytes_to_str(value), int(ttl or 0))
            return None
        return super().set(key, value, expires, **retry_policy)

    def take_held(self, task_id: str) -> list[tuple[str, str, int]]:
        """The result write held for ``task_id`` (none or one), no longer held."""
        held = self._held().pop(task_id, None)
        return [held] if held is not None else []

    def flush(self, task_id: str, states_kept: tuple[str, ...] = (states.SUCCESS,)) -> None:
        """Write what is still held for ``task_id`` the usual way if its state is in
        ``states_kept`` (a STARTED held past its job's end is dropped: a later state or
        nothing replaces it)."""
        for key, value, ttl in self.take_held(task_id):
            if self.decode(value).get("status") in states_kept:
                super().set(key, value, ttl or None)

    def _held(self) -> dict[str, tuple[str, str, int]]:
        held: dict[str, tuple[str, str, int]] | None = getattr(_state, "held", None)
        if held is None:
            held = _state.held = {}
        return held
