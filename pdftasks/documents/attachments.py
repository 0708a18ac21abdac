"""Embedded files: the ``attachments`` option and the e-invoice's ``factur-x.xml``.

A ``path`` attachment is read from the templates directory only, with the same confinement
as templates and the URL fetcher (``resolve_inside``: no ``..``, no absolute paths, no
symlink out); ``content_base64`` ones come with the job, within
``MAX_INLINE_ATTACHMENT_BYTES``.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdftasks.errors import DocumentOptionError

if TYPE_CHECKING:
    from pdftasks.options.document import AttachmentOptions

#: Largest file one ``path`` attachment may embed, in bytes.
MAX_ATTACHMENT_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class EmbeddedFile:
    name: str
    data: bytes
    mime_type: str
    description: str | None
    relationship: str


def load(attachments: Sequence[AttachmentOptions],
         resolve: Callable[[str, str], Path]) -> list[EmbeddedFile]:
    """The files of the ``attachments`` option. ``resolve(name, kind)`` is the templates
    directory's confinement (``PDFService.resolve``: raises ``UnsafePathError``).

    Raises:
        DocumentOptionError: a file is missing or too large.
    """
    files = []
    for i, att in enumerate(attachments):
        if att.path is not None:
            where = f"options.attachments[{i}].path"
            path = resolve(att.path, where)
            if not path.is_file():
                raise DocumentOptionError(f"{where}: {att.path!r} is not a file in the "
                                          "templates directory")
            if path.stat().st_size > MAX_ATTACHMENT_FILE_BYTES:
                raise DocumentOptionError(f"{where}: {att.path!r} is larger than "
                                          f"{MAX_ATTACHMENT_FILE_BYTES // 2**20} MiB")
            data = path.read_bytes()
            mime = att.mime_type
            if mime == "application/octet-stream":
                mime = mimetypes.guess_type(path.name)[0] or mime
        else:
            data, mime = att.decoded(), att.mime_type
        files.append(EmbeddedFile(att.name, data, mime, att.description, att.relationship))
    return files


def _pdf_date(when: dt.datetime) -> str:
    return when.strftime("D:%Y%m%d%H%M%S+00'00'")


def embed(pdf: Any, files: Sequence[EmbeddedFile], associate: bool) -> None:
    """Embed ``files`` in ``pdf`` (``pikepdf.Pdf``); with ``associate`` (PDF/A-3) list each in
    the catalog's ``/AF`` with its ``/AFRelationship``."""
    import pikepdf

    now = _pdf_date(dt.datetime.now(dt.UTC))
    for file in files:
        spec = pikepdf.AttachedFileSpec(
            pdf, file.data, description=file.description or "", filename=file.name,
            mime_type=file.mime_type, creation_date=now, mod_date=now,
            relationship=pikepdf.Name("/" + file.relationship))
        pdf.attachments[file.name] = spec
        if associate:  # pikepdf lists a file with a relationship in /AF itself; check
            stored = pdf.attachments[file.name].obj
            if "/AF" not in pdf.Root:
                pdf.Root.AF = pdf.make_indirect(pikepdf.Array())
            if all(item.objgen != stored.objgen for item in pdf.Root.AF):
                pdf.Root.AF.append(stored)
