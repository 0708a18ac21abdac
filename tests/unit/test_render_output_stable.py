"""The renderer's speed-ups (parsed <link> stylesheets reused, gc.freeze after warm-up)
change nothing in the output: a reused PDFService produces the same text and page count as
a stock WeasyPrint render of the same HTML with fresh objects. The services here cache
stylesheets as a worker's does (``cache_stylesheets=True``)."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest
from pypdf import PdfReader
from weasyprint import HTML

from pdftasks import errors
from pdftasks.render import PDFService, PDFServiceConfig
from pdftasks.samples import sample_invoice, sample_report
from tests.conftest import TEMPLATES


def pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def stock_pdf(service: PDFService, template: str, data: dict) -> bytes:
    """What WeasyPrint makes of the same HTML with fresh objects (no pdftasks caches)."""
    html = service.render_html(template, data)
    return HTML(string=html, base_url=service.templates_dir.as_uri() + "/").write_pdf()


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> PDFService:
    out = tmp_path_factory.mktemp("out")
    svc = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=out),
                     cache_stylesheets=True)
    svc.warm_up()
    return svc


CASES = {
    "invoice": ("invoice.html", sample_invoice(3)),
    "invoice-json": ("invoice.html",
                     json.loads((TEMPLATES / "sample_invoice.json").read_text())),
    "invoice-200-lines": ("invoice.html", sample_invoice(5, items=200)),
    "report": ("report.html", sample_report(period="2026-11-28")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reused_service_matches_a_stock_render(service: PDFService, case: str) -> None:
    template, data = CASES[case]
    # Given a service that has rendered the template before (stylesheets cached)
    service.render_pdf(template, data)
    # When it renders again
    pdf, pages = service.render_pdf(template, data)
    # Then text and page count equal WeasyPrint's with fresh objects
    reference = pages_text(stock_pdf(service, template, data))
    assert pages == len(reference)
    assert pages_text(pdf) == reference


def test_linked_stylesheet_is_cached_once_per_file(service: PDFService) -> None:
    cache = service._fetcher.stylesheet_cache
    assert cache is not None, "the stylesheet hook did not install"
    service.render_pdf("invoice.html", sample_invoice(1))
    before = dict(cache._entries)
    service.render_pdf("invoice.html", sample_invoice(2))
    assert {k[0].rsplit("/", 1)[-1] for k in cache._entries} >= {"base.css", "invoice.css"}
    assert all(cache._entries[k] is v for k, v in before.items())  # reused, not re-parsed


def test_changed_stylesheet_is_parsed_again(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "page.html").write_text(
        '<html><head><link rel="stylesheet" href="s.css"></head>'
        '<body><h1>Title</h1></body></html>')
    css = templates / "s.css"
    css.write_text('h1::after { content: " one"; }')
    svc = PDFService(PDFServiceConfig(templates_dir=templates, output_dir=tmp_path / "out"),
                     cache_stylesheets=True)
    assert "Title one" in pages_text(svc.render_pdf("page.html", {})[0])[0]
    time.sleep(0.01)
    css.write_text('h1::after { content: " two, changed"; }')
    assert "Title two, changed" in pages_text(svc.render_pdf("page.html", {})[0])[0]


def test_cached_stylesheet_still_passes_the_fetcher(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    svc = PDFService(PDFServiceConfig(templates_dir=templates, output_dir=tmp_path / "out"),
                     cache_stylesheets=True)
    svc.render_pdf("invoice.html", sample_invoice(1))
    # Given base.css, cached, replaced by a link to a file outside the templates directory
    outside = tmp_path / "outside.css"
    outside.write_text("body { color: red; }")
    (templates / "base.css").unlink()
    (templates / "base.css").symlink_to(outside)
    # Then the cache does not serve it: the fetcher refuses it as it would without a cache
    with pytest.raises(errors.UnsafeResourceError, match="only files inside"):
        svc.render_pdf("invoice.html", sample_invoice(1))


def test_stylesheets_with_per_document_state_are_not_cached(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "page.html").write_text(
        '<html><head><link rel="stylesheet" href="c.css"></head>'
        '<body><ol class="x"><li>a</li><li>b</li></ol></body></html>')
    (templates / "c.css").write_text(
        "@counter-style thumbs { system: cyclic; symbols: '*'; suffix: ' '; }"
        " ol.x { list-style: thumbs; }")
    svc = PDFService(PDFServiceConfig(templates_dir=templates, output_dir=tmp_path / "out"),
                     cache_stylesheets=True)
    first = pages_text(svc.render_pdf("page.html", {})[0])
    second = pages_text(svc.render_pdf("page.html", {})[0])
    assert first == second == pages_text(stock_pdf(svc, "page.html", {}))
    entry = next(iter(svc._fetcher.stylesheet_cache._entries.values()))
    assert entry.sheet is None  # parsed in each document, as before
