"""Typed settings, read once from ``PDFTASKS_*`` environment variables.

Precedence: arguments of a single job > ``PDFTASKS_*`` environment > the defaults below.
Every field has a ``description``; the README's Configuration table is generated from them
(``python -m pdftasks.settings --markdown``, or ``--write README.md``; a unit test checks
that the README is up to date).

Explicit construction is strict: ``Settings(typo=1)`` raises, naming the unknown key.

Longer than 500 lines because every one of some 60 fields carries its description, unit
and documented default here (the source of the generated settings table).
Unknown ``PDFTASKS_*`` environment variables are ignored (``PDFTASKS_SCHEDULE_<NAME>`` is
read by :mod:`pdftasks.contrib.beat`). Secrets are :class:`pydantic.SecretStr`
(``.get_secret_value()`` gives the value), and ``repr()`` hides URL passwords;
:meth:`Settings.to_env` gives the real values (for worker subprocesses).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    WrapValidator,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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


#: A value that example deployment files use for secrets; refused in any setting.
PLACEHOLDER = "CHANGE-ME"

ENV_PREFIX = "PDFTASKS_"

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")


def redact_url(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@`` replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _comma_list(value: object) -> object:
    """The environment's comma-separated form of a list setting (blanks dropped)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value if str(part).strip()]
    return value


def _none_is_derived(value: object, handler: Any) -> object:
    # None (the default, or a dump of derived settings) = compute it in _limits_consistent.
    return None if value is None else handler(value)


#: A list setting: ``a,b,c`` in the environment (not JSON), a list or that string in code.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


def _shown(default: str) -> dict[str, Any]:
    """The default as the README shows it, when it is computed."""
    return {"shown_default": default}


