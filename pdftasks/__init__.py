"""pdftasks: Jinja2 templates + JSON data -> PDF (WeasyPrint), on Celery priority queues."""

from pdftasks.celery_app import GENERATE_PDF, app
from pdftasks.enums import JobPriority, JobStatus
from pdftasks.errors import (
    InvalidJobError,
    PdfTasksError,
    PermanentError,
    TransientError,
)
from pdftasks.jobs import (
    InMemoryBackend,
    Job,
    LocalBackend,
    PDFQueueManager,
    RedisBackend,
    SQSBackend,
)
from pdftasks.render import PDFService, PDFServiceConfig, RenderResult

generate_pdf = app.tasks[GENERATE_PDF]

__all__ = [
    "app",
    "generate_pdf",
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
