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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.exceptions import NoScriptError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pdftasks.contrib.webhooks import (
    CALLBACK_KEY,
    RESERVED_METADATA,
    TENANT_KEY,
    UnsafeCallbackError,
    check_callback_url,
    job_document,
)
from pdftasks.errors import (
    BrokerUnavailableError,
    InvalidJobError,
    TemplateNotFoundError,
    UnsafePathError,
)
from pdftasks.limits import DataLimits, check_data
from pdftasks.models import JobPriority, JobStatus
from pdftasks.render import resolve_inside
from pdftasks.settings import Settings, get_settings
from pdftasks.storage import check_output_filename

log = logging.getLogger(__name__)

#: Path prefix of the job routes.
BASE_PATH = "/api/pdf"
#: Most jobs in one batch request.
MAX_BATCH = 500
#: Most jobs one list request returns.
MAX_LIST = 200
#: Largest ``metadata`` object of one job, in bytes of JSON.
MAX_METADATA_BYTES = 64 * 1024
#: Seconds a client is asked to wait when the broker is unreachable.
BROKER_RETRY_AFTER_S = 5
#: How long an Idempotency-Key stays reserved by a request that has not finished, in s.
IDEMPOTENCY_CLAIM_S = 60
#: Requests up to this size are checked on the event loop, larger ones in a thread (bytes).
INLINE_BYTES = 64 * 1024
#: Timeout of the health check's broker ping, in seconds.
HEALTH_TIMEOUT_S = 1.0
#: JSON request bodies may nest this many levels deeper than job data may
#: (``PDFTASKS_MAX_DATA_DEPTH``): a batch's data sits 3 levels down. Deeper bodies are refused
#: before they are parsed, so no parser or serializer ever recurses deeply on client input.
BODY_DEPTH_MARGIN = 8

Priority = Literal["urgent", "high", "normal", "low"]
StatusName = Literal["pending", "processing", "retrying", "completed", "failed", "cancelled"]

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


# Keys and tenants.


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of an API key: what ``PDFTASKS_API_KEYS`` holds."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A new random API key (256 bits, URL-safe)."""
    return "pdft_" + secrets.token_urlsafe(32)


def parse_api_keys(spec: str) -> dict[str, str]:
    """``"tenant:sha256hex,..."`` → ``{sha256hex: tenant}``. A tenant may have several keys.

    Raises:
        ValueError: an entry is not ``tenant:<64 hex digits>``, or a hash appears twice.
    """
    out: dict[str, str] = {}
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        tenant, sep, digest = entry.rpartition(":")
        digest = digest.strip().lower()
        tenant = tenant.strip()
        if not sep or not _TENANT.match(tenant) or not _SHA256_HEX.match(digest):
            raise ValueError(
                f"PDFTASKS_API_KEYS entry {entry[:80]!r} is not tenant:<sha256 hex of the key> "
                "(tenant: 1-64 letters, digits, '_', '.', '-', starting with a letter or "
                "digit; make the hash with `pdftasks api --hash-key KEY`)")
        if digest in out:
            raise ValueError(f"PDFTASKS_API_KEYS lists the key hash {digest[:12]}… twice")
        out[digest] = tenant
    return out


@dataclass(frozen=True)
class Caller:
    """Who is calling (the tenant of the API key and the key's id, a hash prefix), and the
    API state serving the request."""

    tenant: str
    key_id: str
    state: ApiState = dataclasses.field(repr=False, compare=False)


# Errors: every one is JSON {"error", "detail"}.


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error", "detail", ...}``."""

    def __init__(self, http_status: int, error: str, detail: str,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.http_status, self.error, self.detail = http_status, error, detail
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"error": self.error, "detail": self.detail, **self.extra}
        return JSONResponse(body, status_code=self.http_status, headers=self.headers)


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "Job not found")


def _invalid(field: str, detail: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {detail}", field=field)


def _error_body(error: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, **extra}


#: An absolute path of two or more components, not part of a URL (``file:///x/y`` stays).
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"`()<>,;]+/)+([^\s/'\"`()<>,;]*)")


def redact_paths(text: str, settings: Settings | None = None, *, any_path: bool = True) -> str:
    """``text`` without absolute server paths, for what a client sees: the templates
    directory's `` in <dir>`` is dropped, and (``any_path``) any other absolute path becomes
    ``…/<its last component>`` (``/srv/app/templates/invoice.html`` → ``…/invoice.html``).

    ``any_path=False`` for messages that quote the client's own input (a template name such
    as ``/etc/passwd`` is shown as sent)."""
    if settings is not None:
        text = text.replace(f" in {settings.templates_dir}", "")
    return _ABS_PATH.sub(lambda m: f"…/{m.group(1)}", text) if any_path else text


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


def _messages(errors: list[Any], prefix: str = "") -> tuple[str, str]:
    """(first field, "field: message; ...") from pydantic errors."""
    items = []
    for err in errors:
        field = prefix + _loc(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            field = prefix + "body"
            msg = (f"invalid JSON at character {err.get('loc', ('', '?'))[-1]}: "
                   f"{err.get('ctx', {}).get('error', msg)}")
        items.append((field or "body", msg))
    if not items:
        return "body", "invalid request"
    return items[0][0], "; ".join(f"{f}: {m}" for f, m in items)


# Request and response models.

#: "data" as check_data's messages name the checked value (not inside a quoted key).
_DATA_WORD = re.compile(r"(?<![\w'\"])data(?![\w'\"])")


def _text_error(value: Any, name: str) -> str | None:
    """Why ``value`` (JSON within the data limits) is not valid Unicode, else None.

    JSON can carry a lone surrogate (``"\\ud800"``), which is no text: it cannot be stored,
    returned or rendered (UTF-8 has no encoding for it), so it is refused at the door."""
    try:
        json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end]
        return f"{name} contains {bad!r}, a lone surrogate: not valid Unicode text"
    except (ValueError, TypeError, RecursionError) as exc:  # not after check_data
        return f"{name} is not JSON-serializable: {type(exc).__name__}"
    return None


