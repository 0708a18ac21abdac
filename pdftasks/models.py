"""Job priority and status, as in the product guide."""

from __future__ import annotations

from enum import IntEnum, StrEnum

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
