"""A stock Celery setup for the comparisons in ``priority_latency.py`` and ``throughput.py``.

``Celery()`` with default settings: one queue (``celery``), ``worker_prefetch_multiplier``
4, early acknowledgement, no routing. Only the broker and result backend are set (from
``BENCH_STOCK_BROKER_URL``; the result backend is needed to read ``started_at``). The task
renders with the same renderer as pdftasks (``pdftasks.render.PDFService``, configured from
the same ``PDFTASKS_TEMPLATES_DIR`` / ``PDFTASKS_OUTPUT_DIR``), and each worker child warms
it up at start like a pdftasks child, so only the queueing differs.

``naive`` (``throughput.py``): the same app and worker, with the render of a first PDF task
instead (a new Jinja environment and ``weasyprint.HTML(...).write_pdf()`` per job).

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


@app.task(name="stock_bench.naive")
def naive(template: str, data: dict[str, Any], output_filename: str) -> dict[str, Any]:
    """What a first PDF task looks like (``throughput.py``'s naive row): a new Jinja
    environment and ``weasyprint.HTML(...).write_pdf()`` per job (``_common.naive_render``)."""
    from pathlib import Path

    from _common import naive_render

    out = Path(os.environ["PDFTASKS_OUTPUT_DIR"]) / output_filename
    started_at, ms = naive_render(Path(os.environ["PDFTASKS_TEMPLATES_DIR"]), template, data,
                                  out)
    return {"path": str(out), "started_at": started_at, "duration_ms": ms,
            "worker_pid": os.getpid()}


@signals.worker_process_init.connect
def _warm(**_: Any) -> None:
    _get_service().warm_up()
