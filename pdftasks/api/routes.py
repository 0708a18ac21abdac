"""The route table of the HTTP API."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from pdftasks.api.auth import CallerDep, _open_or_authenticated
from pdftasks.api.constants import BASE_PATH, INLINE_BYTES, MAX_LIST
from pdftasks.api.errors import ApiError, _messages
from pdftasks.api.idempotency import Idempotency
from pdftasks.api.models import (
    _COMMON,
    BatchRequest,
    BatchResponse,
    CancelResponse,
    Health,
    JobAccepted,
    JobDocument,
    JobList,
    PdfRequest,
    QueueStats,
    StatusName,
    _accepted,
    _document,
    _responses,
)
from pdftasks.api.state import ApiState
from pdftasks.models import JobStatus
from pdftasks.settings import Settings

log = logging.getLogger("pdftasks.api")

JobId = Annotated[str, PathParam(min_length=1, max_length=128, description="The job's id.")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255,
    description="Same key and same body within 24 h: the same job, not a new one.")]


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
