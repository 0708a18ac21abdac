"""A stock Celery setup for the comparison in ``priority_latency.py``.

``Celery()`` with default settings: one queue (``celery``), ``worker_prefetch_multiplier``
4, early acknowledgement, no routing. Only the broker and result backend are set (from
``BENCH_STOCK_BROKER_URL``; the result backend is needed to read ``started_at``). The task
renders with the same renderer as pdftasks (``pdftasks.render.PDFService``, configured from
the same ``PDFTASKS_TEMPLATES_DIR`` / ``PDFTASKS_OUTPUT_DIR``), and each worker child warms
it up at start like a pdftasks child, so only the queueing differs.

Worker: ``PYTHONPATH=benchmarks celery -A _stock_celery worker -c 2``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, signals

BROKER_URL = os.environ.get("BENCH_STOCK_BROKER_URL", "redis://127.0.0.1:6379/1")

app = Celery("stock_bench", broker=BROKER_URL, backend=BROKER_URL)

_service: Any = None


def _get_service() -> Any:
    global _service
    if _service is None:
        from pdftasks.render import PDFService, PDFServiceConfig

        _service = PDFService(PDFServiceConfig.from_settings(), cache_stylesheets=True)
    return _service


@app.task(name="stock_bench.render")
def render(template: str, data: dict[str, Any], output_filename: str) -> dict[str, Any]:
    """Same work as ``pdftasks.generate_pdf``; returns the render result plus ``started_at``."""
    started_at = time.time()
    result = _get_service().generate_pdf(template, data, output_filename)
    result.extra.update(started_at=started_at, worker_pid=os.getpid())
    return result.as_dict()


@signals.worker_process_init.connect
def _warm(**_: Any) -> None:
    _get_service().warm_up()
