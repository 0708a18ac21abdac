"""Core settings: broker, directories, workers, limits; jobs: retries, records, hooks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, WrapValidator, field_serializer, field_validator, model_validator

from pdftasks.limits import (
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MAX_DATA_ITEMS,
    MAX_DATA_KEYS,
    MAX_DATA_STRING,
)
from pdftasks.settings.base import CommaList, TopicModel, none_is_derived, shown

#: Default soft time limit of one render, in seconds (the job FAILS with a clear message).
SOFT_TIME_LIMIT_S = 60.0
#: Default hard time limit, in seconds: the worker child is killed.
HARD_TIME_LIMIT_S = 90.0
#: How long a reserved Redis message may stay unacknowledged before redelivery, in seconds.
VISIBILITY_TIMEOUT_S = 600
#: Largest visibility timeout SQS accepts, in seconds (12 h).
SQS_MAX_VISIBILITY_TIMEOUT_S = 43200
#: Worker children are recycled after a job once their RSS passes this, in MiB.
MAX_MEMORY_PER_CHILD_MB = 512
#: Address-space ceiling of a worker child while it renders, in MiB (0 = no ceiling).
RENDER_MEMORY_LIMIT_MB = 2048
#: How long Celery results are kept, in seconds.
RESULT_EXPIRES_S = 7 * 86400
#: How long job records are kept, in seconds.
JOB_RETENTION_S = 7 * 86400


class CoreSettings(TopicModel):
    """Broker, directories, workers, limits of a render; retries, job records, hooks."""

    table_title = "Core: broker, directories, workers, limits"
    table_sections = {"default_max_retries": "Jobs: retries, records, hooks"}

    broker_url: str | None = Field(
        None, json_schema_extra=shown("unset (local files)"),
        description="Celery broker URL, e.g. `redis://:password@host:6379/0`; `sqs://` selects "
                    "Amazon SQS (`sqs://KEY:SECRET@` for explicit keys, else boto3's "
                    "credential chain). Unset = the zero-setup default: queues in files "
                    "under `PDFTASKS_HOME`.")
    result_backend: str | None = Field(
        None, json_schema_extra=shown("derived"),
        description="Celery result backend URL. Unset = the Redis broker URL; on SQS the "
                    "DynamoDB table; else `file://$PDFTASKS_HOME/results`. A `redis://` URL "
                    "is served through `pdftasks.brokers.redis_results`, which lets batch submits "
                    "skip result subscriptions.")
    home: Path = Field(
        Path(".pdftasks"),
        description="Directory of the zero-setup default's state (broker folders, results, "
                    "job records, demo log); on Redis, messages a worker took just as Redis "
                    "went away (`rescued/`, put back when it is reachable again). Made "
                    "absolute at start-up.")
    templates_dir: Path = Field(
        Path("templates"),
        description="Directory of templates, CSS and assets; nothing outside it is read. "
                    "Made absolute at start-up.")
    output_dir: Path = Field(
        Path("output"),
        description="Directory of generated PDFs (without `PDFTASKS_STORAGE`); nothing "
                    "outside it is written. Made absolute at start-up.")
    queue_namespace: str = Field(
        "pdf", pattern=r"^[A-Za-z0-9_-]{1,40}$",
        description="Prefix of queue names (`pdf.urgent` … `pdf.low`) and job records; "
                    "1–40 letters, digits, `_` or `-`.")
    concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, le=256,
        json_schema_extra=shown("CPU count"),
        description="Worker processes (render children) per `pdftasks worker`, 1–256.")
    soft_time_limit_s: float = Field(
        SOFT_TIME_LIMIT_S, gt=0,
        description="Seconds a render may run; a longer one is stopped and the job FAILS "
                    "with a message saying so.")
    hard_time_limit_s: float = Field(
        HARD_TIME_LIMIT_S, gt=0,
        description="Seconds after which Celery kills the worker child (backstop); must be "
                    "above `PDFTASKS_SOFT_TIME_LIMIT_S`.")
    # Typed int for callers: None (unset) is replaced by the derived value when validated.
    visibility_timeout_s: Annotated[int, WrapValidator(none_is_derived)] = Field(
        None, gt=0,  # type: ignore[assignment]
        json_schema_extra=shown("derived: 600; SQS 750"),
        description="Seconds a reserved, unacknowledged job stays with its worker before the "
                    "broker hands it to another; must be above the hard time limit. Unset = "
                    "600, on SQS `PDFTASKS_RETRY_BACKOFF_MAX_S` + `PDFTASKS_HARD_TIME_LIMIT_S` "
                    "+ 60 (a retry waits out its backoff with its message unacknowledged); "
                    "an explicit value below that minimum, or above 43200 on SQS, is refused.")
    max_memory_per_child_mb: int = Field(
        MAX_MEMORY_PER_CHILD_MB, ge=0,
        description="MiB of RSS after which a worker child is replaced once its job is done "
                    "(0 = never).")
    render_memory_limit_mb: int = Field(
        RENDER_MEMORY_LIMIT_MB, ge=0,
        description="Address-space ceiling (`RLIMIT_AS`) of a worker child while it renders, "
                    "in MiB; 0 = none.")
    max_data_bytes: int = Field(
        MAX_DATA_BYTES, gt=0, description="Largest JSON `data` of one job, in bytes.")
    max_data_depth: int = Field(
        MAX_DATA_DEPTH, ge=1, le=200,
        description="Deepest nesting of objects and lists in `data` (the object itself is "
                    "level 1), 1–200.")
    max_data_keys: int = Field(
        MAX_DATA_KEYS, ge=1, description="Most keys in one object of `data`.")
    max_data_items: int = Field(
        MAX_DATA_ITEMS, ge=1, description="Most items in one list of `data`.")
    max_data_string: int = Field(
        MAX_DATA_STRING, ge=1,
        description="Longest string (key or value) in `data`, in characters.")
    allowed_url_prefixes: CommaList = Field(
        default_factory=list,
        description="Comma-separated `http(s)://` URL prefixes templates may fetch; empty = "
                    "no network access.")
    local_polling_interval_s: float = Field(
        0.01, gt=0, description="Seconds between queue polls of the zero-setup default.")
    log_level: str = Field("INFO", description="Log level of workers and beat "
                                               "(`DEBUG`, `INFO`, `WARNING`, `ERROR`).")
    warmup: bool = Field(
        True, description="Render a tiny document when a worker child starts (the first "
                          "real job is then not slower).")
    early_fetch: bool = Field(
        True, description="A worker takes a pool process's next message when its render "
                          "ends, so taking it overlaps the end of the current job; the message "
                          "waits in the worker until a process is free (none holds two jobs). "
                          "The next job is then chosen a few ms before its process is free. "
                          "`false`: only once the current job is acknowledged.")

    # Jobs: retries, records, hooks.
    default_max_retries: int = Field(
        3, ge=0, le=100,
        description="Retries of transient failures per job, 0–100 (per job: `max_retries=`).")
    retry_backoff_s: int = Field(
        2, ge=1, description="Seconds before the first retry; doubles with each retry.")
    retry_backoff_max_s: int = Field(
        600, ge=1, description="Longest backoff between retries, in seconds.")
    retry_jitter: bool = Field(
        True, description="Randomise each retry delay between 0 and its backoff (full "
                          "jitter).")
    max_redeliveries: int = Field(
        3, ge=0,
        description="Worker deaths tolerated on one job before it FAILS (poison job).")
    job_store_url: str | None = Field(
        None, json_schema_extra=shown("derived"),
        description="Where job records live. Unset = the Redis broker URL; on SQS "
                    "`dynamodb://<PDFTASKS_DYNAMODB_TABLE>`; else "
                    "`sqlite:///$PDFTASKS_HOME/jobs.sqlite3`.")
    job_retention_s: int = Field(
        JOB_RETENTION_S, ge=60, description="Seconds job records are kept (at least 60).")
    on_completed: str | None = Field(
        None, description="`module:function(job)` called in the worker when a job completes.")
    on_failed: str | None = Field(
        None, description="`module:function(job, error)` called in the worker for each "
                          "failed attempt.")
    result_expires_s: int = Field(
        RESULT_EXPIRES_S, ge=60, description="Seconds Celery keeps results (at least 60).")

    @field_validator("home", "templates_dir", "output_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Normalisation only: the same directory, spelt absolute.
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _limits_consistent(self) -> Self:
        if self.hard_time_limit_s <= self.soft_time_limit_s:
            raise ValueError("PDFTASKS_HARD_TIME_LIMIT_S must be above PDFTASKS_SOFT_TIME_LIMIT_S")
        # A retry waits out its countdown in the worker with its message received but
        # unacknowledged: SQS must not redeliver it meanwhile.
        sqs_minimum = int(self.retry_backoff_max_s + self.hard_time_limit_s) + 60
        if self.visibility_timeout_s is None:  # derived; stays out of model_fields_set
            derived = max(VISIBILITY_TIMEOUT_S, sqs_minimum) if self.is_sqs \
                else VISIBILITY_TIMEOUT_S
            self.__dict__["visibility_timeout_s"] = derived
            self.__pydantic_fields_set__.discard("visibility_timeout_s")
        timeout = self.visibility_timeout_s
        explicit = "visibility_timeout_s" in self.model_fields_set
        how = "" if explicit else f" (its default is {timeout} s)"
        if timeout <= self.hard_time_limit_s:
            raise ValueError(
                f"PDFTASKS_VISIBILITY_TIMEOUT_S must be above PDFTASKS_HARD_TIME_LIMIT_S "
                f"({self.hard_time_limit_s:g} s), or the broker redelivers jobs that are "
                f"still rendering{how}")
        if self.is_sqs:
            if explicit and timeout < sqs_minimum:
                raise ValueError(
                    f"PDFTASKS_VISIBILITY_TIMEOUT_S is {timeout} s: on SQS it must be at "
                    f"least {sqs_minimum} s (PDFTASKS_RETRY_BACKOFF_MAX_S + "
                    f"PDFTASKS_HARD_TIME_LIMIT_S + 60), or leave it unset")
            if timeout > SQS_MAX_VISIBILITY_TIMEOUT_S:
                raise ValueError(
                    f"PDFTASKS_VISIBILITY_TIMEOUT_S is at most {SQS_MAX_VISIBILITY_TIMEOUT_S} "
                    f"s on SQS (and must be at least PDFTASKS_RETRY_BACKOFF_MAX_S + "
                    f"PDFTASKS_HARD_TIME_LIMIT_S + 60 = {sqs_minimum} s){how}")
        return self

    @field_serializer("visibility_timeout_s")
    def _dump_derived_as_unset(self, value: int) -> int | None:
        # A derived timeout dumps as None, so Settings(**s.model_dump(), broker_url=...)
        # derives it again for the new broker instead of taking it as an explicit value.
        return value if "visibility_timeout_s" in self.model_fields_set else None

    @property
    def is_local(self) -> bool:
        """True on the zero-setup default: broker and results in files under ``home``."""
        return not self.broker_url

    @property
    def is_sqs(self) -> bool:
        """True when the broker is Amazon SQS (job records and results on DynamoDB)."""
        return bool(self.broker_url and self.broker_url.startswith("sqs://"))

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def url_prefixes(self) -> tuple[str, ...]:
        return tuple(self.allowed_url_prefixes)

