"""Hostile callers of the HTTP API (issue "Hostile callers", classes 4, 5 and the API part
of 7): no request stops the API, no client input is a 500, and no response names a server
path.

The real application (``pdftasks.api.build_api``) runs in this process with a real Redis
(the session's redis-server from tests/conftest.py), through Starlette's TestClient: its
event loop runs in a thread of its own, so requests from several test threads run
concurrently on it, as they would under uvicorn. No worker runs: jobs stay pending.

Next to the schemathesis run (tests/integration/test_api.py), which sends what the OpenAPI
document describes, the hypothesis fuzz here sends what it does not: any JSON (deep, huge
numbers, NaN, lone surrogates, wrong types), any bytes, odd Authorization, Idempotency-Key,
Content-Type and Content-Length headers. Bounded (190 examples, derandomized: the same
every run) to a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import TEMPLATES

with warnings.catch_warnings():  # "install httpx2": the httpx client is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

KEY_A, KEY_B = "acme-security-key", "globex-security-key"
API_KEYS = (f"acme:{hashlib.sha256(KEY_A.encode()).hexdigest()},"
            f"globex:{hashlib.sha256(KEY_B.encode()).hexdigest()}")
AUTH = {"Authorization": f"Bearer {KEY_A}"}
JSON = {**AUTH, "Content-Type": "application/json"}
#: Everything this test session keeps on disk (templates, output, home) is under here.
SERVER_ROOT = str(TEMPLATES.parent)
ERROR_KEYS = {"error", "detail", "field", "status"}


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[TestClient]:
    import redis

    from pdftasks.api import build_api
    from pdftasks.settings import Settings

    with redis.Redis.from_url(redis_url) as r:
        r.flushall()
    s = Settings(api_keys=API_KEYS, api_rate_limit_per_min=10**7,
                 webhook_secret="security-test-secret", webhook_allowed_hosts="127.0.0.1")
    with TestClient(build_api(s), raise_server_exceptions=False) as test_client:
        yield test_client


def assert_clean(response: Any, what: object = "") -> None:
    """Not a 5xx; a 4xx has the documented error body; no server path anywhere."""
    where = f"{response.request.method} {response.request.url} {what!r:.300}"
    status = response.status_code
    is_health = response.request.url.path == "/api/health"
    assert status < 500 or (is_health and status == 503), (
        f"{status} for {where}: {response.text[:500]}")
    assert SERVER_ROOT not in response.text, f"server path in the answer to {where}"
    if status >= 400:
        assert response.headers["content-type"].startswith("application/json"), where
        doc = response.json()
        assert isinstance(doc, dict), where
        assert isinstance(doc.get("error"), str) and doc["error"], (where, doc)
        assert isinstance(doc.get("detail"), str) and doc["detail"], (where, doc)
        if not is_health:
            assert set(doc) <= ERROR_KEYS, (where, doc)
            assert doc.get("field") is None or isinstance(doc["field"], str), (where, doc)


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` nested arrays (built as text: json.dumps would recurse)."""
    return "[" * depth + leaf + "]" * depth


def job_body(data_json: str = "{}", **fields: Any) -> str:
    base = {"template": "invoice.html", "filename": "a.pdf", **fields}
    return json.dumps(base)[:-1] + f', "data": {data_json}}}'


# Regressions of what the attacker found.


@pytest.mark.parametrize("depth", [40, 600, 960, 5000])
@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotency-key"])
def test_deeply_nested_data_is_a_422_on_every_submit_route(client, depth, idempotent) -> None:
    headers = {**JSON, "Idempotency-Key": f"deep-{uuid.uuid4()}"} if idempotent else JSON
    single = job_body(f'{{"x": {nested(depth)}}}')
    batch = f'{{"jobs": [{single}]}}'
    for path, body in (("/api/pdf", single), ("/api/pdf/batch", batch)):
        answer = client.post(path, content=body, headers=headers)
        assert_clean(answer, (path, depth))
        assert answer.status_code == 422, (path, depth, answer.text)
        doc = answer.json()
        assert doc["error"] == "invalid_request" and "nested" in doc["detail"], doc
        assert doc["field"] in ("body", "data"), doc
    # Metadata nests no deeper than data may
    answer = client.post("/api/pdf", content=job_body(metadata={"m": 1}).replace(
        '{"m": 1}', f'{{"m": {nested(depth)}}}'), headers=headers)
    assert answer.status_code == 422 and "nested" in answer.json()["detail"], answer.text


