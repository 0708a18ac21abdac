"""Typed settings, read once from ``PDFTASKS_*`` environment variables.

Precedence: arguments of a single job > ``PDFTASKS_*`` environment > the defaults below.
Every field is documented in the README's Configuration table.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pdftasks.limits import (
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MAX_DATA_ITEMS,
    MAX_DATA_KEYS,
    MAX_DATA_STRING,
)

#: Default soft time limit of one render, in seconds (the job FAILS with a clear message).
SOFT_TIME_LIMIT_S = 60.0
#: Default hard time limit, in seconds: the worker child is killed.
HARD_TIME_LIMIT_S = 90.0
#: How long a reserved Redis message may stay unacknowledged before redelivery, in seconds.
VISIBILITY_TIMEOUT_S = 600
#: Worker children are recycled after a job once their RSS passes this, in MiB.
MAX_MEMORY_PER_CHILD_MB = 512
#: Address-space ceiling of a worker child while it renders, in MiB (0 = no ceiling).
RENDER_MEMORY_LIMIT_MB = 2048
#: How long Celery results are kept, in seconds.
RESULT_EXPIRES_S = 7 * 86400
#: How long job records are kept, in seconds.
JOB_RETENTION_S = 7 * 86400


#: A value that example deployment files use for secrets; refused in any setting.
PLACEHOLDER = "CHANGE-ME"


class Settings(BaseSettings):
    """All pdftasks settings. Environment variable = ``PDFTASKS_`` + field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="PDFTASKS_", extra="ignore")

    home: Path = Field(Path(".pdftasks"), description="State of the zero-setup default; on "
                       "Redis, messages held while Redis was away.")
    broker_url: str | None = Field(None, description="Celery broker; unset = local files.")
    result_backend: str | None = Field(None, description="Celery result backend.")
    templates_dir: Path = Path("templates")
    output_dir: Path = Path("output")
    queue_namespace: str = Field("pdf", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    soft_time_limit_s: float = Field(SOFT_TIME_LIMIT_S, gt=0)
    hard_time_limit_s: float = Field(HARD_TIME_LIMIT_S, gt=0)
    visibility_timeout_s: int = Field(VISIBILITY_TIMEOUT_S, gt=0)
    max_memory_per_child_mb: int = Field(MAX_MEMORY_PER_CHILD_MB, ge=0)
    render_memory_limit_mb: int = Field(RENDER_MEMORY_LIMIT_MB, ge=0)
    max_data_bytes: int = Field(MAX_DATA_BYTES, gt=0,
                                description="Largest JSON data of one job, in bytes.")
    max_data_depth: int = Field(MAX_DATA_DEPTH, ge=1, le=200,
                                description="Deepest nesting of objects/lists in job data.")
    max_data_keys: int = Field(MAX_DATA_KEYS, ge=1,
                               description="Most keys in one object of job data.")
    max_data_items: int = Field(MAX_DATA_ITEMS, ge=1,
                                description="Most items in one list of job data.")
    max_data_string: int = Field(MAX_DATA_STRING, ge=1,
                                 description="Longest string in job data, in characters.")
    allowed_url_prefixes: str = Field(
        "", description="Comma-separated http(s) URL prefixes a template may fetch."
    )
    default_max_retries: int = Field(3, ge=0, le=100)
    retry_backoff_s: int = Field(2, ge=1, description="First retry delay; doubles each time.")
    retry_backoff_max_s: int = Field(600, ge=1)
    retry_jitter: bool = True
    max_redeliveries: int = Field(
        3, ge=0, description="Worker crashes tolerated on one job before it FAILS.")
    job_store_url: str | None = Field(None, description="Job records; unset = derived.")
    job_retention_s: int = Field(JOB_RETENTION_S, ge=60)
    on_completed: str | None = Field(None, description="module:function(job), worker side.")
    on_failed: str | None = Field(None, description="module:function(job, error), worker side.")
    result_expires_s: int = Field(RESULT_EXPIRES_S, ge=60)
    local_polling_interval_s: float = Field(0.01, gt=0)
    log_level: str = "INFO"
    warmup: bool = True

    # Scheduled reports and cleanup (Celery Beat).
    timezone: str = Field("UTC", description="IANA zone of the schedule's times.")
    schedule_file: Path | None = Field(
        None, description="The beat schedule; unset = ./beat_schedule.py, else the repo's.")
    report_source: str = Field("pdftasks.reports:sample_source",
                               description="module:object providing report data.")
    beat_grace_s: int = Field(3600, ge=0, description="Run a missed entry if this recent.")
    cleanup_days: float = Field(30, gt=0, description="Retention of PDFs, in days.")

    # HTTP API.
    api_keys: str = Field("", description="Comma-separated tenant:sha256-hex-of-key pairs.")
    api_open_health: bool = True
    api_open_metrics: bool = True
    api_rate_limit_per_min: int = Field(600, ge=1)
    api_max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    idempotency_ttl_s: int = Field(86400, ge=60)
    webhook_secret: str | None = None
    webhook_allowed_hosts: str = Field(
        "", description="Comma-separated hosts/CIDRs webhooks may reach despite being private.")
    webhook_max_retries: int = Field(8, ge=0)

    # Operations: logs, worker heartbeat, Flower, Prometheus.
    log_format: str = Field("text", pattern="^(text|json)$")
    heartbeat_file: Path | None = Field(None, description="Touched by each worker bootstep.")
    heartbeat_interval_s: float = Field(10.0, gt=0)
    flower_basic_auth: str | None = Field(None, description="user:password for Flower.")
    metrics_port: int = Field(9808, ge=1, le=65535)

    # AWS (pdftasks.aws): SQS broker (PDFTASKS_BROKER_URL=sqs://), DynamoDB job records and
    # results, S3 storage for PDFs (PDFTASKS_STORAGE=s3://bucket/prefix, with any broker).
    aws_region: str = Field("us-east-1", description="Region of SQS, DynamoDB and S3.")
    aws_endpoint_url: str | None = Field(
        None, description="One endpoint for SQS, DynamoDB and S3 (local servers); unset = AWS.")
    sqs_queue_prefix: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,30}$",
                                  description="Prefix of the SQS queue names.")
    sqs_predefined_queues: str = Field(
        "", description="Existing queues: urgent=URL,high=URL,normal=URL,low=URL (or JSON).")
    sqs_wait_time_s: int = Field(10, ge=0, le=20, description="SQS long polling, in seconds.")
    sqs_polling_interval_s: float = Field(
        0.1, ge=0, description="Pause after an empty SQS poll (kombu's polling_interval).")
    sqs_priority_polling: bool = Field(
        True, description="Free workers poll the queues urgent first (pdftasks.aws.Channel).")
    dynamodb_table: str = Field("pdftasks", pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    storage: str = Field("", description="Where PDFs go: s3://bucket/prefix; empty = "
                                         "PDFTASKS_OUTPUT_DIR.")
    s3_presign_expires_s: int = Field(3600, ge=1, le=7 * 86400,
                                      description="Lifetime of presigned download URLs.")

    @field_validator("*")
    @classmethod
    def _no_placeholder(cls, value: object) -> object:
        # Example deployments carry CHANGE-ME secrets; starting with one is a mistake.
        if isinstance(value, str) and PLACEHOLDER in value.upper():
            raise ValueError(f"still has a {PLACEHOLDER} placeholder: set a real value")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @field_validator("home", "templates_dir", "output_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        import re

        if value and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", value):
            raise ValueError("PDFTASKS_STORAGE must be empty (local output dir) or "
                             "s3://bucket/prefix")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _limits_consistent(self) -> Settings:
        if self.hard_time_limit_s <= self.soft_time_limit_s:
            raise ValueError("PDFTASKS_HARD_TIME_LIMIT_S must be above PDFTASKS_SOFT_TIME_LIMIT_S")
        if self.visibility_timeout_s <= self.hard_time_limit_s:
            raise ValueError(
                "PDFTASKS_VISIBILITY_TIMEOUT_S must be above PDFTASKS_HARD_TIME_LIMIT_S, "
                "or Redis redelivers jobs that are still rendering"
            )
        if self.is_sqs:
            # A retry waits out its countdown in the worker with its message received but
            # unacknowledged: SQS must not redeliver it meanwhile.
            needed = int(self.retry_backoff_max_s + self.hard_time_limit_s) + 60
            self.visibility_timeout_s = max(self.visibility_timeout_s, needed)
            if self.visibility_timeout_s > 43200:
                raise ValueError("PDFTASKS_VISIBILITY_TIMEOUT_S is at most 43200 s on SQS "
                                 "(and must exceed PDFTASKS_RETRY_BACKOFF_MAX_S + the hard "
                                 "time limit)")
        return self

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
    def effective_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        if self.is_sqs:  # results as items of the job table (pdftasks.aws)
            return f"pdftasks.aws.DynamoDBResultBackend+dynamodb://{self.dynamodb_table}"
        return f"file://{self.home / 'results'}"

    @property
    def effective_job_store_url(self) -> str:
        """Job records: the Redis broker's server, DynamoDB with SQS, else SQLite."""
        if self.job_store_url:
            return self.job_store_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        if self.is_sqs:
            return f"dynamodb://{self.dynamodb_table}"
        return f"sqlite:///{self.home / 'jobs.sqlite3'}"

    def to_env(self) -> dict[str, str]:
        """These settings as ``PDFTASKS_*`` variables (for worker subprocesses)."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            env[f"PDFTASKS_{name.upper()}"] = str(value).lower() if isinstance(value, bool) \
                else str(value)
        return env

    @property
    def url_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.allowed_url_prefixes.split(",") if p.strip())


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
