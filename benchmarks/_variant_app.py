"""pdftasks' Celery app with a few options changed, for ``throughput.py --variant``.

Measures what single options cost per job; not a supported configuration. The worker is
``celery -A _variant_app worker`` with the same queues, concurrency, prefetch and ``-O fair``
as ``pdftasks worker``; ``BENCH_VARIANT`` is a comma-separated list of:

* ``no-events``: ``worker_send_task_events`` and ``task_send_sent_event`` off (Flower and
  other monitors no longer see jobs);
* ``no-track-started``: ``task_track_started`` off (no STARTED result write; the job
  record still goes PROCESSING);
* ``no-extended``: ``result_extended`` off (results without task name, args, kwargs);
* ``warning-logs``: nothing here; run the worker with ``-l WARNING`` (no line per job).
"""

from __future__ import annotations

import os

from pdftasks.celery_app import app

_VARIANT = {v for v in os.environ.get("BENCH_VARIANT", "").split(",") if v}

if "no-events" in _VARIANT:
    app.conf.worker_send_task_events = False
    app.conf.task_send_sent_event = False
if "no-track-started" in _VARIANT:
    app.conf.task_track_started = False
if "no-extended" in _VARIANT:
    app.conf.result_extended = False

__all__ = ["app"]
