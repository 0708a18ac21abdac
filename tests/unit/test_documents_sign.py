"""The ``sign`` option: PAdES signatures from a throwaway CA made here, checked with pyHanko's
validator (intact and trusted; one changed byte breaks it), and the ways signing is refused.

``make_ca`` and ``TimestampServer`` are used by the integration tests too."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pdftasks.documents.sign import SigningProfile, sign_pdf
from pdftasks.errors import DocumentOptionError, TimestampUnavailableError
from pdftasks.options.document import SignOptions

PASSPHRASE = b"p12-test-passphrase"


@dataclass
class SigningCA:
    root_pem: bytes
    root_der: bytes
    p12: Path
    tsa_cert_der: bytes
    tsa_key_der: bytes

    def profile(self, timestamp_url: str | None = None) -> SigningProfile:
        return SigningProfile(self.p12, PASSPHRASE, timestamp_url, 5.0)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pdftasks tests")])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, eku=None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                   crl_sign=ca, encipher_only=False, decipher_only=False), critical=True))
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca(folder: Path) -> SigningCA:
    """A root CA, a signer certificate in a PKCS#12 file, and a timestamping certificate."""
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _cert("pdftasks test root", root_key, "pdftasks test root", root_key, ca=True)
    signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = _cert("Northwind Billing", signer_key, "pdftasks test root", root_key, ca=False)
    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tsa = _cert("pdftasks test TSA", tsa_key, "pdftasks test root", root_key, ca=False,
                eku=ExtendedKeyUsageOID.TIME_STAMPING)
    p12 = folder / "signer.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"signer", signer_key, signer, [root],
        serialization.BestAvailableEncryption(PASSPHRASE)))
    return SigningCA(
        root_pem=root.public_bytes(serialization.Encoding.PEM),
        root_der=root.public_bytes(serialization.Encoding.DER), p12=p12,
        tsa_cert_der=tsa.public_bytes(serialization.Encoding.DER),
        tsa_key_der=tsa_key.private_bytes(serialization.Encoding.DER,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


class TimestampServer:
    """A real RFC 3161 timestamp authority over HTTP (pyHanko's DummyTimeStamper answering
    POSTed requests), on a free local port; ``failures`` first requests get a 503."""

    def __init__(self, ca: SigningCA, failures: int = 0) -> None:
        from asn1crypto import keys, tsp
        from asn1crypto import x509 as asn1_x509
        from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

        stamper = DummyTimeStamper(tsa_cert=asn1_x509.Certificate.load(ca.tsa_cert_der),
                                   tsa_key=keys.PrivateKeyInfo.load(ca.tsa_key_der))
        self.requests = 0
        self.failures = failures  # answer this many requests with HTTP 503 first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                if outer.failures > 0:
                    outer.failures -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsa"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def validate(pdf: bytes, ca: SigningCA):
    """pyHanko's validation status of the (only) signature of ``pdf``, trusting ``ca``."""
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    assert len(reader.embedded_signatures) == 1
    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(ca.root_der)],
                                allow_fetching=False)
    return validate_pdf_signature(reader.embedded_signatures[0], context)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> SigningCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tsa(ca: SigningCA) -> Iterator[TimestampServer]:
    server = TimestampServer(ca)
    yield server
    server.close()


@pytest.fixture(scope="module")
def plain_pdf() -> bytes:
    from weasyprint import HTML

    return HTML(string="<h1>Invoice INV-1</h1><p>Total 10.00</p>").write_pdf()


def test_b_b_signature_is_intact_and_trusted(ca: SigningCA, plain_pdf: bytes) -> None:
    signed = sign_pdf(plain_pdf, SignOptions(reason="Invoice"), ca.profile(), pages=1)
    assert signed.startswith(plain_pdf)  # an incremental update: the original is untouched
    status = validate(signed, ca)
    assert status.intact and status.valid and status.trusted
    assert status.signing_cert.subject.native["common_name"] == "Northwind Billing"
    assert status.timestamp_validity is None  # B-B: no signature timestamp


