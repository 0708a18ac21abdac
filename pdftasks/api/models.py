"""Request and response models of the HTTP API (pydantic), and the response bodies."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pdftasks.api.constants import BASE_PATH, MAX_BATCH, MAX_METADATA_BYTES
from pdftasks.api.errors import redact_paths
from pdftasks.contrib.webhooks import RESERVED_METADATA, job_document
from pdftasks.errors import InvalidJobError, UnsafePathError
from pdftasks.limits import DataLimits, check_data
from pdftasks.options import JobOptions
from pdftasks.storage import check_output_filename

if TYPE_CHECKING:
    from pdftasks.api.state import ApiState

Priority = Literal["urgent", "high", "normal", "low"]
StatusName = Literal["pending", "processing", "retrying", "completed", "failed", "cancelled"]

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
    options: JobOptions | None = Field(
        None, description="Job options: split, metadata, pdf_variant, einvoice, watermark, "
                          "encrypt, sign, attachments, merge (see the job options reference).")

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
    options: dict[str, Any] = Field(
        default_factory=dict, description="The job's options, secrets shown as \"***\".")
    parts_total: int | None = Field(
        None, description="A split job (`options.split`): how many parts it was cut into "
                          "(null: not cut); COMPLETED once they are merged.")
    parts_done: int | None = Field(
        None, description="A split job: how many of its parts are rendered.")
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



def _document(state: ApiState, job: Any) -> dict[str, Any]:
    """The job's status document as a client sees it: an ``error`` the worker recorded
    says what went wrong without naming the server's paths."""
    doc = job_document(job, BASE_PATH)
    if getattr(job, "parts_total", None):
        doc.update(parts_total=job.parts_total, parts_done=job.parts_done)
    if doc.get("error"):
        doc["error"] = redact_paths(str(doc["error"]), state.settings)
    return doc


def _accepted(job_id: str, status: str = "pending") -> dict[str, Any]:
    return {"job_id": job_id, "status": status, "check_url": f"{BASE_PATH}/{job_id}"}
