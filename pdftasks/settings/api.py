"""API settings: the HTTP API (:mod:`pdftasks.api`) and its webhooks."""

from __future__ import annotations

from pydantic import Field, SecretStr

from pdftasks.settings.base import CommaList, TopicModel, shown


class ApiSettings(TopicModel):
    """Keys, open routes, rate and size limits, idempotency and webhooks of the HTTP API."""

    table_title = "HTTP API and webhooks"

    api_keys: SecretStr = Field(
        SecretStr(""), json_schema_extra=shown("empty (every job route 401)"),
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
        None, json_schema_extra=shown("unset (no webhooks)"),
        description="Root secret of webhook signatures; without it `callback_url` is "
                    "refused (422) and nothing is sent.")
    webhook_allowed_hosts: CommaList = Field(
        default_factory=list,
        description="Comma-separated host names, addresses or CIDR networks webhooks may "
                    "reach although private (e.g. `hooks.internal,10.1.0.0/16`).")
    webhook_max_retries: int = Field(
        8, ge=0, description="Retries of a failed webhook delivery (backoff as for jobs).")
