"""The ``sign`` option: a PAdES baseline signature (B-B, or B-T with a timestamp) made with
pyHanko from the workers' signing profile (``PDFTASKS_SIGN_*`` settings).

A job never carries a key or a timestamp URL: it asks for a signature, and the worker signs
with the PKCS#12 file configured by the operator (loaded once per process). The signature
is an incremental update, the last change made to the file: anything written after it
would break it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdftasks.errors import DocumentOptionError, TimestampUnavailableError

if TYPE_CHECKING:
    from pdftasks.options.document import SignOptions
    from pdftasks.settings import Settings

#: Name of the signature field pdftasks adds.
FIELD_NAME = "pdftasks-signature"
#: Font of a visible signature's text: embedded, as PDF/A requires (Debian's fonts-dejavu-core).
STAMP_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
STAMP_TEXT = "Digitally signed by %(signer)s\n%(ts)s"


@dataclass(frozen=True)
class SigningProfile:
    """What the workers sign with; from ``Settings`` (``from_settings``)."""

    pkcs12_file: Path
    passphrase: bytes | None = None
    timestamp_url: str | None = None
    timestamp_timeout_s: float = 10.0

    def __repr__(self) -> str:  # never the passphrase
        return f"SigningProfile({str(self.pkcs12_file)!r}, timestamp_url={self.timestamp_url!r})"

    @classmethod
    def from_settings(cls, settings: Settings | None) -> SigningProfile | None:
        if settings is None or settings.sign_pkcs12_file is None:
            return None
        secret = settings.sign_pkcs12_passphrase
        return cls(pkcs12_file=Path(settings.sign_pkcs12_file),
                   passphrase=secret.get_secret_value().encode() if secret else None,
                   timestamp_url=settings.sign_timestamp_url,
                   timestamp_timeout_s=settings.sign_timestamp_timeout_s)


_lock = threading.Lock()
_signers: dict[tuple[str, float, str], Any] = {}


def load_signer(profile: SigningProfile) -> Any:
    """The pyHanko signer of ``profile`` (cached per process until the file changes)."""
    from pyhanko.sign import signers

    path = profile.pkcs12_file
    try:
        # The passphrase is part of the key (as a digest), or a changed one would go
        # unnoticed while the process lives.
        key = (str(path), path.stat().st_mtime,
               hashlib.sha256(profile.passphrase or b"").hexdigest())
    except OSError:
        raise DocumentOptionError("sign: the workers' signing profile "
                                  "(PDFTASKS_SIGN_PKCS12_FILE) cannot be read") from None
    with _lock:
        signer = _signers.get(key)
        if signer is None:
            try:
                signer = signers.SimpleSigner.load_pkcs12(
                    pfx_file=str(path), passphrase=profile.passphrase)
            except Exception:
                signer = None
            if signer is None:
                raise DocumentOptionError(
                    "sign: the workers' PKCS#12 file could not be loaded (wrong "
                    "PDFTASKS_SIGN_PKCS12_PASSPHRASE, or not a PKCS#12 file with a key)")
            _signers.clear()
            _signers[key] = signer
    return signer


def sign_pdf(pdf: bytes, opts: SignOptions, profile: SigningProfile | None,
             pages: int, owner_password: str | None = None) -> bytes:
    """``pdf`` with a PAdES signature appended (incremental update).

    Raises:
        DocumentOptionError: no signing profile, B-T without a timestamp URL, a visible
            box on a page the document does not have.
        TimestampUnavailableError: the timestamp authority did not answer (retried).
    """
    try:
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import fields, signers, timestamps
        from pyhanko.sign.general import SigningError
    except ImportError:
        raise DocumentOptionError("sign needs the `documents` extra on the workers: "
                                  "pip install 'pdftasks[documents]'") from None
    if profile is None:
        raise DocumentOptionError("sign: no signing profile is configured on the workers "
                                  "(PDFTASKS_SIGN_PKCS12_FILE)")
    timestamper = None
    if opts.level == "b-t":
        if not profile.timestamp_url:
            raise DocumentOptionError("sign: level b-t needs a timestamp authority, and the "
                                      "workers have none (PDFTASKS_SIGN_TIMESTAMP_URL)")
        timestamper = timestamps.HTTPTimeStamper(profile.timestamp_url,
                                                 timeout=profile.timestamp_timeout_s)
    signer = load_signer(profile)
    field_spec = stamp_style = None
    if opts.visible is not None:
        box = opts.visible
        if box.page > pages:
            raise DocumentOptionError(f"options.sign.visible.page: the document has {pages} "
                                      f"page(s), not {box.page}")
        field_spec = fields.SigFieldSpec(
            FIELD_NAME, on_page=box.page - 1 if box.page > 0 else pages - 1,
            box=(int(box.x), int(box.y), int(box.x + box.width), int(box.y + box.height)))
        stamp_style = _stamp_style()
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    if owner_password:
        writer.encrypt(owner_password)
    meta = signers.PdfSignatureMetadata(
        field_name=FIELD_NAME, md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES, reason=opts.reason,
        location=opts.location, contact_info=opts.contact_info)
    out = io.BytesIO()
    # Without a timestamp the signature's size is known from the certificates: pyHanko
    # would otherwise sign once more to measure it (half the time of a B-B signature). A
    # B-T signature's timestamp token is not known before it is asked for.
    reserved = None if timestamper is not None else _reserved_bytes(signer)
    try:
        signers.PdfSigner(meta, signer, timestamper=timestamper, stamp_style=stamp_style,
                          new_field_spec=field_spec).sign_pdf(writer, output=out,
                                                              bytes_reserved=reserved)
    except SigningError as exc:
        if timestamper is not None and "timestamp" in str(exc).lower():
            raise TimestampUnavailableError(f"sign: the timestamp authority failed: {exc}") \
                from exc
        raise DocumentOptionError(f"sign: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise TimestampUnavailableError(f"sign: the timestamp authority did not answer: "
                                        f"{type(exc).__name__}") from exc
    return out.getvalue()


def _reserved_bytes(signer: Any) -> int:
    """Room for a B-B signature container, in hex digits as pyHanko counts it: its
    certificates, plus 4 KiB for the signed attributes and the signature value (an
    RSA-4096 signature is 512 bytes)."""
    certs = [signer.signing_cert, *list(signer.cert_registry or ())]
    return 2 * (sum(len(cert.dump()) for cert in certs if cert is not None) + 4096)


def _stamp_style() -> Any:
    from pyhanko import stamp
    from pyhanko.pdf_utils.text import TextBoxStyle

    text_style = TextBoxStyle(font_size=9)
    if STAMP_FONT.is_file():
        from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory

        # fontTools warns for every table it drops while subsetting (FFTM, …): noise.
        logging.getLogger("fontTools.subset").setLevel(logging.ERROR)
        text_style = TextBoxStyle(font=GlyphAccumulatorFactory(str(STAMP_FONT)), font_size=9)
    return stamp.TextStampStyle(stamp_text=STAMP_TEXT, text_box_style=text_style,
                                border_width=1, background=None)
