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

from celery.backends.redis import RedisBackend as CeleryRedisBackend

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
