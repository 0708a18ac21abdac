"""pdftasks: Jinja2 templates + JSON data -> PDF (WeasyPrint), on Celery priority queues.

Importing ``pdftasks`` does nothing else: the names below are loaded on first use, and the
default Celery app (``pdftasks.app``, settings from ``PDFTASKS_*``) is built when something
first needs it. It is never made Celery's current app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery, Task

    from pdftasks.client import (
        InMemoryBackend,
        Job,
        LocalBackend,
        PDFQueueManager,
        RedisBackend,
        SQSBackend,
    )
    from pdftasks.errors import InvalidJobError, PdfTasksError, PermanentError, TransientError
    from pdftasks.models import JobPriority, JobStatus
    from pdftasks.render import PDFService, PDFServiceConfig, RenderResult

    app: Celery
    generate_pdf: Task

__all__ = [
    "app",
    "generate_pdf",
    "create_app",
    "PDFQueueManager",
    "Job",
    "RedisBackend",
    "LocalBackend",
    "InMemoryBackend",
    "SQSBackend",
    "JobPriority",
    "JobStatus",
    "PDFService",
    "PDFServiceConfig",
    "RenderResult",
    "PdfTasksError",
    "PermanentError",
    "TransientError",
    "InvalidJobError",
]

_WHERE = {
    "create_app": "pdftasks.celery_app",
    "PDFQueueManager": "pdftasks.client",
    "Job": "pdftasks.client",
    "RedisBackend": "pdftasks.client",
    "LocalBackend": "pdftasks.client",
    "InMemoryBackend": "pdftasks.client",
    "SQSBackend": "pdftasks.client",
    "JobPriority": "pdftasks.models",
    "JobStatus": "pdftasks.models",
    "PDFService": "pdftasks.render",
    "PDFServiceConfig": "pdftasks.render",
    "RenderResult": "pdftasks.render",
    "PdfTasksError": "pdftasks.errors",
    "PermanentError": "pdftasks.errors",
    "TransientError": "pdftasks.errors",
    "InvalidJobError": "pdftasks.errors",
}


def __getattr__(name: str) -> Any:
    if name == "app":
        from pdftasks.celery_app import get_app

        return get_app()
    if name == "generate_pdf":
        from pdftasks.celery_app import GENERATE_PDF, get_app

        return get_app().tasks[GENERATE_PDF]
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pdftasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
