"""AWS settings: the SQS broker (``PDFTASKS_BROKER_URL=sqs://``) and DynamoDB results
(:mod:`pdftasks.brokers.sqs`), DynamoDB job records (:mod:`pdftasks.stores.dynamodb`), S3
storage for PDFs (:mod:`pdftasks.storage.s3`; ``PDFTASKS_STORAGE=s3://bucket/prefix``, with
any broker); setup: :mod:`pdftasks.contrib.aws`."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from pdftasks.settings.base import TopicModel, shown


class AwsSettings(TopicModel):
    """Region and endpoint, SQS queues and polling, the DynamoDB table, S3 storage."""

    table_title = "AWS: SQS, DynamoDB, S3"

    aws_region: str = Field("us-east-1", description="Region of SQS, DynamoDB and S3.")
    aws_endpoint_url: str | None = Field(
        None, json_schema_extra=shown("unset (AWS)"),
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
        "", json_schema_extra=shown("empty (= `PDFTASKS_OUTPUT_DIR`)"),
        description="Where PDFs go: `s3://bucket/prefix` (with any broker). A trailing `/` "
                    "is dropped (`s3://b/p/` means `s3://b/p`).")
    s3_presign_expires_s: int = Field(
        3600, ge=1, le=7 * 86400,
        description="Lifetime of presigned download URLs, in seconds (at most 7 days).")

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?\Z", value):
            raise ValueError("PDFTASKS_STORAGE must be empty (local output dir) or "
                             "s3://bucket/prefix")
        # Normalisation only (documented): s3://b/p/ and s3://b/p are the same place.
        return value.rstrip("/")
