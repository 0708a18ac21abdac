"""boto3 plumbing shared by the AWS pieces: clients with the region and endpoint of the
settings (one per thread and process), error codes, ``s3://`` URLs.

No Celery here. Used by the DynamoDB job store (``pdftasks.stores.dynamodb``), S3 storage
(``pdftasks.storage.s3``), the SQS broker and DynamoDB results (``pdftasks.brokers.sqs``)
and the AWS operations: setup and dead letters (``pdftasks.contrib.aws``).
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from pdftasks.settings import Settings


def _config(read_timeout: float = 10) -> Config:
    return Config(connect_timeout=5, read_timeout=read_timeout,
                  retries={"mode": "standard", "max_attempts": 4})


def client(service: str, settings: Settings, **config: Any) -> Any:
    """A boto3 client for ``service`` with the region and endpoint of ``settings`` (the
    caller's: nothing here reads ``PDFTASKS_*``).

    Credentials come from boto3's usual chain (environment, profile, instance role).
    """
    s = settings
    kwargs: dict[str, Any] = {"region_name": s.aws_region, "config": _config(**config)}
    if s.aws_endpoint_url:
        kwargs["endpoint_url"] = s.aws_endpoint_url
    if service == "s3":
        kwargs["config"] = kwargs["config"].merge(Config(signature_version="s3v4"))
    return boto3.session.Session().client(service, **kwargs)


def thread_client(local: threading.local, service: str, settings: Settings) -> Any:
    """A boto3 client per thread and process (boto3 clients do not cross a fork)."""
    c = getattr(local, "client", None)
    if c is None or getattr(local, "pid", None) != os.getpid():
        c = client(service, settings)
        local.client, local.pid = c, os.getpid()
    return c


def _code(exc: ClientError) -> str:
    """The AWS error code of ``exc`` (``ConditionalCheckFailedException``, ``404`` …)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at the ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an S3 URL: {url!r} (use s3://bucket/prefix)")
    return parts.netloc, parts.path.strip("/")
