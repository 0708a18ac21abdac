"""The HTTP API: submit, poll, download, cancel and monitor PDF jobs (FastAPI).

Serve it with ``pdftasks api`` or any ASGI server (``uvicorn pdftasks.api:app``). Routes and
response shapes follow the product guide's "Pattern 1: Flask REST API", with what a public
service needs on top:

- **Authentication**: ``Authorization: Bearer <key>``; keys are configured as SHA-256
  hashes per tenant (``PDFTASKS_API_KEYS="acme:<hex>,globex:<hex>"``). Every job records
  its tenant (``metadata["tenant"]``); another tenant's job is a 404 on every route.
- **Validation**: pydantic models; every error is JSON ``{"error", "detail"}`` (plus
  ``field`` for a bad field). Request bodies above ``PDFTASKS_API_MAX_BODY_BYTES`` are a
  413; job data beyond its limits (``PDFTASKS_MAX_DATA_*``: bytes, depth, keys, items,
  string length), an unknown template, an unsafe path or callback URL are a 422 naming the
  field. A JSON body nested more than ``BODY_DEPTH_MARGIN`` levels deeper than job data
  may be is a 422 before it is parsed. Templates are checked as files only: the API never
  compiles one (that is unbounded work); a template that does not compile becomes a FAILED
  job whose ``error`` says why. No response names a server path.
- **Idempotency**: ``Idempotency-Key`` returns the same job for the same key, tenant and
  body within ``PDFTASKS_IDEMPOTENCY_TTL_S``; the same key with another body is a 409.
- **Rate limiting** per API key: ``PDFTASKS_API_RATE_LIMIT_PER_MIN`` requests per clock
  minute (fixed window in Redis), then 429 with ``Retry-After``.
- **Webhooks**: ``callback_url`` is checked here and delivered by the workers
  (:mod:`pdftasks.contrib.webhooks`).

Jobs go through the job API (:class:`pdftasks.client.PDFQueueManager`). The API keeps its own
state in the same Redis as the job store, under ``{namespace}:api:``: a sorted set of job
ids per tenant (listing), rate-limit windows, idempotency keys and submit counters.

Modules: :mod:`~pdftasks.api.constants` (limits), :mod:`~pdftasks.api.errors` (error bodies,
handlers, path redaction), :mod:`~pdftasks.api.models` (request and response models),
:mod:`~pdftasks.api.auth` (keys, callers, authentication), :mod:`~pdftasks.api.idempotency`,
:mod:`~pdftasks.api.batcher` (group commit of submits), :mod:`~pdftasks.api.metrics`,
:mod:`~pdftasks.api.middleware` (body limit, latency), :mod:`~pdftasks.api.state` (one
process's state), :mod:`~pdftasks.api.routes` (the route table) and
:mod:`~pdftasks.api.application` (:func:`build_api`). ``app`` is the application built with
the settings of the environment, for a process that serves it alone (it freezes the
garbage collector's objects at startup; ``build_api()`` does not unless asked).
"""

from __future__ import annotations

from pdftasks.api.application import build_api
from pdftasks.api.auth import (
    Caller,
    CallerDep,
    authenticated,
    bearer,
    hash_key,
    new_key,
    parse_api_keys,
)
from pdftasks.api.batcher import SubmitBatcher
from pdftasks.api.constants import (
    BASE_PATH,
    BODY_DEPTH_MARGIN,
    BROKER_RETRY_AFTER_S,
    HEALTH_TIMEOUT_S,
    IDEMPOTENCY_CLAIM_S,
    INLINE_BYTES,
    MAX_BATCH,
    MAX_LIST,
    MAX_METADATA_BYTES,
)
from pdftasks.api.errors import ApiError, redact_paths
from pdftasks.api.errors import _messages as _messages
from pdftasks.api.idempotency import Idempotency
from pdftasks.api.metrics import ApiMetrics
from pdftasks.api.middleware import BodyLimitMiddleware, LatencyMiddleware, json_depth_above
from pdftasks.api.models import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    CancelResponse,
    ErrorResponse,
    Health,
    JobAccepted,
    JobDocument,
    JobList,
    PdfRequest,
    Priority,
    QueueStats,
    StatusName,
)
from pdftasks.api.routes import IdempotencyKey, JobId
from pdftasks.api.state import ApiState, TemplateFiles
from pdftasks.models import JobPriority, JobStatus

__all__ = [
    "BASE_PATH", "BODY_DEPTH_MARGIN", "BROKER_RETRY_AFTER_S", "HEALTH_TIMEOUT_S",
    "IDEMPOTENCY_CLAIM_S", "INLINE_BYTES", "MAX_BATCH", "MAX_LIST", "MAX_METADATA_BYTES",
    "ApiError", "ApiMetrics", "ApiState", "BatchItem", "BatchRequest", "BatchResponse",
    "BodyLimitMiddleware", "Caller", "CallerDep", "CancelResponse", "ErrorResponse", "Health",
    "Idempotency", "IdempotencyKey", "JobAccepted", "JobDocument", "JobId", "JobList",
    "JobPriority", "JobStatus", "LatencyMiddleware", "PdfRequest", "Priority", "QueueStats",
    "StatusName", "SubmitBatcher", "TemplateFiles", "app", "authenticated", "bearer",
    "build_api", "hash_key", "json_depth_above", "new_key", "parse_api_keys", "redact_paths",
]

#: The ASGI application (``uvicorn pdftasks.api:app``); its state is made at startup.
app = build_api(freeze_gc=True)  # served alone: pdftasks api, uvicorn pdftasks.api:app
