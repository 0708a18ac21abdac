"""Integration tests: every document option through real ``pdftasks worker`` processes on a
real Redis, each result read back with independent tools: pikepdf (document info, XMP,
output intents, fonts, attachments, encryption), pypdf (text), ``qpdf --check`` (structure),
the factur-x package (XML extraction and XSD) and pyHanko's validator (signatures).

veraPDF cannot be installed here (docs/how-to/business-documents.md lists what these checks
cover instead)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from lxml import etree
from pypdf import PdfReader

from pdftasks import JobStatus
from pdftasks.errors import EInvoiceDataError, InvalidJobError, InvalidOptionsError
from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, TEMPLATES
from tests.unit.test_documents_sign import PASSPHRASE, SigningCA, TimestampServer, make_ca, validate

pytestmark = pytest.mark.integration

SAMPLE = json.loads((ROOT / "templates" / "sample_invoice.json").read_text())
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> SigningCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tsa(ca: SigningCA):
    server = TimestampServer(ca)
    yield server
    server.close()


@pytest.fixture(scope="module")
def manager(redis_url, tmp_path_factory, ca: SigningCA, tsa: TimestampServer):
    """Two real workers with a signing profile (PKCS#12 of the test CA, the test TSA)."""
    from pdftasks import PDFQueueManager, PDFService, PDFServiceConfig, RedisBackend

    tmp = tmp_path_factory.mktemp("documents")
    service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=tmp / "out"))
    mgr = PDFQueueManager(
        backend=RedisBackend(url=redis_url, queue_name="docs"), pdf_service=service,
        num_workers=2, settings={
            "home": tmp / "home", "sign_pkcs12_file": str(ca.p12),
            "sign_pkcs12_passphrase": PASSPHRASE.decode(), "sign_timestamp_url": tsa.url})
    mgr.start()
    yield mgr
    mgr.stop(timeout=10)


def run(manager, options: dict[str, Any] | None, data: dict[str, Any] | None = None,
        template: str = "invoice.html", metadata: dict[str, Any] | None = None,
        status: JobStatus = JobStatus.COMPLETED) -> tuple[Any, bytes]:
    job_id = manager.submit_job(template, SAMPLE if data is None else data, "doc.pdf",
                                options=options, metadata=metadata)
    if status is JobStatus.FAILED:  # wait_for_job raises for a failed job
        from tests.conftest import wait_for

        job = wait_for(lambda: (j := manager.get_job(job_id)) and j.status.is_final and j,
                       120, f"job {job_id} to end")
    else:
        job = manager.wait_for_job(job_id, timeout=120)
    assert job.status is status, job.error
    return job, Path(job.result_path).read_bytes() if job.result_path else b""


