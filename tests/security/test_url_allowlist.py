"""Class 6: the URL allow-list compares normalised URLs (unit tests of the rule, and the real
renderer against an HTTP server on 127.0.0.1 that records what it was asked for)."""

from __future__ import annotations

import http.server
import posixpath
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from pdftasks.errors import UnsafeResourceError
from pdftasks.render import PDFService, PDFServiceConfig, allowed_url

PREFIXES = ("http://h/allowed/",)


@pytest.mark.parametrize("url", [
    "http://h/allowed/../secret.css",
    "http://h/allowed/%2e%2e/secret.css",
    "http://h/allowed/%2E%2E/secret.css",
    "http://h/allowed/.%2e/secret.css",
    "http://h/allowed/..%2fsecret.css",
    "http://h/allowed/%2fsecret.css",
    "http://h/allowed/..\\secret.css",
    "http://h/allowed/sub/../../secret.css",
    "http://h/allowed/./../secret.css",
    "http://h/allowedx/secret.css",
    "http://h/secret.css?x=/allowed/",
    "http://h:8080/allowed/x.css",
    "https://h/allowed/x.css",
    "http://user@h/allowed/x.css",
    "http://h@evil/allowed/x.css",
    "http://evil/allowed/x.css",
    "http://h.evil/allowed/x.css",
    "ftp://h/allowed/x.css",
    "http://h:bad/allowed/x.css",
])
def test_urls_outside_the_prefix_are_refused(url) -> None:
    assert allowed_url(url, PREFIXES) is None


@pytest.mark.parametrize(("url", "fetched"), [
    ("http://h/allowed/x.css", "http://h/allowed/x.css"),
    ("HTTP://H:80/allowed/x.css", "http://h/allowed/x.css"),
    ("http://h/allowed/sub/../x.css?v=1", "http://h/allowed/x.css?v=1"),
    ("http://h/allowed/a%20b.css", "http://h/allowed/a%20b.css"),
])
def test_urls_inside_the_prefix_are_fetched_normalised(url, fetched) -> None:
    assert allowed_url(url, PREFIXES) == fetched


def test_a_prefix_without_slash_covers_whole_segments_only() -> None:
    assert allowed_url("http://h/allowed/x", ("http://h/allowed",)) == "http://h/allowed/x"
    assert allowed_url("http://h/allowed-x/y", ("http://h/allowed",)) is None


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            body = b"p { color: red }"
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()


@pytest.mark.parametrize("href", ["/allowed/../secret.css", "/allowed/%2e%2e/secret.css",
                                  "/allowed/%2E%2e/secret.css"])
def test_the_renderer_never_requests_a_path_outside_the_prefix(server, tmp_path: Path,
                                                               href) -> None:
    base, seen = server
    tpl = tmp_path / "templates"
    tpl.mkdir()
    (tpl / "t.html").write_text(f'<link rel="stylesheet" href="{base}{href}"><p>x</p>')
    (tpl / "ok.html").write_text(f'<link rel="stylesheet" href="{base}/allowed/ok.css"><p>x</p>')
    service = PDFService(PDFServiceConfig(templates_dir=tpl, output_dir=tmp_path / "out",
                                          allowed_url_prefixes=(f"{base}/allowed/",),
                                          storage=""))
    with pytest.raises(UnsafeResourceError):
        service.render_pdf("t.html", {})
    service.render_pdf("ok.html", {})  # an allowed URL is fetched
    assert seen and all(posixpath.normpath(unquote(p)).startswith("/allowed/") for p in seen), \
        seen