class PdfRequest(BaseModel):
    """One PDF job (``POST /api/pdf``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "template": "invoice.html", "data": {"invoice_number": "INV-001"},
        "filename": "invoice.pdf", "priority": "high"}]})

    template: str = Field(min_length=1, max_length=255,
                          description="Template name inside the templates directory.")
    data: dict[str, Any] = Field(description="The template's variables (a JSON object).")
    filename: str = Field(min_length=1, max_length=200,
                          description="Output file name, ending in .pdf, without a path.")
    priority: Priority = "normal"
    css_file: str | None = Field(None, min_length=1, max_length=255,
                                 description="Extra stylesheet from the templates directory.")
    metadata: dict[str, Any] | None = Field(None, description="Yours; returned as given.")
    max_retries: int | None = Field(None, ge=0, le=20,
                                    description="Retries of transient failures.")
    callback_url: str | None = Field(
        None, min_length=1, max_length=2048,
        description="http(s) URL that receives a signed POST when the job completed or "
                    "finally failed.")

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        try:
            return check_output_filename(value)
        except UnsafePathError as exc:
            raise ValueError(str(exc).replace("output_filename", "filename")) from exc

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        for key in RESERVED_METADATA:
            if key in value:
                raise ValueError(f"the key {key!r} is reserved for pdftasks")
        # The data limits (depth, no NaN or Infinity, ...) without recursion, then the size:
        # metadata is stored and returned as JSON.
        try:
            check_data(value, DataLimits(max_bytes=MAX_METADATA_BYTES))
        except InvalidJobError as exc:
            raise ValueError(_DATA_WORD.sub("metadata", str(exc))) from exc
        problem = _text_error(value, "metadata")
        if problem is not None:
            raise ValueError(problem)
        return value


class BatchRequest(BaseModel):
    """Many jobs (``POST /api/pdf/batch``); each item is checked on its own."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH,
        description="Items shaped like the body of POST /api/pdf. Invalid items are "
                    "reported in the response; valid ones are queued.")
    priority: Priority | None = Field(None, description="Priority of items that give none.")


class ErrorResponse(BaseModel):
    error: str = Field(description="Short machine-readable code.")
    detail: str = Field(description="What was wrong, naming the field where there is one.")
    field: str | None = None
    status: StatusName | None = Field(None, description="The job's status (409 responses).")


class JobAccepted(BaseModel):
    job_id: str
    status: StatusName
    check_url: str


class JobDocument(BaseModel):
    job_id: str
    status: StatusName
    priority: Priority
    template: str
    filename: str
    created_at: str
    started_at: str | None
    completed_at: str | None
    duration: str | None = Field(description='As in the guide, e.g. "1.42s".')
    duration_s: float | None
    pages: int | None
    error: str | None
    retries: str = Field(description='"retry_count/max_retries", as in the guide.')
    retry_count: int
    max_retries: int
    metadata: dict[str, Any]
    download_url: str | None


class JobList(BaseModel):
    jobs: list[JobDocument]
    count: int


class BatchItem(BaseModel):
    index: int
    job_id: str | None = None
    status: StatusName | None = None
    check_url: str | None = None
    error: str | None = None
    detail: str | None = None
    field: str | None = None


class BatchResponse(BaseModel):
    jobs: list[BatchItem]
    queued: int
    rejected: int


class CancelResponse(BaseModel):
    job_id: str
    status: StatusName
    message: str


class QueueStats(BaseModel):
    model_config = ConfigDict(extra="allow")

    total_jobs: int
    pending: int
    processing: int
    retrying: int
    completed: int
    failed: int
    cancelled: int
    pending_by_priority: dict[str, int]
    queue_depth: dict[str, int | None]
    workers: int


class Health(BaseModel):
    status: Literal["healthy", "unhealthy"]
    broker: Literal["ok", "unreachable"]
    workers: int | None = None
    queue_size: int | None = None
    reason: str | None = None
    error: str | None = None
    detail: str | None = None


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Unreadable request", 401: "Missing or invalid API key",
            404: "No such job for this API key", 409: "Conflict with the job's state",
            410: "The PDF is no longer stored", 413: "Request body too large",
            422: "Invalid request (the detail names the field)",
            429: "Rate limit exceeded (see Retry-After)", 503: "Broker unreachable"}
    return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}


_COMMON = (400, 401, 413, 422, 429, 503)


# Runtime state of one API process.

#: One round trip per request: count it in its window, which expires after ARGV[1] s.
_COUNT_REQUEST = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""
_COUNT_REQUEST_SHA = hashlib.sha1(_COUNT_REQUEST.encode()).hexdigest()


class TemplateFiles:
    """What the API checks of a job's template and stylesheet: a safe name inside the
    templates directory, and a file that exists there (when the directory exists here).

    Never more: compiling a template is unbounded work (Jinja folds constant expressions
    such as ``{{ 'a' * 10**9 }}`` while compiling), so it is left to the workers and their
    limits; a template that does not compile becomes a FAILED job saying why. This object
    also stands in for the render service in the job manager's own submit checks
    (``check_template``), so nothing in the API process ever compiles a template.
    """

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.local = templates_dir.is_dir()

    def check(self, name: object, kind: str) -> None:
        """Raise an ``InvalidJobError`` naming ``kind`` (never the server's paths)."""
        try:
            path = resolve_inside(self.templates_dir, name, kind)
        except InvalidJobError as exc:
            message = str(exc).replace(str(self.templates_dir), "the templates directory")
            raise UnsafePathError(message) from exc
        except (OSError, ValueError) as exc:  # e.g. a lone surrogate: no such file name
            raise UnsafePathError(f"{kind} {name!r} is not a usable file name") from exc
        if not self.local:
            return
        try:
            found = path.is_file()
        except (OSError, ValueError):  # e.g. a name too long for the file system
            found = False
        if not found:
            what = "Template" if kind == "template" else "CSS file"
            raise TemplateNotFoundError(f"{what} not found: {name!r}")

    def check_template(self, template: object, css_file: object = None) -> None:
        """The job manager's submit check: files only, no compiling."""
        self.check(template, "template")
        if css_file is not None:
            self.check(css_file, "css_file")


