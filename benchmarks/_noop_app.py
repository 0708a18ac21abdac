"""A no-op Celery app for ``local_broker.py``: measures what the broker and result backend cost.

Configured from environment variables that the benchmark sets for each scenario:

* ``BENCH_NOOP_BROKER_URL``         broker URL (``filesystem://``, ``sqla+sqlite:///...``)
* ``BENCH_NOOP_RESULT_BACKEND``     result backend (``file:///...``, ``db+sqlite:///...``)
* ``BENCH_NOOP_TRANSPORT_OPTIONS``  JSON object: ``broker_transport_options``
* ``BENCH_NOOP_READY_FILE``         optional: the worker writes ``time.time()`` there when it
  is ready (``worker_ready`` signal), so readiness is known without INFO logging (which would
  add one log line per task) and without a control ping (which would go through the broker
  being measured).

The job-related options are those of pdftasks (``pdftasks.celery_app.configure``): late
acknowledgement, reject on worker loss, prefetch multiplier 1, JSON, ``task_track_started``
(one extra result write per job) and ``result_extended``. The task does nothing.

Worker: ``cd benchmarks && celery -A _noop_app worker -Q noop -c 2 --prefetch-multiplier 1``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery, signals

#: Queue and task name used by the benchmark.
QUEUE = "noop"
TASK_NAME = "noop_bench.noop"


def make_app(broker_url: str, result_backend: str,
             transport_options: dict[str, Any] | None = None) -> Celery:
    """The no-op app for one scenario (the benchmark's client uses the same function)."""
    app = Celery("noop_bench", broker=broker_url, backend=result_backend)
    app.conf.update(
        broker_transport_options=dict(transport_options or {}),
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_default_routing_key=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # As pdftasks: acknowledged when done, at most one reserved job per process.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        result_extended=True,
        timezone="UTC",
        enable_utc=True,
    )

    app.task(name=TASK_NAME)(noop)
    return app


def noop(i: int) -> int:
    """The task: nothing (registered by :func:`make_app` on each app, as ``TASK_NAME``)."""
    return i


app = make_app(
    os.environ.get("BENCH_NOOP_BROKER_URL", "memory://"),
    os.environ.get("BENCH_NOOP_RESULT_BACKEND", "cache+memory://"),
    json.loads(os.environ.get("BENCH_NOOP_TRANSPORT_OPTIONS") or "{}"),
)


@signals.worker_ready.connect
def _write_ready_file(**_: Any) -> None:
    path = os.environ.get("BENCH_NOOP_READY_FILE")
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(repr(time.time()))
        os.replace(tmp, path)
