"""PDFs on S3 (``PDFTASKS_STORAGE=s3://bucket/prefix``): ``S3Storage``, chosen by
``pdftasks.storage.make_storage``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pdftasks.awsclient import _code, client, parse_s3_url
from pdftasks.errors import StorageError
from pdftasks.settings import Settings
from pdftasks.storage import check_key

#: Default lifetime of a presigned download URL, in seconds.
PRESIGN_EXPIRES_S = 3600


class S3Storage:
    """Writes PDFs as S3 objects under ``s3://bucket/prefix/`` (``PDFTASKS_STORAGE``).

    ``write`` returns the object's ``s3://`` URI, which becomes the job's ``result_path``.
    Failures are ``StorageError`` (transient): the job is retried with backoff.

    Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix``.
        settings: Region and endpoint (the caller's settings: nothing here reads the
            environment).
    """

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.settings = settings
        self._local = threading.local()

    @property
    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None or getattr(self._local, "pid", None) != os.getpid():
            c = client("s3", self.settings, read_timeout=60)
            self._local.client, self._local.pid = c, os.getpid()
        return c

    def key_for(self, key: str) -> str:
        """The object key of storage key ``key`` (``pdftasks.storage.storage_key``)."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, filename: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(filename)}"

    def write(self, filename: str, data: bytes,
              metadata: Mapping[str, str] | None = None) -> str:
        """Upload ``data`` as storage key ``filename`` (``application/pdf``); return its
        ``s3://`` URI.

        S3 replaces an object in one step, so readers never see a partial PDF.

        Raises:
            StorageError: the bucket is missing or not writable, or S3 cannot be reached.
        """
        key = self.key_for(filename)
        meta = {"generator": "pdftasks", "filename": key.rsplit("/", 1)[-1],
                "bytes": str(len(data)),
                **{k: str(v) for k, v in (metadata or {}).items()}}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType="application/pdf", Metadata=meta)
        except (BotoCoreError, ClientError) as exc:
            detail = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            raise StorageError(
                f"cannot write {key.rsplit('/', 1)[-1]!r} to s3://{self.bucket}: "
                f"{detail}") from exc
        return f"s3://{self.bucket}/{key}"

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects of storage ``keys`` (missing ones are fine).

        Raises:
            StorageError: S3 refused or cannot be reached.
        """
        try:
            self._delete_objects([self.key_for(key) for key in keys])
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot delete from s3://{self.bucket}: {exc}") from exc

    def _delete_objects(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):  # S3's most per request
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in names[start:start + 1000]], "Quiet": True})

    def discard_stale_temps(self, key: str) -> list[str]:
        """Nothing to discard: S3 replaces an object in one step, with no temporary file."""
        return []

    def presigned_url(self, uri: str, expires_s: int = PRESIGN_EXPIRES_S,
                      download_name: str | None = None) -> str:
        """A time-limited HTTPS GET URL for an object written here (its ``s3://`` URI);
        with ``download_name``, S3 answers with that name in ``Content-Disposition``."""
        bucket, key = parse_s3_url(uri)
        if bucket != self.bucket:
            raise ValueError(f"{uri!r} is not in this storage's bucket {self.bucket!r}")
        params = {"Bucket": bucket, "Key": key}
        if download_name:
            params["ResponseContentDisposition"] = \
                f'attachment; filename="{download_name.replace(chr(34), "")}"'
        return str(self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=int(expires_s)))

    def read(self, uri: str) -> bytes:
        bucket, key = parse_s3_url(uri)
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot read {uri}: {exc}") from exc

    def delete_older_than(self, cutoff: float, dry_run: bool = False) -> list[str]:
        """Delete ``.pdf`` objects under the prefix (each job's key is
        ``<namespace>/<owner>/<job id>/<name>.pdf``) last modified before ``cutoff``.

        Returns the URIs deleted (or, with ``dry_run``, that would be).
        """
        prefix = f"{self.prefix}/" if self.prefix else ""
        old: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["Key"].lower().endswith(".pdf") and \
                            obj["LastModified"].timestamp() < cutoff:
                        old.append(obj["Key"])
            if not dry_run:
                self._delete_objects(old)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot clean up s3://{self.bucket}/{prefix}: {exc}") from exc
        return [f"s3://{self.bucket}/{k}" for k in old]
