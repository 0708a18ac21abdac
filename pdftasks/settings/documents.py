"""Document settings: the workers' signing profile for the ``sign`` job option
(:mod:`pdftasks.documents.sign`). A job never carries a key: it asks for a signature and
the workers sign with the profile configured here."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from pdftasks.settings.base import TopicModel, shown


class DocumentSettings(TopicModel):
    """The PKCS#12 file and passphrase the workers sign with, and their timestamp authority."""

    table_title = "Documents: signing profile"

    sign_pkcs12_file: Path | None = Field(
        None, json_schema_extra=shown("unset (jobs asking `sign` fail)"),
        description="PKCS#12 (`.p12`/`.pfx`) file with the signing key, its certificate and "
                    "chain, read by the workers. Keep it readable by the worker user only.")
    sign_pkcs12_passphrase: SecretStr | None = Field(
        None, description="Passphrase of `PDFTASKS_SIGN_PKCS12_FILE` (unset: none).")
    sign_timestamp_url: str | None = Field(
        None, json_schema_extra=shown("unset (`b-t` signatures refused)"),
        description="RFC 3161 timestamp authority for PAdES B-T signatures; the only URL a "
                    "signature fetches (a job cannot name one).")
    sign_timestamp_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Seconds to wait for the timestamp authority; a "
                                        "timeout retries the job.")

    @field_validator("sign_timestamp_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("PDFTASKS_SIGN_TIMESTAMP_URL must be an http(s) URL")
        return value or None

    @model_validator(mode="after")
    def _file_with_passphrase(self) -> DocumentSettings:
        if self.sign_pkcs12_passphrase is not None and self.sign_pkcs12_file is None:
            raise ValueError("PDFTASKS_SIGN_PKCS12_PASSPHRASE is set without "
                             "PDFTASKS_SIGN_PKCS12_FILE")
        return self
