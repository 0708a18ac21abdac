"""Document options through the HTTP API (live ``pdftasks api``, real worker, real Redis):
in the OpenAPI schema, refused with 422 naming the field, a Factur-X invoice downloaded and
read back with the factur-x package, and encryption passwords never shown."""

from __future__ import annotations

import io
import json

import pikepdf
import pytest

from tests.conftest import ROOT
from tests.integration.test_api import api, wait_for  # noqa: F401  # the module's API server

pytestmark = pytest.mark.integration

SAMPLE = json.loads((ROOT / "templates" / "sample_invoice.json").read_text())


def test_openapi_schema_describes_the_document_options(api) -> None:  # noqa: F811
    with api.client() as client:
        schema = client.get("/openapi.json").json()
    models = schema["components"]["schemas"]
    for name in ("EInvoiceOptions", "WatermarkOptions", "EncryptOptions", "SignOptions",
                 "AttachmentOptions", "MergePart", "DocumentMetadata"):
        assert name in models, sorted(models)
    password = models["EncryptOptions"]["properties"]["owner_password"]
    assert password.get("format") == "password" and password.get("writeOnly") is True
    assert models["EInvoiceOptions"]["properties"]["profile"]["enum"] == [
        "minimum", "basic", "en16931", "extended"]
    assert "self" in models["MergePart"]["properties"]  # the alias, as clients write it


@pytest.mark.parametrize(("options", "data", "words"), [
    ({"pdf_variant": "pdf/a-2b", "encrypt": {"owner_password": "x"}}, None,
     "PDF/A forbids encryption"),
    ({"einvoice": {"profile": "en16931"}}, {**SAMPLE, "total": 1.0},
     "total: 1.00 (printed on the invoice) does not equal 10707.00"),
    ({"attachments": [{"name": "p", "path": "../../etc/passwd"}]}, None, "must not contain"),
    ({"watermark": {"text": "X", "angle": 400}}, None, "options.watermark.angle"),
    ({"sign": {"key_file": "/etc/ssl/private/key.pem"}}, None, "options.sign.key_file"),
])
def test_options_that_cannot_work_are_a_422(api, options, data, words) -> None:  # noqa: F811
    with api.client() as client:
        answer = client.post("/api/pdf", json={
            "template": "invoice.html", "data": data or SAMPLE, "filename": "x.pdf",
            "options": options})
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["detail"], answer.json()


def test_facturx_invoice_through_the_api(api, start_worker, tmp_path) -> None:  # noqa: F811
    from facturx import get_xml_from_pdf, xml_check_xsd

    start_worker(concurrency=1, output_dir=api.output_dir)
    with api.client() as client:
        answer = client.post("/api/pdf", json={
            "template": "invoice.html", "data": SAMPLE, "filename": "invoice.pdf",
            "options": {"einvoice": {"profile": "en16931"}, "watermark": {"text": "COPY"}}})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        doc = wait_for(lambda: (d := client.get(f"/api/pdf/{job_id}").json())["status"]
                       in ("completed", "failed") and d, 90, "the job to end")
        assert doc["status"] == "completed", doc["error"]
        assert doc["options"]["einvoice"] == {"profile": "en16931"}
        assert doc["options"]["watermark"]["text"] == "COPY"
        pdf = client.get(f"/api/pdf/{job_id}/download").content
    name, xml = get_xml_from_pdf(pdf, check_xsd=False)
    assert name == "factur-x.xml" and xml_check_xsd(xml, flavor="factur-x", level="en16931")


def test_encrypt_passwords_are_never_shown(api, start_worker) -> None:  # noqa: F811
    start_worker(concurrency=1, output_dir=api.output_dir)
    secret = "api-0wner-pw-6c1"
    with api.client() as client:
        answer = client.post("/api/pdf", json={
            "template": "invoice.html", "data": SAMPLE, "filename": "locked.pdf",
            "options": {"encrypt": {"owner_password": secret, "user_password": "u-pw"}}})
        assert answer.status_code == 202 and secret not in answer.text
        job_id = answer.json()["job_id"]
        doc = wait_for(lambda: (d := client.get(f"/api/pdf/{job_id}").json())["status"]
                       in ("completed", "failed") and d, 90, "the job to end")
        assert doc["status"] == "completed", doc["error"]
        assert doc["options"]["encrypt"] == {"owner_password": "***", "user_password": "***",
                                             "allow": ["print"]}
        listing = client.get("/api/pdf").text
        pdf = client.get(f"/api/pdf/{job_id}/download").content
    assert secret not in json.dumps(doc) and secret not in listing
    with pikepdf.open(io.BytesIO(pdf), password=secret) as opened:
        assert opened.owner_password_matched