def test_data_just_over_the_depth_limit_names_the_field(client) -> None:
    answer = client.post("/api/pdf", content=job_body(f'{{"x": {nested(33)}}}'),
                         headers={**JSON, "Idempotency-Key": "just-over"})
    assert answer.status_code == 422, answer.text
    doc = answer.json()
    assert doc["field"] == "data" and "nested deeper than the limit of 32" in doc["detail"]


@pytest.mark.parametrize("body", [
    nested(100_000),
    "[" * 100_000,  # never closed
    "{" + '"a":{' * 100_000,
    job_body(f'{{"x": {nested(100_000)}}}'),
], ids=["closed", "unclosed", "objects", "in-data"])
def test_a_100000_level_body_is_a_clean_4xx_before_parsing(client, body) -> None:
    for path in ("/api/pdf", "/api/pdf/batch"):
        for content_type in ("application/json", None):
            headers = {**AUTH, "Content-Type": content_type} if content_type else AUTH
            answer = client.post(path, content=body.encode(), headers=headers)
            assert_clean(answer, (path, content_type))
            assert 400 <= answer.status_code < 500
    answer = client.post("/api/pdf", content=body.encode(), headers=JSON)
    if body.count("]") or body.startswith("{"):
        assert answer.status_code == 422 and answer.json()["field"] == "body"


