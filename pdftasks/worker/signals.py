"""Celery signal receivers of pdftasks workers, connected when this module is imported
(``pdftasks.worker.tasks.register``, which every pdftasks app runs, imports it). Each acts
only for pdftasks' apps: a host's own workers in the same process are left alone."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from pdftasks.celery_app import is_pdftasks_app
from pdftasks.render import apply_memory_limit, harfbuzz_subset_available
from pdftasks.worker.tasks import app_settings, render_service

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
    if not harfbuzz_subset_available():
        log.warning(
            "HarfBuzz subsetting (libharfbuzz-subset0) is missing: WeasyPrint falls back to "
            "fontTools and renders about 3.5x slower. Install it: apt-get install "
            "libharfbuzz-subset0"
        )


@signals.worker_process_init.connect
def _prepare_child(**_: Any) -> None:
    # The signal names no app: the pool process runs the worker's app, its current app.
    from celery import current_app

    app = current_app._get_current_object()
    if not is_pdftasks_app(app):
        return
    s = app_settings(app)
    apply_memory_limit(s.render_memory_limit_mb)
    service = render_service(app)
    if s.warmup:
        log.debug("renderer warm (%.0f ms)", service.warm_up())