def test_one_changed_byte_breaks_the_signature(ca: SigningCA, plain_pdf: bytes) -> None:
    signed = bytearray(sign_pdf(plain_pdf, SignOptions(), ca.profile(), pages=1))
    at = signed.find(b"Invoice INV-1")
    if at < 0:  # text is in a compressed stream: change a byte of the first page object
        at = signed.find(b"/MediaBox") + 2
    signed[at] ^= 0x01
    with pytest.raises(Exception):  # noqa: B017  # pyHanko may refuse to parse it at all
        status = validate(bytes(signed), ca)
        assert status.intact
        raise AssertionError("still intact")  # pragma: no cover


def test_b_t_signature_carries_a_timestamp(ca: SigningCA, tsa: TimestampServer,
                                           plain_pdf: bytes) -> None:
    before = tsa.requests
    signed = sign_pdf(plain_pdf, SignOptions(level="b-t"), ca.profile(tsa.url), pages=1)
    assert tsa.requests > before  # pyHanko also asks once to size the signature
    status = validate(signed, ca)
    assert status.intact and status.trusted
    assert status.timestamp_validity is not None and status.timestamp_validity.intact


def test_visible_signature_box_on_the_last_page(ca: SigningCA, plain_pdf: bytes) -> None:
    import pikepdf

    opts = SignOptions.model_validate({"visible": {"x": 40, "y": 40, "width": 220,
                                                   "height": 60}})
    signed = sign_pdf(plain_pdf, opts, ca.profile(), pages=1)
    assert validate(signed, ca).intact
    with pikepdf.open(io.BytesIO(signed)) as pdf:
        widgets = [a for a in pdf.pages[-1].get("/Annots", []) if a.get("/FT") == "/Sig"]
        assert len(widgets) == 1
        assert [float(v) for v in widgets[0].Rect] == [40, 40, 260, 100]


def test_refusals_name_the_problem(ca: SigningCA, plain_pdf: bytes, tmp_path: Path) -> None:
    with pytest.raises(DocumentOptionError, match="no signing profile"):
        sign_pdf(plain_pdf, SignOptions(), None, pages=1)
    with pytest.raises(DocumentOptionError, match="PDFTASKS_SIGN_TIMESTAMP_URL"):
        sign_pdf(plain_pdf, SignOptions(level="b-t"), ca.profile(), pages=1)
    wrong = SigningProfile(ca.p12, b"wrong passphrase")
    with pytest.raises(DocumentOptionError, match="could not be loaded") as info:
        sign_pdf(plain_pdf, SignOptions(), wrong, pages=1)
    assert "wrong passphrase" not in str(info.value)
    with pytest.raises(DocumentOptionError, match="has 1 page"):
        sign_pdf(plain_pdf, SignOptions.model_validate({"visible": {"page": 3}}),
                 ca.profile(), pages=1)
    assert "p12-test-passphrase" not in repr(ca.profile())


def test_an_unreachable_timestamp_authority_is_transient(ca: SigningCA, plain_pdf: bytes) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TimestampUnavailableError) as info:
        sign_pdf(plain_pdf, SignOptions(level="b-t"),
                 ca.profile(f"http://127.0.0.1:{port}/tsa"), pages=1)
    assert info.value.permanent is False


def test_signing_profile_settings() -> None:
    from pydantic import ValidationError

    from pdftasks.settings import Settings

    assert SigningProfile.from_settings(Settings()) is None
    s = Settings(sign_pkcs12_file="/etc/pdftasks/sign.p12", sign_pkcs12_passphrase="pw-123",
                 sign_timestamp_url="https://tsa.example/tsr")
    profile = SigningProfile.from_settings(s)
    assert profile is not None and profile.passphrase == b"pw-123"
    assert "pw-123" not in repr(s) and "pw-123" not in repr(profile)
    assert s.documents.sign_timestamp_url == "https://tsa.example/tsr"
    with pytest.raises(ValidationError, match="http"):
        Settings(sign_timestamp_url="file:///etc/passwd")
    with pytest.raises(ValidationError, match="without PDFTASKS_SIGN_PKCS12_FILE"):
        Settings(sign_pkcs12_passphrase="pw")
