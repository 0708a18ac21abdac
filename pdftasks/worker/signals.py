"""Celery signal receivers of pdftasks workers, connected when this module is imported
(``pdftasks.worker.tasks.register``, which every pdftasks app runs, imports it). Each acts
only for pdftasks' apps: a host's own workers in the same process are left alone."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from pdftasks.celery_app import is_pdftasks_app
from pdftasks.render import apply_memory_limit, harfbuzz_subset_available
from pdftasks.worker.tasks import app_settings, job_store, render_service

log = logging.getLogger(__name__)


@signals.worker_init.connect
def _worker_starts(sender: Any = None, **_: Any) -> None:
    # Only for pdftasks' apps: a host's own workers in the same process are left alone.
    app = getattr(sender, "app", None)
    if not is_pdftasks_app(app):
        return
    if app_settings(app).effective_broker_url.startswith(("redis://", "rediss://")):
        # kombu's Redis transport, plus: a message taken off its queue just as Redis went
        # away is put back when Redis is reachable again, not lost (pdftasks.brokers.redis).
        # Installed when a pdftasks worker starts, never on import or in clients.
        from pdftasks.brokers import redis as redis_transport

        redis_transport.install()
    _quiet_celery_job_lines(app_settings(app).log_level)
    if not harfbuzz_subset_available():
        log.warning(
            "HarfBuzz subsetting (libharfbuzz-subset0) is missing: WeasyPrint falls back to "
            "fontTools and renders about 3.5x slower. Install it: apt-get install "
            "libharfbuzz-subset0"
        )


@signals.worker_process_init.connect
def _prepare_child(**_: Any) -> None:
    # The signal names no app: the pool process runs the worker's app, its current app.
    from celery.app import app_or_default

    app = app_or_default(None)
    if not is_pdftasks_app(app):
        return
    s = app_settings(app)
    apply_memory_limit(s.render_memory_limit_mb)
    _write_results_with_records(app, s)
    service = render_service(app)
    if s.warmup:
        log.debug("renderer warm (%.0f ms)", service.warm_up())


def _write_results_with_records(app: Any, s: Any) -> None:
    # Celery's STARTED and SUCCESS writes of a job go with its record's changes, in one
    # script, when the job store can make them (same Redis database as the results):
    # pdftasks.brokers.redis_results.RedisBackend holds them until then.
    from pdftasks.celery_app import GENERATE_PDF

    backend = app.backend
    if not hasattr(backend, "defer_jobs"):
        return
    if job_store(app).supports_result_writes(s.effective_result_backend):
        backend.deferred_task = GENERATE_PDF
        backend.defer_jobs = True


#: Celery's loggers of one INFO line per job: "Task … received" (the worker's main process)
#: and "Task … succeeded in …" (the pool process). pdftasks logs its own line per job
#: ("rendered …", and monitoring's "job … completed …" with its fields).
CELERY_JOB_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def _quiet_celery_job_lines(level: str) -> None:
    # Set before the pool processes fork and the consumer builds its strategies: both read
    # the level once. Failures are WARNING or ERROR and still logged; DEBUG keeps them all.
    if str(level).upper() != "DEBUG":
        for name in CELERY_JOB_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
