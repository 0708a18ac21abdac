"""Unit tests (no services) of the HTTP API: keys, request models, error shapes, the body
limit and the OpenAPI document. Routes against real Redis and workers are in
tests/integration/test_api.py."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import httpx
import pytest
from pydantic import ValidationError

from pdftasks import api
from pdftasks.api import BodyLimitMiddleware, PdfRequest, parse_api_keys


def test_api_keys_are_sha256_hashes_per_tenant() -> None:
    a, b = api.hash_key("key-a"), api.hash_key("key-b")
    assert a == hashlib.sha256(b"key-a").hexdigest()
    keys = parse_api_keys(f" acme:{a.upper()} , globex:{b},acme:{api.hash_key('rotated')},")
    assert keys == {a: "acme", b: "globex", api.hash_key("rotated"): "acme"}
    assert parse_api_keys("") == {}
    new = api.new_key()
    assert new.startswith("pdft_") and len(new) > 40 and new != api.new_key()


@pytest.mark.parametrize("spec,message", [
    ("acme", "not tenant:<sha256"),
    ("acme:abc", "not tenant:<sha256"),
    (f"bad tenant:{'0' * 64}", "not tenant:<sha256"),
    (f":{'0' * 64}", "not tenant:<sha256"),
    (f"a:{'0' * 64},b:{'0' * 64}", "twice"),
])
def test_bad_key_configuration_says_what_is_wrong(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_api_keys(spec)


def _request(**fields) -> PdfRequest:
    return PdfRequest.model_validate({"template": "invoice.html", "data": {},
                                      "filename": "a.pdf", **fields})


@pytest.mark.parametrize("fields,field", [
    ({"priority": "asap"}, "priority"),
    ({"priority": 0}, "priority"),
    ({"filename": "../x.pdf"}, "filename"),
    ({"filename": "x.txt"}, "filename"),
    ({"filename": ".hidden.pdf"}, "filename"),
    ({"data": [1, 2]}, "data"),
    ({"metadata": {"tenant": "other"}}, "metadata"),
    ({"metadata": {"callback_url": "http://x"}}, "metadata"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": 21}, "max_retries"),
    ({"output_filename": "a.pdf"}, "output_filename"),
    ({"template": ""}, "template"),
])
def test_invalid_fields_are_named_in_the_error(fields, field) -> None:
    with pytest.raises(ValidationError) as info:
        _request(**fields)
    name, detail = api._messages(list(info.value.errors()))
    assert name == field and detail.startswith(f"{field}: ")
    assert "Value error, " not in detail


def test_filename_errors_speak_of_filename_not_output_filename() -> None:
    with pytest.raises(ValidationError) as info:
        _request(filename="a/b.pdf")
    _, detail = api._messages(list(info.value.errors()))
    assert "output_filename" not in detail and "path separator" in detail


def test_missing_fields_and_batch_items_are_named() -> None:
    with pytest.raises(ValidationError) as info:
        PdfRequest.model_validate({"template": "invoice.html", "data": {}})
    assert api._messages(list(info.value.errors())) == ("filename", "filename: Field required")
    with pytest.raises(ValidationError) as info:
        PdfRequest.model_validate({"template": "x.html", "filename": "a.pdf"})
    assert api._messages(list(info.value.errors()), "jobs.3.")[0] == "jobs.3.data"


def test_idempotency_fingerprint_ignores_key_order_and_defaults() -> None:
    state = SimpleNamespace(ns="pdf:api")
    caller = api.Caller("acme", "k", state)

    def fingerprint(body: dict) -> str:
        return api.Idempotency(state, caller, "key-1", "create",
                               PdfRequest.model_validate(body)).fingerprint

    one = fingerprint({"template": "t.html", "data": {"a": 1, "b": 2}, "filename": "a.pdf"})
    assert one == fingerprint({"filename": "a.pdf", "data": {"b": 2, "a": 1},
                               "template": "t.html", "priority": "normal"})
    assert one != fingerprint({"template": "t.html", "data": {"a": 1, "b": 3},
                               "filename": "a.pdf"})
    other_tenant = api.Idempotency(state, api.Caller("globex", "k", state), "key-1", "create",
                                   _request())
    assert other_tenant.key != api.Idempotency(state, caller, "key-1", "create",
                                               _request()).key


async def _echo(scope, receive, send) -> None:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_body_limit_by_content_length_and_while_streaming(anyio_backend) -> None:
    app = BodyLimitMiddleware(_echo, max_bytes=1000)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/x", content=b"a" * 1000)
        assert ok.status_code == 200 and ok.content == b"a" * 1000
        declared = await client.post("/x", content=b"a" * 1001)
        assert declared.status_code == 413
        assert declared.json() == {
            "error": "payload_too_large",
            "detail": "request body is 1001 bytes; the limit is 1000 bytes "
                      "(PDFTASKS_API_MAX_BODY_BYTES)"}

        async def chunks():  # no Content-Length: counted while reading
            for _ in range(5):
                yield b"b" * 300

        streamed = await client.post("/x", content=chunks())
        assert streamed.status_code == 413 and "more than 1000" in streamed.json()["detail"]
        assert (await client.get("/x")).status_code == 200


def test_openapi_document_lists_every_route_with_json_errors() -> None:
    doc = api.build_api().openapi()
    routes = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routes == {
        ("/api/pdf", "post"), ("/api/pdf", "get"), ("/api/pdf/batch", "post"),
        ("/api/pdf/{job_id}", "get"), ("/api/pdf/{job_id}", "delete"),
        ("/api/pdf/{job_id}/download", "get"), ("/api/pdf/{job_id}/retry", "post"),
        ("/api/queue/stats", "get"), ("/api/health", "get"), ("/metrics", "get")}
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create = doc["paths"]["/api/pdf"]["post"]
    assert set(create["responses"]) >= {"202", "401", "409", "413", "422", "429"}
    error = create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/ErrorResponse")
    priority = doc["components"]["schemas"]["PdfRequest"]["properties"]["priority"]
    assert priority["enum"] == ["urgent", "high", "normal", "low"]
    download = doc["paths"]["/api/pdf/{job_id}/download"]["get"]["responses"]
    assert "application/pdf" in download["200"]["content"] and "409" in download
    json.dumps(doc)  # serialisable as served


@pytest.mark.parametrize("body,deepest", [
    (b"", 0),
    (b'{"a": [1, 2, {"b": []}]}', 0),
    (b"[" * 41 + b"]" * 41, 41),
    (b"[" * 100_000, 100_000),  # never closed: still measured
    (b'{"a":' * 50 + b"1" + b"}" * 50, 50),
    (b'["' + b"[" * 100 + b'"]', 0),  # brackets in a string
    (b'["\\"' + b"[" * 100 + b'"]', 0),  # ... after an escaped quote
    (b'["\\\\"' + b"," + b"[" * 50 + b"]" * 50 + b"]", 51),  # an escaped backslash ends it
    (b'"unterminated ' + b"[" * 100, 0),
    (b"[" * 30 + b"]" * 30 + b"," + b"[" * 30, 0),  # 30 at most at any point
])
def test_json_depth_is_measured_without_parsing(body, deepest) -> None:
    assert api.json_depth_above(body, 40) == deepest


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_body_limit_refuses_deep_json_before_the_app_sees_it(anyio_backend) -> None:
    app = BodyLimitMiddleware(_echo, max_bytes=10**6, max_depth=40)
    transport = httpx.ASGITransport(app=app)
    deep = b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for content_type in ("application/json", "application/merge-patch+json", None):
            headers = {"Content-Type": content_type} if content_type else {}
            refused = await client.post("/x", content=deep, headers=headers)
            assert refused.status_code == 422
            doc = refused.json()
            assert (doc["error"], doc["field"]) == ("invalid_request", "body")
            assert doc["detail"].startswith("body: the JSON is nested 5001 levels deep")
            assert "at most 32 levels" in doc["detail"]
        big = b"[" + b"[]," * 100_000 + deep + b"]"  # above INLINE_BYTES: in a thread
        assert (await client.post("/x", content=big)).status_code == 422
        shallow = b'{"data": ' + b"[" * 39 + b"]" * 39 + b"}"
        ok = await client.post("/x", content=shallow, headers={"Content-Type": "application/json"})
        assert ok.status_code == 200 and ok.content == shallow
        text = await client.post("/x", content=deep, headers={"Content-Type": "text/plain"})
        assert text.status_code == 200  # not JSON: FastAPI will not parse it


def test_paths_are_redacted_from_what_clients_see(tmp_path) -> None:
    settings = SimpleNamespace(templates_dir=tmp_path / "templates")
    message = (f"Template not found: 'x.html' in {tmp_path / 'templates'}; cannot write "
               f"{tmp_path}/out/a.pdf (see /usr/lib/python3/weasyprint/css.py)")
    assert api.redact_paths(message, settings) == (  # type: ignore[arg-type]
        "Template not found: 'x.html'; cannot write …/a.pdf (see …/css.py)")
    kept = "refused to read file:///etc/passwd or https://host/a/b; a / b; /single"
    assert api.redact_paths(kept) == kept


def test_template_files_are_checked_as_files_and_never_compiled(tmp_path) -> None:
    from pdftasks.errors import TemplateNotFoundError, UnsafePathError

    (tmp_path / "broken.html").write_text("{% if %}{{ 'a' * 10**9 }}")
    files = api.TemplateFiles(tmp_path)
    files.check_template("broken.html")  # no compiling: the worker reports the error
    for name, error in (("missing.html", TemplateNotFoundError), ("../x.html", UnsafePathError),
                        ("/etc/passwd", UnsafePathError), ("a\x00", UnsafePathError),
                        ("\ud800", UnsafePathError), ("é" * 255, UnsafePathError),
                        ("é" * 127, TemplateNotFoundError),
                        (".", TemplateNotFoundError)):
        with pytest.raises(error) as info:
            files.check(name, "template")
        assert str(tmp_path) not in str(info.value) and "template" in str(info.value).lower()
    with pytest.raises(TemplateNotFoundError, match="CSS file not found: 'x.css'"):
        files.check_template("broken.html", "x.css")
    elsewhere = api.TemplateFiles(tmp_path / "not-here")  # no templates on this machine
    elsewhere.check_template("anything.html")
    with pytest.raises(UnsafePathError):
        elsewhere.check_template("../anything.html")


@pytest.mark.parametrize("metadata,words", [
    ({"n": float("nan")}, "metadata['n']"),
    ({"n": float("inf")}, "metadata['n']"),
    ({"data": "\ud800"}, "lone surrogate"),
    ({"x": "y" * (64 * 1024)}, "above the limit of 65536 bytes"),
    ({"deep": json.loads("[" * 40 + "]" * 40)}, "metadata is nested deeper than the limit"),
])
def test_metadata_is_held_to_the_data_limits(metadata, words) -> None:
    with pytest.raises(ValidationError) as info:
        _request(metadata=metadata)
    field, detail = api._messages(list(info.value.errors()))
    assert field == "metadata" and words in detail, detail
