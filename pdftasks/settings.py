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

#: Default soft time limit of one render, in seconds (the job FAILS with a clear message).
SOFT_TIME_LIMIT_S = 60.0
#: Default hard time limit, in seconds: the worker child is killed.
HARD_TIME_LIMIT_S = 90.0
#: How long a reserved Redis message may stay unacknowledged before redelivery, in seconds.
VISIBILITY_TIMEOUT_S = 600
#: Largest JSON payload accepted for one job, in bytes.
MAX_DATA_BYTES = 5 * 1024 * 1024
#: Worker children are recycled after a job once their RSS passes this, in MiB.
MAX_MEMORY_PER_CHILD_MB = 512
#: Address-space ceiling of a worker child while it renders, in MiB (0 = no ceiling).
RENDER_MEMORY_LIMIT_MB = 2048
#: How long Celery results are kept, in seconds.
RESULT_EXPIRES_S = 7 * 86400
#: How long job records are kept, in seconds.
JOB_RETENTION_S = 7 * 86400


class Settings(BaseSettings):
    """All pdftasks settings. Environment variable = ``PDFTASKS_`` + field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="PDFTASKS_", extra="ignore")

    home: Path = Field(Path(".pdftasks"), description="State of the zero-setup default.")
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
    max_data_bytes: int = Field(MAX_DATA_BYTES, gt=0)
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

    @model_validator(mode="after")
    def _limits_consistent(self) -> Settings:
        if self.hard_time_limit_s <= self.soft_time_limit_s:
            raise ValueError("PDFTASKS_HARD_TIME_LIMIT_S must be above PDFTASKS_SOFT_TIME_LIMIT_S")
        if self.visibility_timeout_s <= self.hard_time_limit_s:
            raise ValueError(
                "PDFTASKS_VISIBILITY_TIMEOUT_S must be above PDFTASKS_HARD_TIME_LIMIT_S, "
                "or Redis redelivers jobs that are still rendering"
            )
        return self

    @property
    def is_local(self) -> bool:
        """True on the zero-setup default: broker and results in files under ``home``."""
        return not self.broker_url

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def effective_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return f"file://{self.home / 'results'}"

    @property
    def effective_job_store_url(self) -> str:
        """Job records: the Redis broker's server, else SQLite under ``home``."""
        if self.job_store_url:
            return self.job_store_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
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
