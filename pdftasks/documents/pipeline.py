"""The document options applied to a rendered PDF, in their one order::

    render (metadata, pdf_variant)  - WeasyPrint, by the render service
    merge                           - parts joined in order into the job's document
    watermark                       - stamped on every page of the result
    attachments, e-invoice          - embedded files; Factur-X XML and its XMP
    encrypt                         - when the file is saved
    sign                            - last: an incremental update nothing may follow

Everything between render and sign happens on one ``pikepdf.Pdf`` saved once; a job with
no document option never gets here (``has_document_options``), and each option left out
skips its step. Combinations that cannot work were refused at submit
(``pdftasks.options.document.check_document_options``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdftasks.documents import attachments as embedded
from pdftasks.documents.invoice import CONFORMANCE, einvoice_xml
from pdftasks.documents.sign import SigningProfile, sign_pdf
from pdftasks.documents.watermark import apply_watermark
from pdftasks.documents.xmp import add_descriptions, facturx_descriptions, sync_from_docinfo
from pdftasks.errors import DocumentOptionError
from pdftasks.options.document import PDFA_VARIANTS, effective_variant

if TYPE_CHECKING:
    from pdftasks.options import JobOptions
    from pdftasks.options.document import DocumentMetadata, MergePart

#: Name of the e-invoice's embedded XML (Factur-X 1.0 / ZUGFeRD 2).
FACTURX_FILENAME = "factur-x.xml"

#: How PDF permissions are named in ``encrypt.allow`` → pikepdf's ``Permissions`` fields.
_PERMISSIONS = {
    "print": ("print_lowres", "print_highres"),
    "copy": ("extract",),
    "annotate": ("modify_annotation",),
    "fill_forms": ("modify_form",),
    "assemble": ("modify_assembly",),
    "modify": ("modify_other",),
}


@dataclass(frozen=True)
class DocumentContext:
    """What the pipeline needs from the render service and the worker.

    Attributes:
        render_part: ``(template, data, css_file) -> pdf bytes`` for a merge part, rendered
            like the job's own document (same variant).
        resolve: ``(name, kind) -> Path`` inside the templates directory (raises
            ``UnsafePathError`` otherwise).
        job_pdf: ``job_id -> pdf bytes`` of a completed job of the same tenant (raises
            ``DocumentOptionError`` otherwise); None where there is no job store.
        signing: The workers' signing profile, if configured.
        font_config: WeasyPrint's font configuration, shared with the watermark.
    """

    render_part: Callable[[str, Mapping[str, Any], str | None], bytes]
    resolve: Callable[[str, str], Path]
    job_pdf: Callable[[str], bytes] | None = None
    signing: SigningProfile | None = None
    font_config: Any = None


def prepare(opts: JobOptions, data: Mapping[str, Any]) -> bytes | None:
    """Work done before the render so that bad input fails fast: the e-invoice XML
    (``EInvoiceDataError`` if the data cannot make one)."""
    if opts.einvoice is None:
        return None
    return einvoice_xml(data, opts.einvoice.profile)


def write_options(opts: JobOptions) -> dict[str, Any]:
    """WeasyPrint ``write_pdf`` options of ``opts`` (the PDF variant)."""
    variant = effective_variant(opts)
    return {"pdf_variant": variant} if variant else {}


def set_metadata(document: Any, meta: DocumentMetadata | None) -> None:
    """Override the metadata WeasyPrint took from the template (``<title>``, ``<meta>``,
    ``lang``) with the ``metadata`` option's fields that are set."""
    if meta is None:
        return
    target = document.metadata
    if meta.title is not None:
        target.title = meta.title
    if meta.author is not None:
        target.authors = [meta.author]
    if meta.subject is not None:
        target.description = meta.subject
    if meta.keywords is not None:
        target.keywords = list(meta.keywords)
    if meta.creator is not None:
        target.generator = meta.creator
    if meta.language is not None:
        target.lang = meta.language