def qpdf_check(pdf: bytes, tmp_path: Path, password: str | None = None) -> None:
    qpdf = shutil.which("qpdf")
    assert qpdf, "qpdf is not installed: run scripts/setup.sh (apt qpdf)"
    path = tmp_path / "check.pdf"
    path.write_bytes(pdf)
    args = [qpdf, "--check", str(path)] + ([f"--password={password}"] if password else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No syntax or stream encoding errors" in done.stdout


def text_of(pdf: bytes, password: str | None = None) -> list[str]:
    reader = PdfReader(io.BytesIO(pdf))
    if password is not None:
        reader.decrypt(password)
    return [page.extract_text() or "" for page in reader.pages]


def xmp(pdf: pikepdf.Pdf) -> dict[str, str]:
    """Every simple XMP property (attribute or element text), by ``prefix:name``."""
    root = etree.fromstring(pdf.Root.Metadata.read_bytes().strip().split(b"?>", 1)[1]
                            .rsplit(b"<?xpacket", 1)[0])
    out: dict[str, str] = {}
    for node in root.iter():
        if not isinstance(node.tag, str):
            continue
        for key, value in node.attrib.items():
            ns, _, name = key[1:].partition("}")
            out[f"{_prefix(ns)}:{name}"] = value
        if node.text and node.text.strip() and len(node) == 0:
            ns, _, name = node.tag[1:].partition("}")
            out.setdefault(f"{_prefix(ns)}:{name}", node.text.strip())
    return out


def _prefix(ns: str) -> str:
    return {"http://www.aiim.org/pdfa/ns/id/": "pdfaid",
            "http://www.aiim.org/pdfua/ns/id/": "pdfuaid",
            "http://purl.org/dc/elements/1.1/": "dc", "http://ns.adobe.com/pdf/1.3/": "pdf",
            "http://ns.adobe.com/xap/1.0/": "xmp",
            "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#": "fx"}.get(ns, ns)


def unembedded_fonts(pdf: pikepdf.Pdf) -> list[str]:
    """Fonts used by any page (or form XObject on it) without an embedded font program."""
    missing: list[str] = []
    seen: set[tuple[int, int]] = set()

    def walk(resources: Any) -> None:
        if resources is None:
            return
        for font in (resources.get("/Font") or {}).values():
            if font.objgen in seen:
                continue
            seen.add(font.objgen)
            if font.get("/Subtype") == "/Type3":
                continue
            target = font.DescendantFonts[0] if font.get("/Subtype") == "/Type0" else font
            desc = target.get("/FontDescriptor")
            if desc is None or not any(k in desc for k in ("/FontFile", "/FontFile2",
                                                            "/FontFile3")):
                missing.append(str(font.get("/BaseFont")))
        for xobject in (resources.get("/XObject") or {}).values():
            if xobject.get("/Subtype") == "/Form" and xobject.objgen not in seen:
                seen.add(xobject.objgen)
                walk(xobject.get("/Resources"))

    for page in pdf.pages:
        walk(page.get("/Resources"))
    return missing


def printed_totals(page_text: str) -> dict[str, Decimal]:
    def amount(pattern: str) -> Decimal:
        found = re.search(pattern + r"\s+([\d,]+\.\d\d)", page_text)
        assert found, f"{pattern!r} not printed in {page_text!r}"
        return Decimal(found.group(1).replace(",", ""))

    return {"subtotal": amount(r"Subtotal"), "tax": amount(r"Tax \([^)]*\)"),
            "total": amount(r"Total \(EUR\)")}


# metadata


def test_metadata_in_document_info_and_xmp_agree(manager, tmp_path: Path) -> None:
    opts = {"metadata": {"author": "Northwind Billing", "subject": "Invoice INV-2026-0001",
                         "keywords": ["invoice", "2026"], "language": "de-DE",
                         "creator": "ERP 7"}}
    _, pdf = run(manager, opts)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        info = {k: str(v) for k, v in doc.docinfo.items()}
        meta = xmp(doc)
        # Title not given: WeasyPrint's default, the template's <title>
        assert info["/Title"] == "Invoice INV-2026-0001"
        assert info["/Author"] == "Northwind Billing"
        assert info["/Subject"] == "Invoice INV-2026-0001"
        assert info["/Keywords"] == "invoice, 2026" == meta["pdf:Keywords"]
        assert info["/Creator"] == "ERP 7" == meta["xmp:CreatorTool"]
        assert str(doc.Root.Lang) == "de-DE"
        with doc.open_metadata() as m:  # pikepdf's own reading of the XMP
            assert m["dc:title"] == info["/Title"]
            assert m["dc:creator"] == ["Northwind Billing"]
            assert m["dc:description"] == "Invoice INV-2026-0001"
            assert m["dc:language"] == {"de-DE"}
    qpdf_check(pdf, tmp_path)


# pdf_variant


@pytest.mark.parametrize(("variant", "part", "version"), [
    ("pdf/a-1b", "1", "1.4"), ("pdf/a-2b", "2", "1.7"), ("pdf/a-3b", "3", "1.7")])
def test_pdfa_variants(manager, tmp_path: Path, variant: str, part: str, version: str) -> None:
    _, pdf = run(manager, {"pdf_variant": variant})
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        meta = xmp(doc)
        assert meta["pdfaid:part"] == part and meta["pdfaid:conformance"] == "B"
        assert doc.pdf_version == version
        intent = doc.Root.OutputIntents[0]
        assert intent.S == "/GTS_PDFA1" and int(intent.DestOutputProfile.N) == 3
        assert b"sRGB" in intent.DestOutputProfile.read_bytes()[:200] or \
            "sRGB" in str(intent.get("/OutputConditionIdentifier", ""))
        assert unembedded_fonts(doc) == []
        assert doc.encryption is None or not doc.is_encrypted
        assert "/ID" in doc.trailer
        if part == "1":
            assert doc.Root.Metadata.get("/Filter") is None  # PDF/A-1: XMP uncompressed
    assert "INV-2026-0001" in text_of(pdf)[0]
    qpdf_check(pdf, tmp_path)


def test_pdfua_variant_is_tagged(manager, tmp_path: Path) -> None:
    _, pdf = run(manager, {"pdf_variant": "pdf/ua-1"})
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert xmp(doc)["pdfuaid:part"] == "1"
        assert "/StructTreeRoot" in doc.Root and doc.Root.MarkInfo.Marked
        assert str(doc.Root.Lang) == "en"
        assert unembedded_fonts(doc) == []
    qpdf_check(pdf, tmp_path)


# einvoice


def test_sample_invoice_is_a_facturx_en16931_pdfa3(manager, tmp_path: Path) -> None:
    from facturx import get_xml_from_pdf, xml_check_xsd

    job, pdf = run(manager, {"einvoice": {"profile": "en16931"}})
    assert job.options == {"einvoice": {"profile": "en16931"}}
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        meta = xmp(doc)
        assert (meta["pdfaid:part"], meta["pdfaid:conformance"]) == ("3", "B")
        assert meta["fx:ConformanceLevel"] == "EN 16931"
        assert meta["fx:DocumentFileName"] == "factur-x.xml"
        assert meta["fx:DocumentType"] == "INVOICE"
        assert list(doc.attachments) == ["factur-x.xml"]
        spec = doc.attachments["factur-x.xml"]
        assert spec.obj.AFRelationship == "/Data"
        assert [item.objgen for item in doc.Root.AF] == [spec.obj.objgen]
        embedded = spec.get_file()
        assert embedded.mime_type == "text/xml"
        xml_pikepdf = embedded.read_bytes()
        assert unembedded_fonts(doc) == []
    # The factur-x package finds the same XML and its schema accepts it again
    name, xml = get_xml_from_pdf(pdf, check_xsd=False)
    assert name == "factur-x.xml" and xml == xml_pikepdf
    assert xml_check_xsd(xml, flavor="factur-x", level="en16931")
    # The totals in the XML are the totals printed on the page
    tree = etree.fromstring(xml)
    summary = tree.find(f".//{{{RAM}}}SpecifiedTradeSettlementHeaderMonetarySummation")

    def amount(tag: str) -> Decimal:
        return Decimal(summary.find(f"{{{RAM}}}{tag}").text)

    printed = printed_totals(text_of(pdf)[0])
    assert printed == {"subtotal": amount("TaxBasisTotalAmount"),
                       "tax": amount("TaxTotalAmount"), "total": amount("GrandTotalAmount")}
    assert printed == {"subtotal": Decimal("8997.48"), "tax": Decimal("1709.52"),
                       "total": Decimal("10707.00")}
    assert tree.findtext(f".//{{{RAM}}}DuePayableAmount") == "10707.00"
    qpdf_check(pdf, tmp_path)


def test_invoice_data_that_cannot_make_an_invoice(manager) -> None:
    # At submit: a typed error naming the field, nothing queued
    wrong_total = {**SAMPLE, "total": 10000.00}
    with pytest.raises(EInvoiceDataError, match=r"total: 10000\.00 .* 10707\.00"):
        manager.submit_job("invoice.html", wrong_total, "x.pdf",
                           options={"einvoice": {"profile": "en16931"}})
    no_country = {**SAMPLE, "seller": {**SAMPLE["seller"], "address": {"city": "Berlin"}}}
    with pytest.raises(InvalidJobError, match=r"seller\.address\.country"):
        manager.submit_job("invoice.html", no_country, "x.pdf",
                           options={"einvoice": {}})
    # Queued around the checks (send_task): the job fails with the validator's message
    result = manager.app.send_task("pdftasks.generate_pdf", kwargs={
        "template": "invoice.html", "data": wrong_total, "output_filename": "x.pdf",
        "options": {"einvoice": {"profile": "en16931"}}}, queue="docs.normal")
    from tests.conftest import wait_for

    job = wait_for(lambda: (j := manager.get_job(result.id)) and j.status is JobStatus.FAILED
                   and j, 60, "the job to fail")
    assert "EInvoiceDataError" in job.error and "does not equal 10707.00" in job.error


# watermark


def test_watermark_text_on_every_page(manager, tmp_path: Path) -> None:
    data = sample_invoice(1, items=70)  # two pages
    _, pdf = run(manager, {"watermark": {"text": "PAID", "color": "#cc0000", "opacity": 0.4,
                                         "layer": "over", "angle": 30}}, data=data)
    pages = text_of(pdf)
    assert len(pages) == 2
    for text in pages:
        assert "PAID" in text
        assert data["invoice_number"] in text  # the page's own content is still there
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        for page in doc.pages:
            stamps = [n for n in page.Resources.XObject if "PdftasksStamp" in n]
            assert len(stamps) == 1
        assert unembedded_fonts(doc) == []
    qpdf_check(pdf, tmp_path)


def test_watermark_on_a_pdfa1_stays_pdfa(manager, tmp_path: Path) -> None:
    _, pdf = run(manager, {"pdf_variant": "pdf/a-1b", "watermark": {"text": "COPY"}})
    assert "COPY" in text_of(pdf)[0]
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert xmp(doc)["pdfaid:part"] == "1" and doc.pdf_version == "1.4"
        assert unembedded_fonts(doc) == []
    qpdf_check(pdf, tmp_path)


# encrypt


def test_encrypted_with_aes256_and_permissions(manager, tmp_path: Path) -> None:
    opts = {"encrypt": {"user_password": "open-sesame", "owner_password": "owner-42",
                        "allow": ["print", "copy"]}}
    job, pdf = run(manager, opts)
    assert job.options["encrypt"]["user_password"] == "***"
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(io.BytesIO(pdf))
    with pikepdf.open(io.BytesIO(pdf), password="open-sesame") as doc:
        assert doc.is_encrypted
        assert doc.encryption.R == 6 and doc.encryption.bits == 256
        assert str(doc.encryption.stream_method) == "EncryptionMethod.aesv3"
        allow = doc.allow
        assert allow.print_highres and allow.extract
        assert not allow.modify_other and not allow.modify_annotation
    assert "INV-2026-0001" in text_of(pdf, password="open-sesame")[0]
    qpdf_check(pdf, tmp_path, password="owner-42")


def test_encrypt_with_pdfa_is_refused_at_submit(manager) -> None:
    with pytest.raises(InvalidOptionsError, match="PDF/A forbids encryption"):
        manager.submit_job("invoice.html", SAMPLE, "x.pdf", options={
            "pdf_variant": "pdf/a-2b", "encrypt": {"owner_password": "x"}})


# sign


def test_signature_b_b_is_intact_and_trusted(manager, ca: SigningCA) -> None:
    _, pdf = run(manager, {"sign": {"reason": "Invoice", "location": "Berlin"}})
    status = validate(pdf, ca)
    assert status.intact and status.valid and status.trusted
    assert status.timestamp_validity is None
    broken = bytearray(pdf)
    broken[broken.find(b"/MediaBox") + 3] ^= 0x01  # one byte of the signed content
    with pytest.raises(Exception):  # noqa: B017
        assert validate(bytes(broken), ca).intact
        raise AssertionError("the signature survived a changed byte")  # pragma: no cover


def test_signature_b_t_visible_with_timestamp(manager, ca: SigningCA,
                                              tsa: TimestampServer) -> None:
    before = tsa.requests
    _, pdf = run(manager, {"sign": {"level": "b-t", "visible": {"x": 350, "y": 40}}})
    assert tsa.requests > before
    status = validate(pdf, ca)
    assert status.intact and status.trusted
    assert status.timestamp_validity is not None and status.timestamp_validity.intact
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        widgets = [a for a in doc.pages[-1].get("/Annots", []) if a.get("/FT") == "/Sig"]
        assert len(widgets) == 1 and "/AP" in widgets[0]
        assert unembedded_fonts(doc) == []


# attachments


def test_attachments_from_templates_and_inline(manager, tmp_path: Path) -> None:
    csv = b"sku,qty\nHOST-BIZ,1\n"
    opts = {"pdf_variant": "pdf/a-3b", "attachments": [
        {"name": "lines.csv", "content_base64": base64.b64encode(csv).decode(),
         "mime_type": "text/csv", "relationship": "Supplement", "description": "Lines"},
        {"name": "logo.svg", "path": "logo.svg", "relationship": "Source"}]}
    _, pdf = run(manager, opts)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert sorted(doc.attachments) == ["lines.csv", "logo.svg"]
        assert doc.attachments["lines.csv"].get_file().read_bytes() == csv
        assert doc.attachments["logo.svg"].get_file().read_bytes() == \
            (TEMPLATES / "logo.svg").read_bytes()
        assert doc.attachments["lines.csv"].obj.AFRelationship == "/Supplement"
        assert len(doc.Root.AF) == 2
        assert xmp(doc)["pdfaid:part"] == "3"
    qpdf_check(pdf, tmp_path)


def test_attachment_outside_the_templates_directory_is_refused(manager) -> None:
    from pdftasks.errors import UnsafePathError

    for path in ("../secrets.txt", "/etc/passwd"):
        with pytest.raises(UnsafePathError):
            manager.submit_job("invoice.html", SAMPLE, "x.pdf",
                               options={"attachments": [{"name": "x", "path": path}]})
    with pytest.raises(InvalidOptionsError, match="not a file"):
        manager.submit_job("invoice.html", SAMPLE, "x.pdf",
                           options={"attachments": [{"name": "x", "path": "missing.txt"}]})


# merge


def test_merge_templates_and_an_earlier_job_of_the_same_tenant(manager, tmp_path: Path) -> None:
    tenant = {"tenant": "acme"}
    terms, _ = run(manager, None, data=sample_invoice(42), metadata=tenant)
    cover = {"title": "Cover letter", "period": "November 2026", "generated_at": "now",
             "summary": "Please find our invoice enclosed.", "sections": []}
    opts = {"merge": [{"template": "report.html", "data": cover}, {"self": True},
                      {"job_id": terms.job_id}], "watermark": {"text": "COPY"}}
    _, pdf = run(manager, opts, metadata=tenant)
    pages = text_of(pdf)
    assert len(pages) == 3
    assert "Cover letter" in pages[0]
    assert "INV-2026-0001" in pages[1]
    assert "INV-2026-0042" in pages[2]
    assert all("COPY" in text for text in pages)  # options apply to the merged result
    qpdf_check(pdf, tmp_path)
    # Another tenant's job, or one that does not exist, is not found
    other, _ = run(manager, None, data=sample_invoice(7), metadata={"tenant": "globex"})
    for job_id in (other.job_id, "no-such-job"):
        job, _ = run(manager, {"merge": [{"self": True}, {"job_id": job_id}]},
                     metadata=tenant, status=JobStatus.FAILED)
        assert f"no job {job_id!r} of this tenant" in job.error


# all together


def test_signed_facturx_with_everything(manager, ca: SigningCA, tmp_path: Path) -> None:
    from facturx import get_xml_from_pdf, xml_check_xsd

    opts = {"einvoice": {"profile": "en16931"}, "watermark": {"text": "PAID"},
            "metadata": {"author": "Northwind Billing"},
            "attachments": [{"name": "note.txt", "content_base64":
                             base64.b64encode(b"thanks").decode()}],
            "merge": [{"self": True}, {"template": "report.html", "data": {
                "title": "Terms", "period": "-", "generated_at": "-", "summary": "Net 30.",
                "sections": []}}],
            "sign": {"level": "b-t", "reason": "Invoice"}}
    _, pdf = run(manager, opts)
    status = validate(pdf, ca)
    assert status.intact and status.trusted and status.timestamp_validity is not None
    _, xml = get_xml_from_pdf(pdf, check_xsd=False)
    assert xml_check_xsd(xml, flavor="factur-x", level="en16931")
    pages = text_of(pdf)
    assert len(pages) == 2 and all("PAID" in text for text in pages) and "Terms" in pages[1]
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert xmp(doc)["pdfaid:part"] == "3" and xmp(doc)["fx:ConformanceLevel"] == "EN 16931"
        assert sorted(doc.attachments) == ["factur-x.xml", "note.txt"]
        assert str(doc.docinfo["/Author"]) == "Northwind Billing"
        assert unembedded_fonts(doc) == []
    qpdf_check(pdf, tmp_path)
