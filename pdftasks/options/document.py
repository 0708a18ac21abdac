"""Document options: what is done to the rendered PDF (metadata, PDF/A or PDF/UA, e-invoice,
watermark, encryption, signature, attachments, merge).

They are applied in one fixed order (``pdftasks.documents.pipeline``)::

    render (metadata, pdf_variant) → merge → watermark → attachments, e-invoice → encrypt → sign

A signature is last because any later change would break it. Combinations that cannot be
made are refused when the job is submitted (``check_document_options``; the reasons are in
``IMPOSSIBLE``). Nothing here renders or reads files: the models are checked at submit time,
on machines that may not have the templates.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from pdftasks.options import JobOptions

#: Dotted option paths whose values are secrets: never stored, logged or sent anywhere.
SECRET_PATHS: tuple[str, ...] = ("encrypt.user_password", "encrypt.owner_password")

#: Largest decoded size of all ``content_base64`` attachments of one job, in bytes.
MAX_INLINE_ATTACHMENT_BYTES = 512 * 1024
#: Most attachments one job may carry.
MAX_ATTACHMENTS = 20
#: Most parts one merge may join (the job's own document included).
MAX_MERGE_PARTS = 50

PdfVariant = Literal["pdf/a-1b", "pdf/a-2b", "pdf/a-3b", "pdf/ua-1"]
#: The variants that are PDF/A (archival): no encryption, fonts embedded, an output intent.
PDFA_VARIANTS = ("pdf/a-1b", "pdf/a-2b", "pdf/a-3b")

#: Why each impossible pair is refused (the message of the InvalidOptionsError).
IMPOSSIBLE = {
    "encrypt+pdf/a": "encrypt cannot be combined with a PDF/A variant: PDF/A forbids "
                     "encryption (ISO 19005, 6.1.3)",
    "encrypt+einvoice": "encrypt cannot be combined with einvoice: a Factur-X/ZUGFeRD "
                        "invoice is a PDF/A-3 file, and PDF/A forbids encryption",
    "einvoice+variant": "einvoice makes a PDF/A-3b file: pdf_variant must be pdf/a-3b or "
                        "left out",
    "attachments+pdf/a-1b": "attachments cannot be combined with pdf/a-1b: PDF/A-1 forbids "
                            "embedded files (use pdf/a-3b)",
    "attachments+pdf/a-2b": "attachments cannot be combined with pdf/a-2b: PDF/A-2 only "
                            "embeds PDF/A files (use pdf/a-3b)",
    "watermark.opacity+pdf/a-1b": "watermark.opacity below 1 cannot be combined with "
                                  "pdf/a-1b: PDF/A-1 forbids transparency (use a light "
                                  "color instead)",
    "merge+pdf/ua-1": "merge cannot be combined with pdf/ua-1: merged parts lose their "
                      "tag structure, which PDF/UA requires",
    "sign+pdf/a-1b": "sign cannot be combined with pdf/a-1b: a PAdES signature "
                     "(ETSI.CAdES.detached) needs PDF 1.7, and PDF/A-1 is PDF 1.4 (use "
                     "pdf/a-2b or pdf/a-3b)",
    "split+pdf_variant": "pdf_variant cannot be combined with split: a split job's parts "
                         "are joined into a new file, which is not PDF/A or PDF/UA",
    "split+einvoice": "einvoice cannot be combined with split: a split job's parts are "
                      "joined into a new file, which is not the PDF/A-3 an e-invoice needs",
    "sign.visible+pdf/ua-1": "a visible signature cannot be combined with pdf/ua-1: its "
                             "appearance is not tagged (sign without `visible`)",
}


def _refused(message: str) -> ValueError:
    """A validation error whose message is shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("document_options", message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DocumentMetadata(_Strict):
    """Document information and XMP metadata. Each field left out comes from the template:
    ``<title>``, ``<meta name=author|description|keywords|generator>`` and ``<html lang>``."""

    title: str | None = Field(None, max_length=1000, description="Document title.")
    author: str | None = Field(None, max_length=1000, description="Author (one name).")
    subject: str | None = Field(None, max_length=1000, description="Subject / description.")
    keywords: list[str] | None = Field(None, max_length=100, description="Keywords.")
    language: str | None = Field(
        None, max_length=35, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$",
        description="BCP 47 language tag, e.g. `en-GB` (the PDF's /Lang).")
    creator: str | None = Field(None, max_length=1000,
                                description="The application that made the content.")

    @field_validator("keywords")
    @classmethod
    def _short_keywords(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(len(k) > 200 for k in value):
            raise _refused("each keyword is at most 200 characters")
        return value


class EInvoiceOptions(_Strict):
    """Turn an invoice job into a Factur-X / ZUGFeRD PDF/A-3b: the Cross-Industry-Invoice XML
    is built from the job's data (see the invoice data reference) and embedded."""

    profile: Literal["minimum", "basic", "en16931", "extended"] = Field(
        "en16931", description="Factur-X profile (ZUGFeRD 2 has the same names).")


class WatermarkOptions(_Strict):
    """Text stamped on every page (``DRAFT``, ``PAID``, ``COPY``), as real text."""

    text: str = Field(min_length=1, max_length=100, description="The text.")
    font_size: float = Field(72.0, ge=4, le=400, description="Font size in points.")
    color: str = Field("#c0c0c0", pattern=r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$",
                       description="CSS hex color.")
    opacity: float = Field(1.0, gt=0, le=1,
                           description="1 = opaque. Below 1 needs transparency (not "
                                       "with pdf/a-1b).")
    angle: float = Field(45.0, ge=-90, le=90,
                         description="Degrees, counter-clockwise from horizontal.")
    position: Literal["center", "top", "bottom"] = Field(
        "center", description="Where on the page.")
    layer: Literal["under", "over"] = Field(
        "under", description="`under` the page content (never hides it), or `over` it.")
    font_family: str = Field("DejaVu Sans, sans-serif", pattern=r"^[A-Za-z0-9 ,-]{1,100}$",
                             description="CSS font-family (an installed font).")
    bold: bool = Field(True, description="Bold text.")


Permission = Literal["print", "copy", "annotate", "fill_forms", "assemble", "modify"]


def _print_only() -> list[Permission]:
    return ["print"]


#: OpenAPI: a password, never returned.
_PASSWORD: dict[str, Any] = {"format": "password", "writeOnly": True}


class EncryptOptions(_Strict):
    """AES-256 encryption. The passwords are secrets: redacted in every record
    (``SECRET_PATHS``), hidden in ``repr``, write-only in the OpenAPI schema. They are
    plain strings in the model, not ``SecretStr``: the options are dumped to the job's
    message (``model_dump``), which must carry the real values to the worker."""

    user_password: str = Field(
        "", max_length=127, repr=False, json_schema_extra=_PASSWORD,
        description="Needed to open the file; empty = anyone opens it with the permissions "
                    "below.")
    owner_password: str = Field(
        min_length=1, max_length=127, repr=False, json_schema_extra=_PASSWORD,
        description="Gives full rights; must differ from user_password.")
    allow: list[Permission] = Field(
        default_factory=_print_only, max_length=6,
        description="What a user who is not the owner may do (screen readers always may "
                    "extract text).")

    @model_validator(mode="after")
    def _distinct(self) -> EncryptOptions:
        if self.user_password and self.user_password == self.owner_password:
            raise _refused("owner_password must differ from user_password (the same "
                           "password would give every reader full rights)")
        return self


class VisibleSignature(_Strict):
    """A signature box drawn on a page, in points from the page's lower-left corner."""

    page: int = Field(-1, ge=-1, description="Page number from 1; -1 = the last page.")
    x: float = Field(36, ge=0, le=14400)
    y: float = Field(36, ge=0, le=14400)
    width: float = Field(200, gt=10, le=14400)
    height: float = Field(50, gt=10, le=14400)

    @field_validator("page")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise _refused("pages are numbered from 1 (-1 = the last page)")
        return value


class SignOptions(_Strict):
    """A PAdES baseline signature with the workers' signing profile (``PDFTASKS_SIGN_*``
    settings; a job never carries a key)."""

    level: Literal["b-b", "b-t"] = Field(
        "b-b", description="`b-b`, or `b-t` (with a timestamp from the workers' "
                           "`PDFTASKS_SIGN_TIMESTAMP_URL`).")
    reason: str | None = Field(None, max_length=200)
    location: str | None = Field(None, max_length=200)
    contact_info: str | None = Field(None, max_length=200)
    visible: VisibleSignature | None = Field(None, description="Draw a signature box.")


class AttachmentOptions(_Strict):
    """A file embedded in the PDF: from the templates directory (``path``) or carried in
    the job (``content_base64``, at most ``MAX_INLINE_ATTACHMENT_BYTES`` in all)."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^/\\\x00-\x1f]+$",
                      description="File name shown by PDF readers.")
    path: str | None = Field(None, max_length=1000,
                             description="A file inside the templates directory.")
    content_base64: str | None = Field(None, description="The file's bytes, base64.")
    mime_type: str = Field("application/octet-stream", max_length=100,
                           pattern=r"^[\w.+-]+/[\w.+-]+$")
    description: str | None = Field(None, max_length=1000)
    relationship: Literal["Source", "Data", "Alternative", "Supplement", "Unspecified"] = \
        Field("Unspecified", description="PDF/A-3 AFRelationship.")

    @model_validator(mode="after")
    def _one_source(self) -> AttachmentOptions:
        if (self.path is None) == (self.content_base64 is None):
            raise _refused("give exactly one of path and content_base64")
        if self.content_base64 is not None:
            self.decoded()
        return self

    def decoded(self) -> bytes:
        """The bytes of ``content_base64`` (b"" for a ``path`` attachment)."""
        if self.content_base64 is None:
            return b""
        if len(self.content_base64) > MAX_INLINE_ATTACHMENT_BYTES * 4 // 3 + 8:
            raise _refused(f"content_base64 is larger than "
                             f"{MAX_INLINE_ATTACHMENT_BYTES // 1024} KiB")
        try:
            return base64.b64decode(self.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise _refused("content_base64 is not valid base64") from None


class MergePart(_Strict):
    """One part of a merged document: another template (with its data, default the job's),
    a completed job of the same tenant (``job_id``), or the job's own document
    (``self: true``; first when no part says so)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    template: str | None = Field(None, max_length=500)
    data: dict[str, object] | None = Field(None, description="Default: the job's data.")
    css_file: str | None = Field(None, max_length=500)
    job_id: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    this: bool = Field(False, alias="self", description="The job's own document.")

    @model_validator(mode="after")
    def _one_kind(self) -> MergePart:
        kinds = [self.template is not None, self.job_id is not None, self.this]
        if sum(kinds) != 1:
            raise _refused("a merge part is exactly one of: a template (with data and "
                           "css_file), a job_id, or self: true")
        if self.template is None and (self.data is not None or self.css_file is not None):
            raise _refused("data and css_file belong to a template part")
        return self


class DocumentOptionsMixin(BaseModel):
    """The document options of ``JobOptions``."""

    metadata: DocumentMetadata | None = None
    pdf_variant: PdfVariant | None = Field(
        None, description="pdf/a-1b, pdf/a-2b, pdf/a-3b (archival: fonts embedded, sRGB "
                          "output intent) or pdf/ua-1 (tagged, accessible).")
    einvoice: EInvoiceOptions | None = None
    watermark: WatermarkOptions | None = None
    encrypt: EncryptOptions | None = None
    sign: SignOptions | None = None
    attachments: list[AttachmentOptions] | None = Field(None, max_length=MAX_ATTACHMENTS)
    merge: list[MergePart] | None = Field(None, min_length=1, max_length=MAX_MERGE_PARTS)


def effective_variant(opts: DocumentOptionsMixin) -> str | None:
    """The variant the document is made as: ``pdf_variant``, or pdf/a-3b for an e-invoice."""
    if opts.pdf_variant is None and opts.einvoice is not None:
        return "pdf/a-3b"
    return opts.pdf_variant


def check_document_options(opts: JobOptions) -> None:
    """Raise ``ValueError`` (``IMPOSSIBLE``'s message) for options that cannot be combined."""
    variant = effective_variant(opts)
    if getattr(opts, "split", None) is not None:
        if opts.einvoice is not None:
            raise _refused(IMPOSSIBLE["split+einvoice"])
        if opts.pdf_variant is not None:
            raise _refused(IMPOSSIBLE["split+pdf_variant"])
    if opts.einvoice is not None and opts.pdf_variant not in (None, "pdf/a-3b"):
        raise _refused(IMPOSSIBLE["einvoice+variant"])
    if opts.encrypt is not None:
        if opts.einvoice is not None:
            raise _refused(IMPOSSIBLE["encrypt+einvoice"])
        if variant in PDFA_VARIANTS:
            raise _refused(IMPOSSIBLE["encrypt+pdf/a"])
    if opts.attachments:
        if variant in ("pdf/a-1b", "pdf/a-2b"):
            raise _refused(IMPOSSIBLE[f"attachments+{variant}"])
        names = [a.name for a in opts.attachments]
        if len(set(names)) != len(names):
            raise _refused("attachments: two attachments have the same name")
        if opts.einvoice is not None and "factur-x.xml" in names:
            raise _refused("attachments: factur-x.xml is the e-invoice's own name")
        inline = sum(len(a.decoded()) for a in opts.attachments)
        if inline > MAX_INLINE_ATTACHMENT_BYTES:
            raise _refused(f"attachments: content_base64 payloads add up to {inline} "
                             f"bytes, more than {MAX_INLINE_ATTACHMENT_BYTES}")
    if opts.watermark is not None and opts.watermark.opacity < 1 and variant == "pdf/a-1b":
        raise _refused(IMPOSSIBLE["watermark.opacity+pdf/a-1b"])
    if opts.merge is not None:
        if variant == "pdf/ua-1":
            raise _refused(IMPOSSIBLE["merge+pdf/ua-1"])
        if sum(part.this for part in opts.merge) > 1:
            raise _refused("merge: the job's own document (self) can be one part only")
    if opts.sign is not None and variant == "pdf/a-1b":
        raise _refused(IMPOSSIBLE["sign+pdf/a-1b"])
    if opts.sign is not None and opts.sign.visible is not None and variant == "pdf/ua-1":
        raise _refused(IMPOSSIBLE["sign.visible+pdf/ua-1"])


def has_document_options(opts: JobOptions) -> bool:
    return any(getattr(opts, name) is not None for name in DocumentOptionsMixin.model_fields)