class Settings(BaseSettings):
    """All pdftasks settings. Environment variable = ``PDFTASKS_`` + field name in capitals."""

    # Errors do not echo the input: it holds secrets and URLs with passwords.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid",
                                      hide_input_in_errors=True)

    # Core: broker, directories, workers, limits.
    broker_url: str | None = Field(
        None, json_schema_extra=_shown("unset (local files)"),
        description="Celery broker URL, e.g. `redis://:password@host:6379/0`; `sqs://` selects "
                    "Amazon SQS (`sqs://KEY:SECRET@` for explicit keys, else boto3's "
                    "credential chain). Unset = the zero-setup default: queues in files "
                    "under `PDFTASKS_HOME`.")
    result_backend: str | None = Field(
        None, json_schema_extra=_shown("derived"),
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
        json_schema_extra=_shown("CPU count"),
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
    visibility_timeout_s: Annotated[int, WrapValidator(_none_is_derived)] = Field(
        None, gt=0,  # type: ignore[assignment]
        json_schema_extra=_shown("derived: 600; SQS 750"),
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
        None, json_schema_extra=_shown("derived"),
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

    # Scheduled reports and cleanup (Celery Beat).
    timezone: str = Field(
        "UTC", description="IANA time zone of the schedule's wall-clock times.")
    schedule_file: Path | None = Field(
        None, json_schema_extra=_shown(
            "`./beat_schedule.py`, else the packaged `pdftasks.contrib.default_schedule`"),
        description="The beat schedule file.")
    report_source: str = Field(
        "pdftasks.contrib.reports:sample_source",
        description="`module:object` giving the data of scheduled reports.")
    beat_grace_s: int = Field(
        3600, ge=0,
        description="Seconds: a missed entry still runs when beat returns within this "
                    "(Celery's `beat_cron_starting_deadline`).")
    cleanup_days: float = Field(
        30, gt=0,
        description="Age in days of PDFs, finished job records and results that the cleanup "
                    "entry deletes.")

    # HTTP API and webhooks.
    api_keys: SecretStr = Field(
        SecretStr(""), json_schema_extra=_shown("empty (every job route 401)"),
        description="Comma-separated `tenant:<sha256 hex of key>` pairs (a tenant may have "
                    "several); `pdftasks api --new-key TENANT` prints one.")
    api_open_health: bool = Field(True, description="`/api/health` answers without a key.")
    api_open_metrics: bool = Field(True, description="`/metrics` answers without a key.")
    api_rate_limit_per_min: int = Field(
        600, ge=1, description="Requests per API key per clock minute.")
    api_max_body_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="Largest request body, in bytes (413 above).")
    idempotency_ttl_s: int = Field(
        86400, ge=60, description="Seconds an `Idempotency-Key` is remembered (at least 60).")
    webhook_secret: SecretStr | None = Field(
        None, json_schema_extra=_shown("unset (no webhooks)"),
        description="Root secret of webhook signatures; without it `callback_url` is "
                    "refused (422) and nothing is sent.")
    webhook_allowed_hosts: CommaList = Field(
        default_factory=list,
        description="Comma-separated host names, addresses or CIDR networks webhooks may "
                    "reach although private (e.g. `hooks.internal,10.1.0.0/16`).")
    webhook_max_retries: int = Field(
        8, ge=0, description="Retries of a failed webhook delivery (backoff as for jobs).")

    # Operations: logs, worker heartbeat, Flower, Prometheus.
    log_format: str = Field(
        "text", pattern="^(text|json)$",
        description="`text`, or `json`: one JSON object per log line, with job id, priority, "
                    "template, duration and outcome for each finished attempt.")
    heartbeat_file: Path | None = Field(
        None, json_schema_extra=_shown("unset (`/tmp/pdftasks/heartbeat` in the image)"),
        description="File a worker rewrites from its event loop; container probes check "
                    "its age.")
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Seconds between heartbeat writes.")
    flower_basic_auth: SecretStr | None = Field(
        None,
        description="`user:password` (comma-separated pairs) for `pdftasks flower`, which "
                    "does not start without it unless `--insecure-no-auth`.")
    metrics_port: int = Field(
        9808, ge=1, le=65535, description="TCP port of `pdftasks metrics`.")

    # AWS: SQS broker (PDFTASKS_BROKER_URL=sqs://) and DynamoDB results (pdftasks.brokers.sqs),
    # DynamoDB job records (pdftasks.stores.dynamodb), S3 storage for PDFs (pdftasks.storage.s3;
    # PDFTASKS_STORAGE=s3://bucket/prefix, with any broker); setup: pdftasks.contrib.aws.
    aws_region: str = Field("us-east-1", description="Region of SQS, DynamoDB and S3.")
    aws_endpoint_url: str | None = Field(
        None, json_schema_extra=_shown("unset (AWS)"),
        description="One endpoint for SQS, DynamoDB and S3, e.g. a local `moto_server`.")
    sqs_queue_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9_-]{0,30}$",
        description="Prefix of the SQS queue names (`prod-` → `prod-pdf-urgent`); up to 30 "
                    "letters, digits, `_` or `-`.")
    sqs_predefined_queues: str = Field(
        "",
        description="Existing queues: `urgent=URL,high=URL,normal=URL,low=URL`, a JSON "
                    "object, or one base URL `…/pdf` meaning `…/pdf-urgent` … `…/pdf-low`; "
                    "no `ListQueues`/`CreateQueue` then.")
    sqs_wait_time_s: int = Field(
        10, ge=0, le=20, description="SQS long polling, in seconds (0–20).")
    sqs_polling_interval_s: float = Field(
        0.1, ge=0,
        description="Seconds of pause after an empty SQS poll (kombu's `polling_interval`).")
    sqs_priority_polling: bool = Field(
        True, description="Free workers poll the queues urgent first "
                          "(`pdftasks.brokers.sqs.Channel`); `false` = kombu's own loop.")
    dynamodb_table: str = Field(
        "pdftasks", pattern=r"^[A-Za-z0-9_.-]{3,255}$",
        description="DynamoDB table of job records, results, counters and events.")
    storage: str = Field(
        "", json_schema_extra=_shown("empty (= `PDFTASKS_OUTPUT_DIR`)"),
        description="Where PDFs go: `s3://bucket/prefix` (with any broker). A trailing `/` "
                    "is dropped (`s3://b/p/` means `s3://b/p`).")
    s3_presign_expires_s: int = Field(
        3600, ge=1, le=7 * 86400,
        description="Lifetime of presigned download URLs, in seconds (at most 7 days).")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, values: Any) -> Any:
        # The environment source only reads known fields; unknown keys come from code
        # (Settings(...), PDFQueueManager(settings=...)): name them, with a suggestion.
        if isinstance(values, dict):
            unknown = sorted(str(k) for k in values if k not in cls.model_fields)
            if unknown:
                hints = []
                for key in unknown:
                    close = difflib.get_close_matches(key.lower(), cls.model_fields, n=1,
                                                      cutoff=0.7)
                    hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close
                                               else ""))
                raise ValueError("unknown setting " + ", ".join(hints)
                                 + " (see the README's Configuration table)")
        return values

    @field_validator("*")
    @classmethod
    def _no_placeholder(cls, value: object) -> object:
        # Example deployments carry CHANGE-ME secrets; starting with one is a mistake.
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            raw = text.get_secret_value() if isinstance(text, SecretStr) else text
            if isinstance(raw, str) and PLACEHOLDER in raw.upper():
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
        # Normalisation only: the same directory, spelt absolute.
        return value.expanduser().resolve()

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", value):
            raise ValueError("PDFTASKS_STORAGE must be empty (local output dir) or "
                             "s3://bucket/prefix")
        # Normalisation only (documented): s3://b/p/ and s3://b/p are the same place.
        return value.rstrip("/")

    @model_validator(mode="after")
    def _limits_consistent(self) -> Settings:
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

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # SecretStr fields show as '**********'; URLs may carry passwords too.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) else value

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
        if self.is_sqs:  # results as items of the job table (pdftasks.brokers.sqs)
            return f"pdftasks.brokers.sqs.DynamoDBResultBackend+dynamodb://{self.dynamodb_table}"
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
        """These settings as ``PDFTASKS_*`` variables (for worker subprocesses): the real
        values, secrets included; lists comma-separated."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, list):
                value = ",".join(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    @property
    def url_prefixes(self) -> tuple[str, ...]:
        return tuple(self.allowed_url_prefixes)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


# The README's settings table, generated from the fields above.

#: Topics of the table: (title, field names); every field is in exactly one.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Core: broker, directories, workers, limits", (
        "broker_url", "result_backend", "home", "templates_dir", "output_dir",
        "queue_namespace", "concurrency", "soft_time_limit_s", "hard_time_limit_s",
        "visibility_timeout_s", "max_memory_per_child_mb", "render_memory_limit_mb",
        "max_data_bytes", "max_data_depth", "max_data_keys", "max_data_items",
        "max_data_string", "allowed_url_prefixes", "local_polling_interval_s", "log_level",
        "warmup")),
    ("Jobs: retries, records, hooks", (
        "default_max_retries", "retry_backoff_s", "retry_backoff_max_s", "retry_jitter",
        "max_redeliveries", "job_store_url", "job_retention_s", "on_completed", "on_failed",
        "result_expires_s")),
    ("Scheduled reports and cleanup (Celery Beat)", (
        "timezone", "schedule_file", "SCHEDULE_<NAME>", "report_source", "beat_grace_s",
        "cleanup_days")),
    ("HTTP API and webhooks", (
        "api_keys", "api_open_health", "api_open_metrics", "api_rate_limit_per_min",
        "api_max_body_bytes", "idempotency_ttl_s", "webhook_secret", "webhook_allowed_hosts",
        "webhook_max_retries")),
    ("Operations: logs, heartbeat, Flower, Prometheus", (
        "log_format", "heartbeat_file", "heartbeat_interval_s", "flower_basic_auth",
        "metrics_port")),
    ("AWS: SQS, DynamoDB, S3", (
        "aws_region", "aws_endpoint_url", "sqs_queue_prefix", "sqs_predefined_queues",
        "sqs_wait_time_s", "sqs_polling_interval_s", "sqs_priority_polling", "dynamodb_table",
        "storage", "s3_presign_expires_s")),
)

#: Variables read outside ``Settings`` (name after the prefix: default, description).
OTHER_VARIABLES: dict[str, tuple[str, str]] = {
    "SCHEDULE_<NAME>": (
        "the entry's `at`",
        "Re-time (`08:30`) or disable (`off`) one beat entry; `<NAME>` is the entry's name "
        "in capitals, dashes as underscores (read by `pdftasks.contrib.beat`)."),
}

TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


def _shown_default(name: str) -> str:
    field = Settings.model_fields[name]
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "unset"
    if value in ("", []):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Path) and not value.is_absolute():
        return f"`./{value}`"
    return f"`{value}`"


def settings_table() -> str:
    """The README's settings tables (Markdown), generated from the fields of ``Settings``."""
    names = [n for _, group in GROUPS for n in group]
    fields = set(Settings.model_fields)
    missing = fields - set(names)
    unknown = set(names) - fields - set(OTHER_VARIABLES)
    if missing or unknown or len(names) != len(set(names)):
        raise ValueError(f"GROUPS out of date: missing {sorted(missing)}, "
                         f"unknown {sorted(unknown)}, or listed twice")
    undocumented = sorted(n for n, f in Settings.model_fields.items() if not f.description)
    if undocumented:
        raise ValueError(f"settings without a description: {undocumented}")
    out: list[str] = []
    for title, group in GROUPS:
        out += [f"**{title}**", "", "| variable | default | meaning |", "|---|---|---|"]
        for name in group:
            if name in OTHER_VARIABLES:
                default, description = OTHER_VARIABLES[name]
            else:
                default = _shown_default(name)
                description = Settings.model_fields[name].description or ""
            cells = [f"`{ENV_PREFIX}{name.upper()}`", default, description]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the settings-table markers regenerated."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"no {TABLE_START} … {TABLE_END} markers")
    head = readme[:start + len(TABLE_START)]
    return f"{head}\n{settings_table()}{readme[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pdftasks.settings",
        description="Print the settings table, or update/check it in a README.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--markdown", action="store_true", help="print the table")
    what.add_argument("--write", metavar="README", help="regenerate the table in README")
    what.add_argument("--check", metavar="README", help="exit 1 if README's table is stale")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(settings_table())
        return 0
    path = Path(args.write or args.check)
    text = path.read_text(encoding="utf-8")
    new = readme_with_table(text)
    if args.check:
        if new != text:
            print(f"{path}: settings table is stale; run python -m pdftasks.settings "
                  f"--write {path}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
