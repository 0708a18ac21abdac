"""Class 7: no server path in anything a client sees: job errors (status route, webhooks)
and the PDFs' link annotations. Unit tests on the renderer, and an integration test through
a real worker and the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdftasks.render import PDFService, PDFServiceConfig, redact_paths
from tests.integration.test_api import KEY_A, wait_for


def test_relative_links_in_a_pdf_name_no_server_path(tmp_path: Path) -> None:
    tpl = tmp_path / "templates-secret-location"
    tpl.mkdir()
    (tpl / "terms.html").write_text("terms")
    (tpl / "t.html").write_text(
        '<a href="terms.html">terms</a> <a href="sub/more.html">more</a> '
        '<a href="file:///etc/hosts">hosts</a> <a href="../up.html">up</a> '
        '<a href="https://example.com/x">web</a> <a href="#top" id="top">top</a>')
    service = PDFService(PDFServiceConfig(templates_dir=tpl, output_dir=tmp_path / "out",
                                          storage=""))
    pdf, _ = service.render_pdf("t.html", {})
    assert b"templates-secret-location" not in pdf and b"file:" not in pdf
    from io import BytesIO

    from pypdf import PdfReader

    uris = [a.get_object()["/A"]["/URI"] for a in PdfReader(BytesIO(pdf)).pages[0]["/Annots"]
            if "/A" in a.get_object()]
    assert uris == ["terms.html", "sub/more.html", "https://example.com/x"]


def test_redaction_of_server_paths() -> None:
    roots = {"templates": Path("/srv/app/templates"), "output": Path("/srv/app/out")}
    text = ("Template not found in /srv/app/templates/x.html; refused to read "
            "file:///srv/app/templates/a/b.css; cannot write /srv/app/out/pdf/x.pdf; "
            "file:///etc/passwd")
    assert redact_paths(text, roots) == (
        "Template not found in <templates>/x.html; refused to read <templates>/a/b.css; "
        "cannot write <output>/pdf/x.pdf; passwd")


@pytest.mark.integration
@pytest.mark.parametrize(("template", "needle"), [
    ("missing_include.html", "TemplateNotFoundError"),
    ("escape_css.html", "UnsafeResourceError"),
    ("broken_syntax.html", "TemplateSyntaxError"),
])
def test_job_errors_name_no_server_path(start_api, start_worker, template, needle) -> None:
    from tests.conftest import TEMPLATES

    (TEMPLATES / "missing_include.html").write_text('{% include "no/such/part.html" %}')
    (TEMPLATES / "escape_css.html").write_text('<link rel="stylesheet" href="../x.css"><p>x</p>')
    api = start_api()
    start_worker(concurrency=1, output_dir=api.output_dir)
    client = api.client(KEY_A)
    answer = client.post("/api/pdf", json={"template": template, "data": {},
                                           "filename": "x.pdf"})
    if answer.status_code == 202:
        job_id = answer.json()["job_id"]
        doc = wait_for(lambda: (lambda d: d if d["status"] == "failed" else None)(
            client.get(f"/api/pdf/{job_id}").json()), 60, "the job to fail")
        error = doc["error"]
    else:  # refused at the door: the error body is what the client sees
        assert answer.status_code == 422, answer.text
        error = answer.text
    assert needle in error
    for secret in (str(TEMPLATES.parent), str(api.output_dir), TEMPLATES.parent.as_uri()):
        assert secret not in error, error
    client.close()