class ApiState:
    """What one API process keeps: settings, the job manager, Redis, keys, metrics."""

    def __init__(self, settings: Settings | None = None) -> None:
        import redis
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import ExponentialBackoff, NoBackoff
        from redis.retry import Retry

        from pdftasks.client import PDFQueueManager, RedisBackend

        s = settings or get_settings()
        url = s.effective_job_store_url
        if not url.startswith(("redis://", "rediss://", "unix://")) or s.is_local:
            raise RuntimeError(
                "the HTTP API needs Redis: set PDFTASKS_BROKER_URL=redis://host:6379/0 "
                "(rate limits, idempotency keys and the tenant index live there)")
        self.keys = parse_api_keys(s.api_keys.get_secret_value())
        if not self.keys:
            log.warning("PDFTASKS_API_KEYS is empty: every job route answers 401. "
                        "Create a key with `pdftasks api --new-key TENANT`.")
        self.manager = PDFQueueManager(
            backend=RedisBackend(url=s.effective_broker_url, queue_name=s.queue_namespace),
            settings=s.model_dump())
        # This process never reads Celery results (the job store has the outcome): without
        # a result backend, sending a task does not subscribe to its result channel.
        self.manager.app.conf.result_backend = "disabled"
        self.settings: Settings = self.manager.settings
        self.store = self.manager.store
        self.ns = f"{self.settings.queue_namespace}:api"
        # One quick retry over a dropped connection; an outage is a 503 in well under 1 s.
        self.redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
            health_check_interval=25, retry=Retry(ExponentialBackoff(0.2, 0.02), 2))
        self.aredis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
            max_connections=4096, retry=AsyncRetry(ExponentialBackoff(0.2, 0.02), 2))
        self.health_redis = redis.Redis.from_url(
            s.effective_broker_url, socket_timeout=HEALTH_TIMEOUT_S,
            socket_connect_timeout=HEALTH_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
        self.templates = TemplateFiles(self.settings.templates_dir)
        # The manager's submit checks (run by submit_batch) use it instead of the render
        # service: no template is compiled in this process.
        self.manager.pdf_service = self.templates  # type: ignore[assignment]
        if not self.templates.local:
            log.warning("templates directory %s does not exist here: unknown templates are "
                        "reported by the workers (job FAILED), not at submit time",
                        self.settings.templates_dir)
        self._recently_checked: set[tuple[str, str | None]] = set()
        self._checked_at = time.monotonic()
        self.metrics = ApiMetrics(self)
        self.batcher = SubmitBatcher(self)

    async def close(self) -> None:
        self.batcher.close()
        for client in (self.redis, self.health_redis):
            with contextlib.suppress(Exception):
                client.close()
        with contextlib.suppress(Exception):
            await self.aredis.aclose()

    # Authentication and rate limiting.

    def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Caller:
        if credentials is None or not credentials.credentials:
            raise ApiError(401, "unauthorized",
                           "missing API key: send the header 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
        digest = hash_key(credentials.credentials)
        tenant = self.keys.get(digest)
        if tenant is None:
            raise ApiError(401, "unauthorized", "invalid API key",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return Caller(tenant=tenant, key_id=digest[:16], state=self)

    async def rate_limit(self, caller: Caller) -> None:
        """Count this request in the key's current minute; 429 once over the limit."""
        limit = self.settings.api_rate_limit_per_min
        now = time.time()
        window = int(now // 60)
        key = f"{self.ns}:rl:{caller.key_id}:{window}"
        try:
            count = await self.aredis.evalsha(_COUNT_REQUEST_SHA, 1, key, 120)
        except NoScriptError:
            count = await self.aredis.eval(_COUNT_REQUEST, 1, key, 120)
        if count > limit:
            retry_after = max(1, math.ceil((window + 1) * 60 - now))
            raise ApiError(429, "rate_limited",
                           f"more than {limit} requests per minute with this API key; "
                           f"retry after {retry_after} s",
                           headers={"Retry-After": str(retry_after)})

    # Jobs of one tenant.

    def _tenant_index(self, tenant: str) -> str:
        return f"{self.ns}:tenant:{tenant}"

    def own_job(self, caller: Caller, job_id: str) -> Any:
        """The caller's job, or 404 (unknown and other tenants' jobs look the same)."""
        job = self.manager.get_job(job_id)
        if job is None or job.metadata.get(TENANT_KEY) != caller.tenant:
            raise _not_found()
        return job

    def record_submitted(self, jobs: list[tuple[str, str, str, Idempotency | None,
                                                tuple[int, Any]]]) -> None:
        """For new jobs ``(tenant, job_id, priority, idempotency, response)``: index them
        under their tenants, count them, store the idempotent responses. One round trip."""
        now = time.time()
        by_tenant: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        pipe = self.redis.pipeline(transaction=False)
        for tenant, job_id, prio, idempotency, response in jobs:
            if job_id:
                by_tenant.setdefault(tenant, {})[job_id] = now
                counts[prio] = counts.get(prio, 0) + 1
            if idempotency is not None:
                idempotency.finish(pipe, *response)
        for tenant, members in by_tenant.items():
            pipe.zadd(self._tenant_index(tenant), members)
            pipe.expire(self._tenant_index(tenant), self.settings.job_retention_s)
        for prio, n in counts.items():
            pipe.hincrby(f"{self.ns}:submitted", prio, n)
        if len(pipe):
            pipe.execute()

    def list_jobs(self, caller: Caller, status: JobStatus | None, limit: int) -> list[Any]:
        """The caller's jobs, newest first: the tenant index, intersected with the job
        store's status index when filtering (exact, done inside Redis)."""
        index = self._tenant_index(caller.tenant)
        cutoff = time.time() - self.settings.job_retention_s
        if status is None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zremrangebyscore(index, "-inf", cutoff)
            pipe.zrevrange(index, 0, limit - 1)
            ids = pipe.execute()[-1]
        else:
            tmp = f"{self.ns}:tmp:{uuid.uuid4().hex}"
            by_status = [self.store._idx(status, p) for p in JobPriority]  # type: ignore[attr-defined]
            pipe = self.redis.pipeline(transaction=True)
            pipe.zremrangebyscore(index, "-inf", cutoff)
            pipe.zunionstore(tmp, by_status)
            pipe.zinterstore(tmp, {index: 1, tmp: 0})
            pipe.zrevrange(tmp, 0, limit - 1)
            pipe.delete(tmp)
            ids = pipe.execute()[-2]
        jobs, gone = [], []
        for job_id in ids:
            job = self.manager.get_job(job_id)
            if job is None:
                gone.append(job_id)
            elif job.metadata.get(TENANT_KEY) == caller.tenant and (
                    status is None or job.status is status):
                jobs.append(job)
        if gone:
            self.redis.zrem(index, *gone)
        return jobs

    # Checks of one job request, field by field.

    def check_request(self, req: PdfRequest, checked: set[tuple[str, str | None]] | None = None,
                      prefix: str = "") -> None:
        """Raise a 422 ``ApiError`` naming the first field that cannot work.

        The data limits come first, before anything serializes or hashes the data. The
        template and stylesheet are checked as files only (cheap: no compiling, see
        :class:`TemplateFiles`); a template that does not compile fails in the worker.
        """
        s = self.settings
        try:
            check_data(req.data, DataLimits.from_settings(s))
        except InvalidJobError as exc:
            raise _invalid(prefix + "data", str(exc)) from exc
        problem = _text_error(req.data, "data")
        if problem is not None:
            raise _invalid(prefix + "data", problem)
        key = (req.template, req.css_file)
        if checked is None:  # single submits: a template that passed is trusted for 1 s
            checked = self._recently_checked
            if len(checked) > 1000 or time.monotonic() - self._checked_at > 1.0:
                checked.clear()
                self._checked_at = time.monotonic()
        if key not in checked:
            for field, name in (("template", req.template), ("css_file", req.css_file)):
                if name is None:
                    continue
                try:
                    self.templates.check(name, field)
                except InvalidJobError as exc:
                    raise _invalid(prefix + field, redact_paths(str(exc), s,
                                                                any_path=False)) from exc
            checked.add(key)
        if req.callback_url is not None:
            if not s.webhook_secret:
                raise _invalid(prefix + "callback_url",
                               "webhooks are off on this server (no PDFTASKS_WEBHOOK_SECRET)")
            try:
                check_callback_url(req.callback_url, ",".join(s.webhook_allowed_hosts))
            except UnsafeCallbackError as exc:
                raise _invalid(prefix + "callback_url", str(exc)) from exc

    def job_item(self, caller: Caller, req: PdfRequest,
                 default_priority: str | None = None) -> dict[str, Any]:
        """A ``submit_batch`` item for ``req``, recording tenant and callback in metadata."""
        metadata = {**(req.metadata or {}), TENANT_KEY: caller.tenant}
        if req.callback_url is not None:
            metadata[CALLBACK_KEY] = req.callback_url
        priority = req.priority
        if default_priority is not None and "priority" not in req.model_fields_set:
            priority = default_priority  # type: ignore[assignment]
        return {"template": req.template, "data": req.data, "output": req.filename,
                "css_file": req.css_file, "priority": priority, "metadata": metadata,
                "max_retries": req.max_retries}


class Idempotency:
    """One ``Idempotency-Key`` of one tenant: ``{ns}:idem:{tenant}:{sha256(key)}`` holds
    ``{"hash", "state", "status", "body"}`` for ``PDFTASKS_IDEMPOTENCY_TTL_S``."""

    def __init__(self, state: ApiState, caller: Caller, key: str, route: str,
                 body: BaseModel) -> None:
        self.state = state
        self.key = f"{state.ns}:idem:{caller.tenant}:{hashlib.sha256(key.encode()).hexdigest()}"
        # Made after the data checks; the body's nesting is bounded before it is parsed
        # (BodyLimitMiddleware), so this cannot recurse deeply. Should anything still be
        # unserializable, it is the client's body: a 422, not a 500.
        try:
            canonical = json.dumps([route, body.model_dump(mode="json")], sort_keys=True,
                                   separators=(",", ":"))
        except (ValueError, TypeError, RecursionError) as exc:
            raise ApiError(422, "invalid_request", "body: cannot be used with an "
                           "Idempotency-Key: it cannot be serialized", field="body") from exc
        self.fingerprint = hashlib.sha256(canonical.encode()).hexdigest()

    def _claim(self) -> dict[str, Any]:
        # Held briefly while the request runs: a process that dies mid-request frees it.
        return {"name": self.key, "value": json.dumps({"hash": self.fingerprint,
                                                       "state": "running"}),
                "nx": True, "ex": IDEMPOTENCY_CLAIM_S}

    def begin(self) -> JSONResponse | None:
        """None: go ahead (the key is now reserved). Else the response to send."""
        for _ in range(3):
            if self.state.redis.set(**self._claim()):
                return None
            raw = self.state.redis.get(self.key)
            if raw is not None:  # else it expired in between: claim again
                return self._replay(raw)
        raise ApiError(409, "idempotency_in_progress", "Idempotency-Key is busy; retry")

    async def begin_async(self) -> JSONResponse | None:
        """:meth:`begin` on the event loop."""
        for _ in range(3):
            if await self.state.aredis.set(**self._claim()):
                return None
            raw = await self.state.aredis.get(self.key)
            if raw is not None:
                return self._replay(raw)
        raise ApiError(409, "idempotency_in_progress", "Idempotency-Key is busy; retry")

    def _replay(self, raw: str | bytes) -> JSONResponse:
        stored = json.loads(raw)
        if stored.get("hash") != self.fingerprint:
            raise ApiError(409, "idempotency_conflict",
                           "this Idempotency-Key was already used with a different request "
                           "body; use a new key for a new request")
        if stored.get("state") != "done":
            raise ApiError(409, "idempotency_in_progress",
                           "a request with this Idempotency-Key is still being processed; "
                           "retry shortly", headers={"Retry-After": "1"})
        return JSONResponse(stored["body"], status_code=stored["status"],
                            headers={"Idempotent-Replayed": "true"})

    def finish(self, pipe: Any, status: int, body: Any) -> None:
        done = json.dumps({"hash": self.fingerprint, "state": "done", "status": status,
                           "body": body})
        pipe.set(self.key, done, xx=True, ex=self.state.settings.idempotency_ttl_s)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.state.redis.delete(self.key)

    async def abort_async(self) -> None:
        with contextlib.suppress(Exception):
            await self.state.aredis.delete(self.key)


@dataclass
class _Submit:
    item: dict[str, Any]
    tenant: str
    idempotency: Idempotency | None
    future: concurrent.futures.Future[str]


class SubmitBatcher:
    """Group commit of single submits: what arrives while a batch is being queued goes
    into the next one, as one ``submit_batch`` call (one Redis pipeline for the records,
    one for the messages) and one pipeline for the tenant index, counters and
    idempotency keys. A lone request is a batch of one and waits for nothing."""

    def __init__(self, state: ApiState, max_batch: int = MAX_BATCH) -> None:
        self.state = state
        self.max_batch = max_batch
        self._pending: list[_Submit] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pdftasks-api-submit",
                                        daemon=True)
        self._thread.start()

    async def submit(self, item: dict[str, Any], tenant: str,
                     idempotency: Idempotency | None) -> str:
        """Queue ``item`` (a ``submit_batch`` item); return its job id."""
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the API is shutting down")
            self._pending.append(_Submit(item, tenant, idempotency, future))
            self._cond.notify()
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
            try:
                self._queue(batch)
            except BaseException as exc:  # never leave a request waiting forever
                log.exception("submit batch failed")
                for one in batch:
                    if not one.future.done():
                        one.future.set_exception(exc)

    def _queue(self, batch: list[_Submit]) -> None:
        manager = self.state.manager
        try:
            ids: list[str | BaseException] = list(manager.submit_batch(
                [s.item for s in batch]))
        except InvalidJobError:
            # Checked before, so something changed (a template removed?): queue one by one
            # so that only the bad item fails.
            ids = []
            for one in batch:
                try:
                    ids.append(manager.submit_batch([one.item])[0])
                except Exception as exc:
                    ids.append(exc)
        except BaseException as exc:
            for one in batch:
                one.future.set_exception(exc)
            return
        done = [(one, job_id) for one, job_id in zip(batch, ids, strict=True)
                if isinstance(job_id, str)]
        try:
            self.state.record_submitted(
                [(one.tenant, job_id, one.item["priority"], one.idempotency,
                  (202, _accepted(job_id))) for one, job_id in done])
        except Exception:  # the jobs are queued: say so, even if the index missed them
            log.exception("could not index %d submitted jobs", len(done))
        for one, job_id in zip(batch, ids, strict=True):
            if isinstance(job_id, str):
                one.future.set_result(job_id)
            else:
                one.future.set_exception(job_id)


# Metrics.


class ApiMetrics:
    """Prometheus metrics of the API: the queue's own metrics (``pdftasks.contrib.monitoring``:
    job records per status and priority, completed and failed jobs per priority, queue
    depth per priority; exact for all processes and workers, read from Redis at each
    scrape), jobs submitted through the API per priority (Redis counters), workers
    answering, and the request latency of this process (aggregated across
    ``pdftasks api --workers N`` through prometheus_client's multiprocess mode)."""

    def __init__(self, state: ApiState) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        from pdftasks.contrib.monitoring import PdfTasksCollector

        self.state = state
        self.queue = PdfTasksCollector(state.manager.app)
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "pdftasks_api_request_duration_seconds", "HTTP API request latency",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=None if self.multiprocess else self.registry)
        self.registry.register(self)

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = self.state
        yield from self.queue.collect()  # says pdftasks_up 0 when Redis does not answer
        try:
            raw = state.redis.hgetall(f"{state.ns}:submitted")
        except Exception:
            return
        submitted = CounterMetricFamily("pdftasks_api_jobs_submitted",
                                        "Jobs submitted through the HTTP API",
                                        labels=["priority"])
        for prio in JobPriority:
            submitted.add_metric([prio.label], int(raw.get(prio.label, 0)))
        yield submitted
        yield GaugeMetricFamily("pdftasks_workers", "Worker processes answering on the broker",
                                value=state.manager.worker_count())

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(self)
        return generate_latest(registry), CONTENT_TYPE_LATEST


# ASGI middleware: body limit and latency.


#: A JSON string once its escapes are gone (see json_depth_above).
_JSON_STRING = re.compile(rb'"[^"]*"')
#: Brackets as +1 / -1 (signed bytes), everything else dropped.
_BRACKET_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_above(body: bytes, limit: int) -> int:
    """How deep the JSON text ``body`` nests arrays and objects if that is more than
    ``limit``, else 0; without parsing it (no recursion, a few passes in C).

    Strings are skipped (their escapes removed first, so each ends where JSON says).
    Text that is not JSON is measured up to an unterminated string; its parse error comes
    later, from the parser. About 0.4 s for 10 MB of nothing but brackets."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return 0
    text = _JSON_STRING.sub(b"", body.replace(b"\\\\", b"").replace(b'\\"', b""))
    quote = text.find(b'"')
    if quote >= 0:
        text = text[:quote]
    steps = memoryview(text.translate(_BRACKET_STEPS, _NOT_BRACKETS)).cast("b")
    level = deepest = 0
    for start in range(0, len(steps), 1 << 16):  # chunks: other threads run in between
        levels = list(accumulate(steps[start:start + (1 << 16)], initial=level))
        deepest, level = max(deepest, max(levels)), levels[-1]
    return deepest if deepest > limit else 0


class BodyLimitMiddleware:
    """413 for bodies above ``max_bytes``: by Content-Length at once, else while reading.

    With ``max_depth``, a JSON body (or one without a Content-Type, which FastAPI parses as
    JSON) nested deeper than that is a 422 before anything parses it: the JSON parser,
    pydantic and every serializer after them recurse per level, and a 100,000-level body
    must not reach them."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def _reject(self, send: Send, size: str) -> None:
        body = json.dumps(_error_body(
            "payload_too_large",
            f"request body is {size} bytes; the limit is {self.max_bytes} bytes "
            "(PDFTASKS_API_MAX_BODY_BYTES)")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def _too_deep(self, scope: Scope, body: bytes) -> bytes | None:
        """The 422 body for a JSON body nested deeper than ``max_depth``, else None."""
        if self.max_depth is None or not body:
            return None
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
        if content_type is not None and b"json" not in content_type.lower():
            return None
        if len(body) > INLINE_BYTES:
            depth = await run_in_threadpool(json_depth_above, body, self.max_depth)
        else:
            depth = json_depth_above(body, self.max_depth)
        if not depth:
            return None
        data_depth = self.max_depth - BODY_DEPTH_MARGIN
        detail = (f"body: the JSON is nested {depth} levels deep, above the limit of "
                  f"{self.max_depth} (job data may be nested at most {data_depth} levels: "
                  "PDFTASKS_MAX_DATA_DEPTH)")
        return json.dumps(_error_body("invalid_request", detail, field="body")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await self._reject(send, str(declared))
                return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send, f"more than {self.max_bytes}")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = await self._too_deep(scope, body)
        if refusal is not None:
            await send({"type": "http.response.start", "status": 422,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(refusal)).encode())]})
            await send({"type": "http.response.body", "body": refusal})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class LatencyMiddleware:
    """Observes every request's latency, labelled by route template (not by raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            state = getattr(scope.get("app"), "state", None)
            api = getattr(state, "api", None) if state is not None else None
            if api is not None:
                route = scope.get("route")
                api.metrics.observe(scope["method"], getattr(route, "path", "unmatched"),
                                    status, time.perf_counter() - started)


# The application.


bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer <key>")


async def _state(request: Request) -> ApiState:
    state: ApiState | None = getattr(request.app.state, "api", None)
    if state is None:
        raise ApiError(503, "starting", "the API is starting", headers={"Retry-After": "1"})
    return state


async def authenticated(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Security(bearer)
                        ) -> Caller:
    """Dependency: the caller of a job route (401 without a valid key; 429 over the limit)."""
    state = await _state(request)
    caller = state.authenticate(credentials)
    await state.rate_limit(caller)
    return caller


def _open_or_authenticated(flag: str) -> Any:
    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Security(bearer)
                         ) -> ApiState:
        state = await _state(request)
        if not getattr(state.settings, flag):
            await state.rate_limit(state.authenticate(credentials))
        return state

    return dependency


CallerDep = Annotated[Caller, Depends(authenticated)]
JobId = Annotated[str, PathParam(min_length=1, max_length=128, description="The job's id.")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255,
    description="Same key and same body within 24 h: the same job, not a new one.")]


def _document(state: ApiState, job: Any) -> dict[str, Any]:
    """The job's status document as a client sees it: an ``error`` the worker recorded
    says what went wrong without naming the server's paths."""
    doc = job_document(job, BASE_PATH)
    if doc.get("error"):
        doc["error"] = redact_paths(str(doc["error"]), state.settings)
    return doc


