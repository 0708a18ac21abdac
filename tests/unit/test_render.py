"""Unit tests (no services): the renderer, real Jinja2 and real WeasyPrint, no Celery."""

from __future__ import annotations

import collections
import collections.abc
import enum
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pdftasks import errors, limits
from pdftasks.render import PDFService, PDFServiceConfig, check_data, time_limit
from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, TEMPLATES, pdf_text


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> PDFService:
    out = tmp_path_factory.mktemp("out")
    return PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=out))


def test_invoice_renders_with_its_data(service: PDFService) -> None:
    data = sample_invoice(7, client="Zebra Logistics")
    result = service.generate_pdf("invoice.html", data, "inv_7.pdf")
    text, pages = pdf_text(result.path)
    assert pages == result.pages == 1
    assert "INV-2026-0007" in text and "Zebra Logistics" in text
    assert "Page 1 of 1" in text
    assert Path(result.path).parent == service.output_dir


def test_long_invoice_is_multi_page_with_page_x_of_y(service: PDFService) -> None:
    result = service.generate_pdf("invoice.html", sample_invoice(1, items=200), "long.pdf")
    text, pages = pdf_text(result.path)
    assert pages >= 4
    assert f"Page {pages} of {pages}" in text


def test_html_is_autoescaped(service: PDFService) -> None:
    html = service.render_html("escape.html", {"value": "<script>x</script>"})
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_sandbox_blocks_python_internals(service: PDFService) -> None:
    with pytest.raises(errors.TemplateSecurityError):
        service.render_html("sandbox.html", {})


def test_missing_variable_is_a_typed_error(service: PDFService) -> None:
    with pytest.raises(errors.MissingVariableError, match="client_name"):
        service.render_html("strict.html", {"invoice_number": "X"})


def test_syntax_error_is_detected_by_check_job(service: PDFService) -> None:
    with pytest.raises(errors.TemplateSyntaxError, match="broken_syntax.html' line 1"):
        service.check_job("broken_syntax.html", "a.pdf")


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "a/../../x.html",
                                  "nope.html", "", None])
def test_template_paths_outside_or_missing_are_refused(service: PDFService, name) -> None:
    with pytest.raises((errors.UnsafePathError, errors.TemplateNotFoundError)):
        service.check_job(name, "a.pdf")


@pytest.mark.parametrize("name", ["../x.pdf", "a/b.pdf", "/tmp/x.pdf", "..pdf", "x.txt",
                                  ".hidden.pdf", "a\\b.pdf", "a\x00.pdf", "",
                                  # `$` matches before a final newline: checked to the end
                                  "x.pdf\n", "x.pdf\n\n", "x.pdf\r"])
def test_unsafe_output_names_are_refused(service: PDFService, name: str) -> None:
    with pytest.raises(errors.UnsafePathError):
        service.check_job("invoice.html", name)


def test_css_file_outside_templates_is_refused(service: PDFService) -> None:
    with pytest.raises(errors.UnsafePathError):
        service.check_job("invoice.html", "a.pdf", css_file="../../etc/passwd")


@pytest.mark.parametrize("template", ["local_file.html", "attachment.html"])
def test_local_files_are_never_read(service: PDFService, template: str) -> None:
    with pytest.raises(errors.UnsafeResourceError, match="file:///etc/hostname"):
        service.generate_pdf(template, {"title": "t"}, "leak.pdf")
    assert not (service.output_dir / "leak.pdf").exists()


def test_network_is_never_requested() -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/pixel.png"
    try:
        svc = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=TEMPLATES / "o"))
        with pytest.raises(errors.UnsafeResourceError, match="network access is off"):
            svc.render_pdf("network.html", {"title": "t", "url": url})
        assert hits == []
        # The allow-list is what opens the network, and then the request really happens.
        allowed = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=TEMPLATES / "o",
                                              allowed_url_prefixes=(url,)))
        allowed.render_pdf("network.html", {"title": "t", "url": url})
        assert hits == ["/pixel.png"]
    finally:
        server.shutdown()


def test_template_assets_inside_templates_dir_are_served(service: PDFService) -> None:
    html = '<link rel="stylesheet" href="base.css"><img src="logo.svg"><p>ok</p>'
    pdf, pages = service.html_to_pdf(html)
    assert pdf.startswith(b"%PDF") and pages == 1


@pytest.mark.parametrize("data,match", [
    ({"when": object()}, "not JSON-serializable"),
    ({"x": float("nan")}, "not JSON-serializable"),
    (["not", "a", "dict"], "JSON object"),
    ({"big": "x" * 2000}, "above the limit"),
])
def test_bad_data_is_refused(data, match: str) -> None:
    with pytest.raises(errors.InvalidDataError, match=match):
        check_data(data, max_bytes=1000)


def test_time_limit_stops_a_runaway_render(service: PDFService) -> None:
    with pytest.raises(errors.RenderTimeoutError, match="soft time limit of 1 s"), time_limit(1):
        service.render_pdf("runaway.html", {})


def test_time_limit_cannot_be_swallowed() -> None:
    # Code that catches every Exception (WeasyPrint logs some errors and goes on) swallows
    # the first alarm; the limit is raised again until the block is left.
    import time

    swallowed = []
    with pytest.raises(errors.RenderTimeoutError), time_limit(0.2):
        try:
            time.sleep(3)
        except Exception:  # noqa: BLE001 - what a library might do
            swallowed.append(True)
        time.sleep(3)
    assert swallowed == [True]


