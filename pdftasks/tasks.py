"""Celery tasks. Thin: they validate, call the renderer and report; no HTTP, no layout code."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery import Task, signals
from celery.exceptions import SoftTimeLimitExceeded

from pdftasks.celery_app import GENERATE_PDF, app
from pdftasks.enums import JobPriority
from pdftasks.errors import RenderTimeoutError, TransientError
from pdftasks.render import (
    PDFService,
    PDFServiceConfig,
    apply_memory_limit,
    check_data,
    harfbuzz_subset_available,
    time_limit,
)
from pdftasks.settings import get_settings

log = logging.getLogger(__name__)

_service: PDFService | None = None


def get_service() -> PDFService:
    """This process's renderer: compiled templates and fonts are reused across jobs."""
    global _service
    if _service is None:
        _service = PDFService(PDFServiceConfig.from_settings())
        _service.interrupts = (SoftTimeLimitExceeded,)
    return _service


def submit_checks(template: Any, data: Any, output_filename: Any, priority: Any,
                  css_file: Any = None) -> JobPriority:
    """Checks done before a job is queued; raise a typed ``InvalidJobError``.

    The template's existence is checked only when the templates directory exists here
    (a client machine may not have the templates; the worker checks again).
    """
    s = get_settings()
    prio = JobPriority.parse(priority)
    check_data(data, s.max_data_bytes)
    if s.templates_dir.is_dir():
        get_service().check_job(template, output_filename, css_file)
    else:
        from pdftasks.render import resolve_inside
        from pdftasks.storage import check_output_filename

        resolve_inside(s.templates_dir, template, "template")
        if css_file is not None:
            resolve_inside(s.templates_dir, css_file, "css_file")
        check_output_filename(output_filename)
    return prio


class PdfTask(Task):
    """Validates a job's arguments before it is queued, so bad input fails at submit time."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        bound = dict(zip(("template", "data", "output_filename", "priority", "css_file"),
                         args, strict=False))
        bound.update(kwargs)
        missing = {"template", "data", "output_filename"} - bound.keys()
        if missing:
            raise TypeError(f"generate_pdf() missing arguments: {', '.join(sorted(missing))}")
        prio = submit_checks(bound["template"], bound["data"], bound["output_filename"],
                             bound.get("priority", JobPriority.NORMAL), bound.get("css_file"))
        if len(args) > 3:
            args = (*args[:3], prio.label, *args[4:])
        else:
            kwargs["priority"] = prio.label
        return super().apply_async(args, kwargs, **options)


@app.task(
    bind=True,
    base=PdfTask,
    name=GENERATE_PDF,
    autoretry_for=(TransientError,),
    retry_backoff=2,
    retry_backoff_max=get_settings().retry_backoff_max_s,
    retry_jitter=True,
    max_retries=get_settings().default_max_retries,
)
def generate_pdf(self: Task, template: str, data: Mapping[str, Any], output_filename: str,
                 priority: str = "normal", css_file: str | None = None,
                 max_retries: int | None = None, metadata: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Render ``template`` with ``data`` to ``output_filename`` in the output directory.

    Returns ``{"path", "pages", "bytes", "duration_ms", "started_at", "priority"}``.
    Permanent errors (bad template, data, path, time limit) fail at once; transient ones
    (storage) are retried with exponential backoff and jitter, up to ``max_retries``.
    """
    started_at = time.time()
    if max_retries is not None:
        self.override_max_retries = max_retries
    limit = get_settings().soft_time_limit_s
    try:
        # Our own alarm as well as Celery's soft limit: the child enforces it even when the
        # main process's timer is late, and the message is the same either way.
        with time_limit(limit):
            result = get_service().generate_pdf(template, data, output_filename, css_file)
    except SoftTimeLimitExceeded as exc:
        raise RenderTimeoutError(
            f"render of {template!r} exceeded the soft time limit of "
            f"{limit:g} s and was stopped (runaway template?)"
        ) from exc
    result.extra.update(started_at=started_at, priority=JobPriority.parse(priority).label,
                        worker_pid=os.getpid())
    log.info("rendered %s (%s pages, %.0f ms)", Path(result.path).name, result.pages,
             result.duration_ms)
    return result.as_dict()


@signals.worker_init.connect
def _check_harfbuzz(**_: Any) -> None:
    if not harfbuzz_subset_available():
        log.warning(
            "HarfBuzz subsetting (libharfbuzz-subset0) is missing: WeasyPrint falls back to "
            "fontTools and renders about 3.5x slower. Install it: apt-get install "
            "libharfbuzz-subset0"
        )


@signals.worker_process_init.connect
def _prepare_child(**_: Any) -> None:
    s = get_settings()
    apply_memory_limit(s.render_memory_limit_mb)
    service = get_service()
    if s.warmup:
        ms = service.warm_up()
        log.debug("renderer warm (%.0f ms)", ms)
