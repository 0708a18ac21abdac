"""The job record (``Job``), its priority and status, as in the product guide."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, fields
from enum import IntEnum, StrEnum
from typing import Any

from pdftasks.errors import InvalidPriorityError


class JobPriority(IntEnum):
    """Priority levels, processed in this order. Each has its own queue."""

    URGENT = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @classmethod
    def parse(cls, value: object) -> JobPriority:
        """Accept a JobPriority, its name in any case (``"urgent"``) or its number (0-3)."""
        if isinstance(value, JobPriority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        raise InvalidPriorityError(
            f"unknown priority {value!r}: use urgent, high, normal or low (or 0-3)"
        )

    @property
    def label(self) -> str:
        return self.name.lower()


class JobStatus(StrEnum):
    """Where a job is in its lifecycle."""

    PENDING = "pending"
    PROCESSING = "processing"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


#: The job metadata key naming the API tenant that owns a job (set by the HTTP API; its
#: PDFs are stored under that tenant, see ``pdftasks.storage.storage_key``).
TENANT_KEY = "tenant"

_TIMES = ("created_at", "started_at", "completed_at")


def part_job_id(parent_id: str, index: int) -> str:
    """The job id of part ``index`` (0-based) of the split job ``parent_id``."""
    return f"{parent_id}.part{index + 1:04d}"


def _ts(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value else None


def _dt(value: float | str | None) -> dt.datetime | None:
    if value in (None, "", "None"):
        return None
    return dt.datetime.fromtimestamp(float(value), dt.UTC)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Job:
    """One PDF job, with the guide's fields. Times are timezone-aware UTC datetimes."""

    job_id: str
    template: str
    data: dict[str, Any]
    output_filename: str
    css_file: str | None = None
    status: JobStatus = JobStatus.PENDING
    priority: JobPriority = JobPriority.NORMAL
    created_at: dt.datetime = field(default_factory=now)
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    result_path: str | None = None
    error: str | None = None
    retry_count: int = 0
    max_retries: int = 3
    metadata: dict[str, Any] = field(default_factory=dict)
    pages: int | None = None
    attempts: int = 0
    #: The job's options (``pdftasks.options``), secrets redacted.
    options: dict[str, Any] = field(default_factory=dict)
    #: A split job (``options.split``): how many parts it was cut into (None: not cut), and
    #: how many of them are rendered.
    parts_total: int | None = None
    parts_done: int = 0
    #: A part of a split job: the parent job's id.
    parent_id: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.completed_at:
            return (self.completed_at - self.started_at).total_seconds()
        return None

    def to_record(self) -> dict[str, str]:
        """Flat string mapping (Redis hash / SQLite row)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _TIMES:
                value = "" if value is None else repr(_ts(value))
            elif f.name in ("data", "metadata", "options"):
                value = json.dumps(value, separators=(",", ":"))
            elif f.name == "status":
                value = value.value
            elif f.name == "priority":
                value = str(int(value))
            elif value is None:
                value = ""
            out[f.name] = str(value)
        return out

    @classmethod
    def from_record(cls, rec: dict[str, str]) -> Job:
        def opt(name: str) -> str | None:
            return rec.get(name) or None

        return cls(
            job_id=rec["job_id"], template=rec["template"], data=json.loads(rec["data"]),
            output_filename=rec["output_filename"], css_file=opt("css_file"),
            status=JobStatus(rec["status"]), priority=JobPriority(int(rec["priority"])),
            created_at=_dt(rec["created_at"]) or now(), started_at=_dt(opt("started_at")),
            completed_at=_dt(opt("completed_at")), result_path=opt("result_path"),
            error=opt("error"), retry_count=int(rec.get("retry_count") or 0),
            max_retries=int(rec.get("max_retries") or 0),
            metadata=json.loads(rec.get("metadata") or "{}"),
            pages=int(rec["pages"]) if rec.get("pages") else None,
            attempts=int(rec.get("attempts") or 0),
            options=json.loads(rec.get("options") or "{}"),
            parts_total=int(rec["parts_total"]) if rec.get("parts_total") else None,
            parts_done=int(rec.get("parts_done") or 0),
            parent_id=opt("parent_id"),
        )
