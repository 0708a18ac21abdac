"""Runtime state of one API process (:class:`ApiState`) and the template checks it makes."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.security import HTTPAuthorizationCredentials
from redis.exceptions import NoScriptError

from pdftasks.api.auth import Caller, hash_key, parse_api_keys
from pdftasks.api.batcher import SubmitBatcher
from pdftasks.api.constants import HEALTH_TIMEOUT_S
from pdftasks.api.errors import ApiError, _invalid, _not_found, redact_paths
from pdftasks.api.metrics import ApiMetrics
from pdftasks.api.models import PdfRequest, _text_error
from pdftasks.contrib.webhooks import (
    CALLBACK_KEY,
    UnsafeCallbackError,
    check_callback_url,
)
from pdftasks.errors import InvalidJobError, TemplateNotFoundError, UnsafePathError
from pdftasks.limits import DataLimits, check_data
from pdftasks.models import TENANT_KEY, JobPriority, JobStatus
from pdftasks.render import resolve_inside
from pdftasks.settings import Settings

if TYPE_CHECKING:
    from pdftasks.api.idempotency import Idempotency

log = logging.getLogger("pdftasks.api")

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

    def __init__(self, settings: Settings) -> None:
        import redis
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import ExponentialBackoff, NoBackoff
        from redis.retry import Retry

        from pdftasks.client import PDFQueueManager, RedisBackend

        s = settings  # build_api's: read once there
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
            settings=s)
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
                "max_retries": req.max_retries,
                "options": None if req.options is None
                else req.options.model_dump(mode="json", exclude_none=True)}