def finish(pdf: bytes, pages: int, opts: JobOptions, data: Mapping[str, Any],
           ctx: DocumentContext, invoice_xml: bytes | None = None) -> tuple[bytes, int]:
    """Apply the document options after the render; return the final (pdf, pages)."""
    import pikepdf

    variant = effective_variant(opts)
    owner = opts.encrypt.owner_password if opts.encrypt else None
    if (opts.merge or opts.watermark or opts.attachments or invoice_xml is not None
            or opts.encrypt or opts.metadata):
        with contextlib.ExitStack() as stack:
            doc = stack.enter_context(pikepdf.open(io.BytesIO(pdf)))
            version = doc.pdf_version
            if opts.merge:
                _merge(doc, opts.merge, data, ctx, stack, variant)
            if opts.watermark is not None:
                apply_watermark(doc, opts.watermark, stack, ctx.font_config)
            files = embedded.load(opts.attachments or (), ctx.resolve)
            if invoice_xml is not None:
                files.insert(0, embedded.EmbeddedFile(
                    FACTURX_FILENAME, invoice_xml, "text/xml", "Factur-X invoice", "Data"))
            if files:
                embedded.embed(doc, files, associate=variant == "pdf/a-3b")
            if invoice_xml is not None and opts.einvoice is not None:
                add_descriptions(doc, facturx_descriptions(CONFORMANCE[opts.einvoice.profile]))
            if opts.metadata is not None:
                # Already so when WeasyPrint wrote this document; not when it was joined
                # from parts elsewhere (a split job).
                _docinfo(doc, opts.metadata)
                sync_from_docinfo(doc, opts.metadata.language)
            out = io.BytesIO()
            save: dict[str, Any] = {}
            if variant in PDFA_VARIANTS:
                save["force_version"] = version  # PDF/A-1 is PDF 1.4, PDF/A-2/3 are 1.7
            if opts.encrypt is not None:
                save["encryption"] = _encryption(opts)
            doc.save(out, **save)
            pdf, pages = out.getvalue(), len(doc.pages)
    if opts.sign is not None:
        pdf = sign_pdf(pdf, opts.sign, ctx.signing, pages, owner_password=owner)
    return pdf, pages


def _docinfo(doc: Any, meta: DocumentMetadata) -> None:
    """The ``metadata`` option's fields in the document information and ``/Lang``."""
    import pikepdf

    for key, value in (("/Title", meta.title), ("/Author", meta.author),
                       ("/Subject", meta.subject), ("/Creator", meta.creator),
                       ("/Keywords", ", ".join(meta.keywords) if meta.keywords is not None
                        else None)):
        if value is not None:
            doc.docinfo[key] = pikepdf.String(value)
    if meta.language is not None:
        doc.Root.Lang = pikepdf.String(meta.language)


def _encryption(opts: JobOptions) -> Any:
    import pikepdf

    assert opts.encrypt is not None
    allowed = {field for name in opts.encrypt.allow for field in _PERMISSIONS[name]}
    every = {field for fields in _PERMISSIONS.values() for field in fields}
    permissions = pikepdf.Permissions(
        accessibility=True, **{field: field in allowed for field in every})
    return pikepdf.Encryption(owner=opts.encrypt.owner_password,
                              user=opts.encrypt.user_password,
                              R=6, allow=permissions)


def _merge(doc: Any, parts: Sequence[MergePart], data: Mapping[str, Any],
           ctx: DocumentContext, stack: contextlib.ExitStack[Any], variant: str | None) -> None:
    """Join ``parts`` around the job's own pages (``self``; first when no part says so).

    The job's own document stays the base: its catalog keeps the metadata, XMP, language
    and output intent. Template parts are rendered like it (same variant); job parts must
    be PDF/A when the result is.
    """
    import pikepdf

    before: list[Any] = []
    after: list[Any] = []
    target = before if any(part.this for part in parts) else after
    for i, part in enumerate(parts):
        where = f"options.merge[{i}]"
        if part.this:
            target = after
            continue
        if part.template is not None:
            source = ctx.render_part(part.template, data if part.data is None else part.data,
                                     part.css_file)
        else:
            if ctx.job_pdf is None:
                raise DocumentOptionError(f"{where}: merging earlier jobs needs the job store "
                                          "(run the job through a worker)")
            source = ctx.job_pdf(str(part.job_id))
        try:
            pdf = stack.enter_context(pikepdf.open(io.BytesIO(source)))
        except pikepdf.PasswordError:
            raise DocumentOptionError(f"{where}: job {part.job_id} is encrypted: it cannot "
                                      "be merged") from None
        except pikepdf.PdfError as exc:
            raise DocumentOptionError(f"{where}: not a readable PDF ({exc})") from None
        if part.job_id is not None and variant in PDFA_VARIANTS:
            with pdf.open_metadata() as meta:
                status = meta.pdfa_status
            if not status:
                raise DocumentOptionError(
                    f"{where}: job {part.job_id} is not a PDF/A file, so the merged "
                    f"document could not be {variant} (render that job with pdf_variant)")
        target.append(pdf)
    index = 0
    for pdf in before:
        for page in pdf.pages:
            doc.pages.insert(index, page)
            index += 1
    for pdf in after:
        doc.pages.extend(pdf.pages)