def _accepted(job_id: str, status: str = "pending") -> dict[str, Any]:
    return {"job_id": job_id, "status": status, "check_url": f"{BASE_PATH}/{job_id}"}


def build_api(settings: Settings | None = None) -> FastAPI:
    """The FastAPI application; its state (Redis, job manager) is made at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        state = ApiState(settings)
        api.state.api = state
        gc.freeze()  # what was loaded so far stays: shorter collections while serving
        try:
            yield
        finally:
            api.state.api = None
            await state.close()

    s = settings or get_settings()
    api = FastAPI(
        title="pdftasks HTTP API",
        version="1",
        description="Submit, poll, download, cancel and monitor PDF jobs. Authenticate with "
                    "`Authorization: Bearer <key>`; every error is JSON "
                    "`{\"error\", \"detail\"}`.",
        lifespan=lifespan,
    )
    api.add_middleware(BodyLimitMiddleware, max_bytes=s.api_max_body_bytes,
                       max_depth=s.max_data_depth + BODY_DEPTH_MARGIN)
    api.add_middleware(LatencyMiddleware)
    _add_error_handlers(api)
    _add_routes(api, s)
    return api


def _add_error_handlers(api: FastAPI) -> None:
    import redis
    from kombu.exceptions import OperationalError

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        field, detail = _messages(list(exc.errors()))
        content_type = request.headers.get("content-type", "")
        if field == "body" and "json" not in content_type.lower() and request.method in (
                "POST", "PUT", "PATCH"):
            detail = ("body: expected a JSON object sent with 'Content-Type: "
                      f"application/json' (got {content_type or 'no Content-Type'!r})")
        return JSONResponse(_error_body("invalid_request", detail, field=field),
                            status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not just one route's
            routes = [r for r in request.app.routes
                      if getattr(r, "path_regex", None) is not None
                      and r.path_regex.match(request.url.path)]
            static = [r for r in routes if "{" not in r.path]  # /batch, not /{job_id}
            headers["Allow"] = ", ".join(sorted(
                {m for r in static or routes for m in getattr(r, "methods", None) or ()}))
        return JSONResponse(_error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=headers)

    @api.exception_handler(InvalidJobError)
    async def _invalid_job(request: Request, exc: InvalidJobError) -> JSONResponse:
        state = getattr(request.app.state, "api", None)
        detail = redact_paths(str(exc), state.settings if state is not None else None)
        return JSONResponse(_error_body("invalid_request", detail), status_code=422)

    async def _broker(request: Request, exc: Exception) -> JSONResponse:
        # The exception's text names hosts, ports or socket paths: for the log only.
        log.warning("broker unavailable: %s", exc)
        return JSONResponse(_error_body("broker_unavailable",
                                        "the queue is unreachable, try again later "
                                        f"({type(exc).__name__})"),
                            status_code=503,
                            headers={"Retry-After": str(BROKER_RETRY_AFTER_S)})

    for kind in (BrokerUnavailableError, redis.ConnectionError, redis.TimeoutError,
                 OperationalError):
        api.add_exception_handler(kind, _broker)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never the exception's text (paths, hosts, data): the log has it.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(_error_body("internal_error",
                                        "unexpected server error; see the server log"),
                            status_code=500)


def _add_routes(api: FastAPI, s: Settings) -> None:  # noqa: C901 - the route table
    # Open routes say so in the OpenAPI document: a key is accepted, not required.
    open_health: dict[str, Any] | None = {"security": [{}]} if s.api_open_health else None
    open_metrics: dict[str, Any] | None = {"security": [{}]} if s.api_open_metrics else None

    @api.post(BASE_PATH, status_code=202, response_model=JobAccepted,
              responses=_responses(*_COMMON, 409), tags=["jobs"],
              summary="Queue one PDF job")
    async def create_pdf(body: PdfRequest, caller: CallerDep,
                         request: Request, idempotency_key: IdempotencyKey = None
                         ) -> Response:
        state = caller.state
        # Resolving a callback host or encoding megabytes of data would stall the event
        # loop: those checks run in a thread. Small jobs are checked right here.
        size = request.headers.get("content-length", "")
        if (body.callback_url is not None or not (size.isascii() and size.isdigit())
                or int(size) > INLINE_BYTES):
            await run_in_threadpool(state.check_request, body)
        else:
            state.check_request(body)
        idem = None
        if idempotency_key is not None:
            idem = Idempotency(state, caller, idempotency_key, "create", body)
            replay = await idem.begin_async()
            if replay is not None:
                return replay
        try:
            job_id = await state.batcher.submit(state.job_item(caller, body), caller.tenant,
                                                idem)
        except BaseException:
            if idem is not None:
                await idem.abort_async()
            raise
        doc = _accepted(job_id)
        return JSONResponse(doc, status_code=202, headers={"Location": doc["check_url"]})

    @api.post(f"{BASE_PATH}/batch", status_code=202, response_model=BatchResponse,
              responses=_responses(*_COMMON, 409), tags=["jobs"],
              summary="Queue many PDF jobs (per-item errors reported)")
    def create_batch(body: BatchRequest, caller: CallerDep,
                     idempotency_key: IdempotencyKey = None) -> Response:
        state = caller.state
        entries: list[dict[str, Any]] = []
        valid: list[tuple[int, dict[str, Any]]] = []
        checked: set[tuple[str, str | None]] = set()
        for index, raw in enumerate(body.jobs):
            prefix = f"jobs.{index}."
            try:
                req = PdfRequest.model_validate(raw)
                state.check_request(req, checked, prefix)
            except ValidationError as exc:
                field, detail = _messages(list(exc.errors()), prefix)
                entries.append({"index": index, "error": "invalid_request", "detail": detail,
                                "field": field})
                continue
            except ApiError as exc:
                entries.append({"index": index, "error": exc.error, "detail": exc.detail,
                                "field": exc.extra.get("field")})
                continue
            entries.append({"index": index})
            valid.append((index, state.job_item(caller, req, body.priority)))
        idem = None
        if idempotency_key is not None:
            idem = Idempotency(state, caller, idempotency_key, "batch", body)
            replay = idem.begin()
            if replay is not None:
                return replay
        try:
            ids = state.manager.submit_batch([item for _, item in valid]) if valid else []
            for (index, _), job_id in zip(valid, ids, strict=True):
                entries[index].update(_accepted(job_id))
            doc = {"jobs": entries, "queued": len(ids), "rejected": len(entries) - len(ids)}
            recorded: list[Any] = [(caller.tenant, job_id, item["priority"], None, None)
                                   for (_, item), job_id in zip(valid, ids, strict=True)]
            if idem is not None:
                recorded.append((caller.tenant, "", "", idem, (202, doc)))
            state.record_submitted(recorded)
        except BaseException:
            if idem is not None:
                idem.abort()
            raise
        return JSONResponse(doc, status_code=202)

    @api.get(BASE_PATH, response_model=JobList, responses=_responses(*_COMMON), tags=["jobs"],
             summary="List your jobs, newest first")
    def list_pdfs(caller: CallerDep,
                  status: Annotated[StatusName | None, Query()] = None,
                  limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50) -> Response:
        state = caller.state
        jobs = state.list_jobs(caller, JobStatus(status) if status else None, limit)
        return JSONResponse({"jobs": [_document(state, j) for j in jobs], "count": len(jobs)})

    @api.get(f"{BASE_PATH}/{{job_id}}", response_model=JobDocument,
             responses=_responses(*_COMMON, 404), tags=["jobs"], summary="A job's status")
    def get_pdf(job_id: JobId, caller: CallerDep) -> Response:
        state = caller.state
        return JSONResponse(_document(state, state.own_job(caller, job_id)))

    @api.get(f"{BASE_PATH}/{{job_id}}/download", response_class=FileResponse,
             responses={200: {"content": {"application/pdf": {}},
                              "description": "The PDF (Content-Disposition: attachment)"},
                        **_responses(*_COMMON, 404, 409, 410)},
             tags=["jobs"], summary="Download the PDF of a completed job")
    def download_pdf(job_id: JobId, caller: CallerDep) -> Response:
        state = caller.state
        job = state.own_job(caller, job_id)
        if job.status is not JobStatus.COMPLETED:
            raise ApiError(409, "not_ready", f"the PDF is not ready: the job is "
                           f"{job.status.value}", status=job.status.value)
        if job.result_path and job.result_path.startswith("s3://"):
            # On S3 the download is a short-lived presigned URL; the path is the job's own.
            url = str(state.manager.download_url(job_id))
            return RedirectResponse(url, status_code=307,
                                    headers={"Cache-Control": "private, no-store"})
        output_dir = state.settings.output_dir
        path = Path(job.result_path or "").resolve()
        if not job.result_path or not path.is_relative_to(output_dir) or not path.is_file():
            raise ApiError(410, "gone", "the PDF is no longer stored (removed by cleanup, or "
                           "this server does not share the workers' output directory)")
        return FileResponse(path, media_type="application/pdf", filename=job.output_filename,
                            headers={"Cache-Control": "private, no-store"})

    @api.delete(f"{BASE_PATH}/{{job_id}}", response_model=CancelResponse,
                responses=_responses(*_COMMON, 404, 409), tags=["jobs"],
                summary="Cancel a pending or retrying job")
    def cancel_pdf(job_id: JobId, caller: CallerDep) -> Response:
        state = caller.state
        state.own_job(caller, job_id)
        if state.manager.cancel_job(job_id):
            return JSONResponse({"job_id": job_id, "status": "cancelled",
                                 "message": "Job cancelled"})
        job = state.own_job(caller, job_id)
        raise ApiError(409, "cannot_cancel", f"cannot cancel the job: it is "
                       f"{job.status.value} (only pending or retrying jobs can be cancelled)",
                       status=job.status.value)

    @api.post(f"{BASE_PATH}/{{job_id}}/retry", status_code=202, response_model=JobAccepted,
              responses=_responses(*_COMMON, 404, 409), tags=["jobs"],
              summary="Queue a failed or cancelled job again under the same id")
    def retry_pdf(job_id: JobId, caller: CallerDep) -> Response:
        state = caller.state
        state.own_job(caller, job_id)
        if state.manager.retry_job(job_id):
            doc = _accepted(job_id)
            return JSONResponse(doc, status_code=202, headers={"Location": doc["check_url"]})
        job = state.own_job(caller, job_id)
        raise ApiError(409, "cannot_retry", f"cannot retry the job: it is {job.status.value} "
                       "(only failed or cancelled jobs can be retried)",
                       status=job.status.value)

    @api.get("/api/queue/stats", response_model=QueueStats, responses=_responses(*_COMMON),
             tags=["monitoring"], summary="Counts of the shared queue (all tenants)")
    def queue_stats(caller: CallerDep) -> Response:
        state = caller.state
        stats = state.manager.get_queue_stats()
        stats.pop("running", None)  # this process runs no workers of its own
        return JSONResponse(stats)

    @api.get("/api/health", response_model=Health,
             responses={503: {"model": Health, "description": "Broker unreachable or no "
                                                              "workers"},
                        **_responses(401, 429)},
             tags=["monitoring"], summary="Healthy: the broker answers and workers run",
             openapi_extra=open_health)
    def health(state: Annotated[ApiState, Depends(_open_or_authenticated("api_open_health"))]
               ) -> Response:
        try:
            state.health_redis.ping()
        except Exception as exc:
            log.warning("health: broker unreachable: %s", exc)
            reason = f"broker unreachable: {type(exc).__name__}"
            return JSONResponse({"status": "unhealthy", "broker": "unreachable",
                                 "reason": reason, "error": "unhealthy", "detail": reason},
                                status_code=503)
        workers = state.manager.worker_count()
        counts = state.store.counts()
        queue_size = sum(counts[JobStatus.PENDING].values()) + sum(
            counts[JobStatus.PROCESSING].values())
        doc: dict[str, Any] = {"status": "healthy", "broker": "ok", "workers": workers,
                               "queue_size": queue_size}
        if workers == 0:
            reason = "no workers: no `pdftasks worker` answers on the broker"
            doc.update(status="unhealthy", reason=reason, error="unhealthy", detail=reason)
            return JSONResponse(doc, status_code=503)
        return JSONResponse(doc)

    @api.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}},
                              "description": "Prometheus text format"},
                        **_responses(401, 429, 503)},
             tags=["monitoring"], summary="Prometheus metrics", openapi_extra=open_metrics)
    def metrics(state: Annotated[ApiState, Depends(_open_or_authenticated("api_open_metrics"))]
                ) -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)


app = build_api()