def test_brackets_inside_strings_do_not_count_as_nesting(client) -> None:
    text = "[[[{{" * 200 + '\\"[[\\\\' + "]]" * 300
    answer = client.post("/api/pdf", content=job_body(json.dumps({"text": text})),
                         headers=JSON)
    assert answer.status_code == 202, answer.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_numbers_json_cannot_carry_are_refused_in_data_and_metadata(client, value) -> None:
    for data, metadata in ((f'{{"n": {value}}}', None), ("{}", value)):
        body = job_body(data)
        if metadata is not None:
            body = body[:-1] + f', "metadata": {{"n": {metadata}}}}}'
        answer = client.post("/api/pdf", content=body, headers=JSON)
        assert_clean(answer, body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == ("data" if metadata is None else "metadata")


@pytest.mark.parametrize("options", [
    '{"merge": [{"self": true}, {"template": "invoice.html", "data": {"x": "\\ud800"}}]}',
    '{"merge": [{"self": true}, {"template": "invoice.html", "data": {"\\udfff": 1}}]}',
    '{"merge": [{"self": true}, {"template": "invoice.html", "data": {"x": NaN}}]}',
    '{"merge": [{"self": true}, {"template": "invoice.html", "data": {"x": [-Infinity]}}]}',
    '{"metadata": {"keywords": ["ok", "\\ud800"]}}',
])
def test_options_carry_only_json_text_and_numbers(client, options) -> None:
    # Free-form values inside options (merge data, keywords) are checked like data: once
    # accepted, a lone surrogate made every later read of the job (and the tenant's job
    # list) a 500 for as long as the record was kept.
    body = job_body()[:-1] + f', "options": {options}}}'
    answer = client.post("/api/pdf", content=body, headers=JSON)
    assert_clean(answer, body)
    assert answer.status_code == 422 and answer.json()["field"] == "options", answer.text
    # A batch answers for each job: this one is rejected, naming its options.
    answer = client.post("/api/pdf/batch", content=f'{{"jobs": [{body}]}}', headers=JSON)
    assert_clean(answer, body)
    doc = answer.json()
    assert (doc["queued"], doc["rejected"]) == (0, 1), doc
    assert doc["jobs"][0]["field"] == "jobs.0.options", doc
    assert_clean(client.get("/api/pdf", headers=AUTH))


def test_huge_numbers_and_odd_content_lengths_are_not_server_errors(client) -> None:
    for digits in (100, 4000, 5000, 100_000):
        answer = client.post("/api/pdf", content=job_body(f'{{"n": {"9" * digits}}}'),
                             headers=JSON)
        assert_clean(answer, digits)
    for length in (b"\xb2", b"-1", b"1e3", b" 12", b"99999999999999999999"):
        answer = client.post("/api/pdf", content=job_body().encode(),
                             headers={**JSON, "Content-Length": length})
        assert_clean(answer, length)


@pytest.mark.parametrize("source", [
    "<p>{{ 'a' * 10**9 }}</p>",
    "<p>{% if x %}{{ x.y }}{% endif %}</p>\n" * 10_000,
], ids=["huge-constant", "slow-to-compile"])
def test_a_template_that_is_costly_to_compile_does_not_stall_the_api(client, source,
                                                                     monkeypatch) -> None:
    """``{{ 'a' * 10**9 }}``: Jinja folded the constant while compiling (16 s and 3 GB on
    the event loop); a 400 KB template takes seconds to compile, however safe the sandbox.
    The API only checks that the file exists; the worker compiles it, within its limits."""
    from pdftasks.render import PDFService

    compiled: list[str] = []
    original = getattr(PDFService, "_compile", None)

    def spy(self: Any, template: str) -> Any:
        compiled.append(template)
        return original(self, template)  # type: ignore[misc]

    monkeypatch.setattr(PDFService, "_compile", spy, raising=False)
    name = f"costly_{uuid.uuid4().hex[:8]}.html"
    (TEMPLATES / name).write_text(source)
    try:
        assert_clean(client.get("/api/health"))  # warm: the worker count is cached 5 s
        health_times: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                began = time.monotonic()
                assert_clean(client.get("/api/health"))
                health_times.append(time.monotonic() - began)
                time.sleep(0.05)

        with ThreadPoolExecutor(2) as pool:
            prober = pool.submit(probe)
            time.sleep(0.2)
            began = time.monotonic()
            answers = [client.post("/api/pdf", json={"template": name, "data": {},
                                                     "filename": f"huge{i}.pdf"},
                                   headers=AUTH) for i in range(3)]
            batch = client.post("/api/pdf/batch", json={"jobs": [
                {"template": name, "data": {}, "filename": "huge-batch.pdf"}]}, headers=AUTH)
            submitted = time.monotonic() - began
            time.sleep(0.3)
            stop.set()
            prober.result(timeout=60)
        for answer in [*answers, batch]:
            assert answer.status_code == 202, answer.text
        assert batch.json()["queued"] == 1
        assert submitted < 2.0, f"4 submits took {submitted:.1f} s"
        assert health_times and max(health_times) < 1.0, health_times
        assert compiled == [], "the API process compiled a template"
    finally:
        (TEMPLATES / name).unlink()


def test_submit_errors_name_no_server_path(client) -> None:
    for change, field in (({"template": "missing.html"}, "template"),
                          ({"css_file": "missing.css"}, "css_file"),
                          ({"template": "/etc/passwd"}, "template"),
                          ({"template": "a/../../x.html"}, "template"),
                          ({"template": "x" * 200 + "é" * 55}, "template"),
                          ({"template": "\ud800.html"}, "template"),
                          ({"css_file": "\udcff"}, "css_file")):
        body = json.dumps({"template": "invoice.html", "data": {}, "filename": "a.pdf",
                           **change})
        for path, content in (("/api/pdf", body), ("/api/pdf/batch", f'{{"jobs": [{body}]}}')):
            answer = client.post(path, content=content, headers=JSON)
            assert_clean(answer, change)
            if path == "/api/pdf":
                assert answer.status_code == 422 and answer.json()["field"] == field, (
                    change, answer.text)
            else:
                assert answer.json()["jobs"][0]["field"] == f"jobs.0.{field}", answer.text


def test_job_errors_name_no_server_path(client) -> None:
    from pdftasks import api
    from pdftasks.settings import Settings

    s = Settings()
    message = (f"Template not found: 'x.html' in {s.templates_dir}; also "
               f"{s.output_dir}/a.pdf and /srv/app/lib/weasyprint/css.py, "
               "file:///etc/passwd and https://example.com/a/b stay")
    redacted = api.redact_paths(message, s)
    assert SERVER_ROOT not in redacted and "/srv/app" not in redacted
    assert "Template not found: 'x.html';" in redacted and "…/a.pdf" in redacted
    assert "…/css.py" in redacted
    assert "file:///etc/passwd" in redacted and "https://example.com/a/b" in redacted
    # A job whose stored error names paths is shown without them
    job_id = client.post("/api/pdf", json={"template": "invoice.html", "data": {},
                                           "filename": "e.pdf"}, headers=AUTH).json()["job_id"]
    state = client.app.state.api
    state.store.transition(job_id, api.JobStatus.FAILED, (api.JobStatus.PENDING,),
                           error=f"RenderError: cannot write {s.output_dir}/e.pdf")
    for doc in (client.get(f"/api/pdf/{job_id}", headers=AUTH).json(),
                client.get("/api/pdf", headers=AUTH, params={"status": "failed"}).json()[
                    "jobs"][0]):
        assert doc["error"] == "RenderError: cannot write …/e.pdf", doc


# Fuzzing: random bodies and headers on every route.

_HEADER_BYTES = st.binary(max_size=60).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F))
_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
_SCALARS = (st.none() | st.booleans() | st.integers(-(10**30), 10**30)
            | st.floats(allow_nan=True, allow_infinity=True) | _TEXT)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_TEXT, inner, max_size=4), max_leaves=16)