def test_write_is_atomic_and_leaves_no_temp_file(service: PDFService) -> None:
    service.storage.write("atomic.pdf", b"%PDF-first")
    service.storage.write("atomic.pdf", b"%PDF-second")
    assert (service.output_dir / "atomic.pdf").read_bytes() == b"%PDF-second"
    assert not [p for p in service.output_dir.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_output_is_a_transient_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    svc = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=blocker / "out"))
    with pytest.raises(errors.StorageError) as info:
        svc.generate_pdf("escape.html", {"value": 1}, "x.pdf")
    assert info.value.permanent is False


def test_only_a_caching_service_patches_weasyprint_and_only_once_it_renders(
        tmp_path: Path) -> None:
    """The stylesheet cache's hook replaces ``weasyprint.css.CSS`` for the whole process:
    a default ``PDFService`` (a host application's, ``pdftasks render``) never installs it;
    one made with ``cache_stylesheets=True`` (the worker's) does when it first renders. In
    a fresh interpreter, where no earlier test installed it."""
    code = f"""
import weasyprint.css
from pdftasks.render import PDFService, PDFServiceConfig
from pdftasks.samples import sample_invoice

original = weasyprint.css.CSS
config = PDFServiceConfig(templates_dir={str(TEMPLATES)!r}, output_dir={str(tmp_path)!r})
service = PDFService(config)
assert weasyprint.css.CSS is original, "a default service patched it when created"
service.render_pdf("invoice.html", sample_invoice(1))
assert weasyprint.css.CSS is original, "a default service patched it when rendering"
assert service._fetcher.stylesheet_cache is None

caching = PDFService(config, cache_stylesheets=True)
caching.check_template("invoice.html")
assert weasyprint.css.CSS is original, "a caching service patched it before rendering"
caching.render_pdf("invoice.html", sample_invoice(1))
hooked = getattr(weasyprint.css.CSS, "_pdftasks_hook", False)
assert hooked == (caching._fetcher.stylesheet_cache is not None), hooked
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


class _Frozen(collections.abc.Mapping):  # a Mapping that is not a dict
    def __init__(self, **items: object) -> None:
        self._items = items

    def __getitem__(self, key: str) -> object:
        return self._items[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class _Name(str):
    pass


class _Level(enum.IntEnum):
    HIGH = 1


@pytest.mark.parametrize("value,kind", [
    ("s", limits.STRING), (_Name("s"), limits.STRING), (1, limits.NUMBER),
    (True, limits.NUMBER), (None, limits.NUMBER), (_Level.HIGH, limits.NUMBER),
    (1.5, limits.FLOAT), ({}, limits.OBJECT), (collections.OrderedDict(), limits.OBJECT),
    (_Frozen(), limits.OBJECT), ([], limits.ARRAY), ((), limits.ARRAY),
    ({1}, limits.OTHER), (b"x", limits.OTHER), (object(), limits.OTHER),
])
def test_json_kinds_of_exact_types_and_subclasses(value: object, kind: int) -> None:
    # Exact types take the fast lookup; subclasses and other Mappings the isinstance path.
    assert limits.json_kind(value) == kind


def test_data_walk_takes_subclasses_and_refuses_what_json_cannot_carry() -> None:
    fine = collections.OrderedDict(name=_Name("Ada"), level=_Level.HIGH,
                                   rows=collections.OrderedDict(a=[1, 2.5, None, (True,)]))
    encoded = '{"name":"Ada","level":1,"rows":{"a":[1,2.5,null,[true]]}}'
    assert limits.check_data(fine) == len(encoded)
    with pytest.raises(errors.InvalidDataError, match="not JSON-serializable"):
        limits.check_data(_Frozen(a=1))  # walked as an object; json.dumps takes dicts only
    for bad, text in [({"s": {1, 2}}, "a set"), ({"b": b"x"}, "a bytes"),
                      ({"f": float("inf")}, "not JSON-serializable: inf"),
                      (_Frozen(deep=[[["x" * 20]]]), "characters")]:
        with pytest.raises(errors.InvalidDataError, match=text):
            limits.check_data(bad, limits.DataLimits(max_string=10))


def test_a_render_result_as_the_task_returns_it() -> None:
    from pdftasks.render.service import RenderResult

    result = RenderResult(path="/out/a.pdf", pages=2, bytes=1234, duration_ms=48.5,
                          extra={"priority": "high", "worker_pid": 7})
    out = result.as_dict()
    assert out == {"path": "/out/a.pdf", "pages": 2, "bytes": 1234, "duration_ms": 48.5,
                   "priority": "high", "worker_pid": 7}
    out["priority"] = "low"  # a copy: the result keeps its own
    assert result.extra["priority"] == "high"


@pytest.mark.parametrize(("namespace", "job_id", "tenant"), [
    ("pdf\n", "j1", None), ("pdf", "j1\n", None), ("pdf", "j1", "acme\n")])
def test_storage_key_parts_are_checked_to_the_end(namespace, job_id, tenant) -> None:
    from pdftasks.storage import check_key, storage_key

    with pytest.raises(errors.UnsafePathError):
        storage_key(namespace, job_id, "a.pdf", tenant)
    with pytest.raises(errors.UnsafePathError):
        check_key(f"{namespace}/{tenant or '_'}/{job_id}/a.pdf")