#: JSON that is valid job data (text, finite numbers): what a well-behaved client sends.
_CLEAN_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4), max_leaves=16)
#: Values that broke something once: no JSON text, no Unicode text, deep, huge.
_HOSTILE = st.sampled_from([float("nan"), float("inf"), -float("inf"), "\ud800", "a\udfff",
                            {"\udc80": 1}, 10**4000, -(10**4000), 1e308, ""])
_NAMES = st.sampled_from(["invoice.html", "report.html", "missing.html", "broken_syntax.html",
                          "../invoice.html", "/etc/passwd", "invoice.html/", "", ".",
                          "sub/../invoice.html", "invoice.html\x00", "x" * 300])
_FIELDS = {
    "template": _NAMES | _TEXT | _JSON,
    "data": st.dictionaries(_TEXT, _JSON, max_size=5) | _JSON,
    "filename": st.sampled_from(["a.pdf", "../a.pdf", "a.exe", ".pdf", "a" * 300 + ".pdf"])
    | _TEXT | _JSON,
    "priority": st.sampled_from(["urgent", "high", "normal", "low", "asap"]) | _JSON,
    "css_file": st.sampled_from(["missing.css", "../x.css", "invoice.html"]) | _TEXT | _JSON,
    "metadata": st.dictionaries(_TEXT, _JSON, max_size=4) | _JSON,
    "max_retries": st.integers(-5, 30) | _JSON,
    "callback_url": st.sampled_from(["http://127.0.0.1:9/hook", "http://169.254.169.254/x",
                                     "ftp://127.0.0.1/", "http://user:pw@127.0.0.1/",
                                     "http://[::1/"]) | _TEXT,
}
_JOB = st.fixed_dictionaries({}, optional=_FIELDS)
_VALID_JOB = st.fixed_dictionaries(
    {"template": st.just("invoice.html"), "filename": st.just("f.pdf"),
     "data": st.dictionaries(st.text(max_size=8), _CLEAN_JSON, max_size=5)},
    optional={"metadata": st.dictionaries(st.text(max_size=8), _HOSTILE | _CLEAN_JSON,
                                          min_size=1, max_size=3),
              "priority": st.sampled_from(["urgent", "high", "normal", "low"])})


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def _raw_body(draw: st.DrawFn, jobs: bool) -> bytes:
    """A request body: mostly JSON shaped like a job (or a batch), sometimes anything."""
    kind = draw(st.sampled_from(["job", "job", "valid", "valid", "json", "deep", "number",
                                 "bytes"]))
    if kind in ("job", "valid"):
        job = draw(_VALID_JOB if kind == "valid" else _JOB)
        if jobs:
            more = draw(st.lists(_JOB | _VALID_JOB | _JSON, max_size=3))
            return _dumps({"jobs": [job, *more],
                           **draw(st.fixed_dictionaries({}, optional={"priority": _JSON}))})
        return _dumps(job)
    if kind == "json":
        return _dumps(draw(_JSON))
    if kind == "deep":
        depth = draw(st.sampled_from([33, 41, 300, 600, 960, 5000, 100_000])
                     | st.integers(1, 120_000))
        inner = draw(st.sampled_from([nested(depth), '{"a":' * depth + "1" + "}" * depth,
                                      "[" * depth]))
        if draw(st.integers(0, 3)) == 0:  # the bare structure
            return inner.encode()
        where = draw(st.sampled_from(["data", "metadata"]))
        text = job_body('{"x": 1}' if where == "metadata" else f'{{"x": {inner}}}')
        if where == "metadata":
            text = text[:-1] + f', "metadata": {{"x": {inner}}}}}'
        return (f'{{"jobs": [{text}]}}' if jobs else text).encode()
    if kind == "number":
        digits = draw(st.integers(1, 20_000))
        return job_body(f'{{"n": {draw(st.sampled_from(["", "-"]))}{"9" * digits}}}').encode()
    return draw(st.binary(max_size=300))


@st.composite
def _headers(draw: st.DrawFn, body: bool = True) -> dict[str, bytes]:
    """Mostly a valid key and JSON; sometimes another tenant, no key or any bytes; an
    Idempotency-Key half the time; odd Content-Types and Content-Lengths now and then."""
    out: dict[str, bytes] = {}
    auth = draw(st.sampled_from(["a", "a", "a", "a", "b", "none", "other"]))
    if auth == "other":
        out["Authorization"] = draw(st.sampled_from([b"Bearer", b"Bearer ", b"Basic eDp5",
                                                     b"bearer " + KEY_A.encode()])
                                    | _HEADER_BYTES)
    elif auth != "none":
        out["Authorization"] = f"Bearer {KEY_A if auth == 'a' else KEY_B}".encode()
    if draw(st.booleans()):
        out["Idempotency-Key"] = draw(_HEADER_BYTES.filter(bool) | st.binary(
            min_size=250, max_size=300).map(lambda b: bytes(33 + c % 90 for c in b)))
    if not body:
        return out
    kind = draw(st.sampled_from(["json", "json", "json", "none", "other"]))
    if kind == "json":
        out["Content-Type"] = b"application/json"
    elif kind == "other":
        out["Content-Type"] = draw(st.sampled_from([
            b"application/json; charset=utf-8", b"text/plain", b"application/merge-patch+json",
            b"application/x-www-form-urlencoded", b"multipart/form-data",
            b"application/json; charset=latin-1", b"APPLICATION/JSON"]) | _HEADER_BYTES)
    if draw(st.integers(0, 5)) == 0:
        out["Content-Length"] = draw(
            st.sampled_from([b"\xb2", b"\xb9", b"-1", b"1e3", b" 12", b"0x10", b""])
            | st.integers(0, 2**40).map(lambda n: str(n).encode()) | _HEADER_BYTES)
    return out


def _post(client: TestClient, path: str, body: bytes, headers: dict[str, bytes]) -> Any:
    return client.post(path, content=body, headers=headers)


_FUZZ = settings(max_examples=70, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.large_base_example])


@_FUZZ
@given(body=_raw_body(jobs=False), headers=_headers())
def test_fuzz_submit_one_job(client, body, headers) -> None:
    answer = _post(client, "/api/pdf", body, headers)
    event(f"status {answer.status_code}")
    assert_clean(answer, (body[:200], headers))
    if answer.status_code == 202:  # what was accepted can be read back
        auth = {"Authorization": headers["Authorization"]}
        assert_clean(client.get(answer.json()["check_url"], headers=auth), body[:200])
        assert_clean(client.get("/api/pdf", headers=auth), body[:200])


@_FUZZ
@given(body=_raw_body(jobs=True), headers=_headers())
def test_fuzz_submit_a_batch(client, body, headers) -> None:
    answer = _post(client, "/api/pdf/batch", body, headers)
    event(f"status {answer.status_code}")
    assert_clean(answer, (body[:200], headers))
    if answer.status_code == 202:
        auth = {"Authorization": headers["Authorization"]}
        for item in answer.json()["jobs"]:
            if item.get("check_url"):
                assert_clean(client.get(item["check_url"], headers=auth), body[:200])
        assert_clean(client.get("/api/pdf", headers=auth), body[:200])


_ROUTES = st.sampled_from(["GET {}", "GET {}/download", "DELETE {}", "POST {}/retry"])


@settings(_FUZZ, max_examples=50)
@given(route=_ROUTES | st.just("LIST"), job_id=_TEXT | st.just(""),
       status=st.none() | _TEXT | st.sampled_from(["pending", "failed"]),
       limit=st.none() | _TEXT | st.integers(-(10**20), 10**20), headers=_headers(body=False))
def test_fuzz_read_routes(client, route, job_id, status, limit, headers) -> None:
    sent = headers
    if route == "LIST":
        params = {k: str(v) for k, v in (("status", status), ("limit", limit))
                  if v is not None}
        answers = [client.get("/api/pdf", params=params, headers=sent)]
    else:
        method, template = route.split(" ")
        path = template.format(f"/api/pdf/{quote(job_id, safe='', errors='surrogatepass')}")
        answers = [client.request(method, path, headers=sent)]
    answers += [client.get(p, headers=sent) for p in ("/api/queue/stats", "/metrics")]
    event(f"status {answers[0].status_code}")
    for answer in answers:
        assert_clean(answer, (route, job_id, status, limit, headers))
