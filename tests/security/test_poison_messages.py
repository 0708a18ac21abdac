"""Poison messages (issue "Hostile callers", class 1): whatever bytes sit on a pdftasks queue,
the worker's main process survives, the job ends FAILED with a clear error (or, with no
record to write, the message is dead-lettered with the reason), and the next job is served.

A real ``pdftasks worker`` on the session's Redis; messages are pushed straight onto the
Redis lists the way kombu's Redis transport stores them (a JSON envelope: base64 body,
headers, properties with the delivery tag and routing), as a client that bypassed every
check, or no client at all, could. Before ``pdftasks.worker.guard``, the 480-level body stopped
the worker's main process (``RecursionError`` while pickling the request for the pool),
and a non-JSON envelope did too.
"""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdftasks import app, generate_pdf
from pdftasks.celery_app import GENERATE_PDF
from pdftasks.samples import sample_invoice
from pdftasks.stores import DEAD_LETTER_EXCERPT
from pdftasks.worker.tasks import job_store, make_job
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration

QUEUE = "pdf.normal"
#: The worker's data limit in these tests (small, so that an oversized body stays cheap).
MAX_DATA_BYTES = 100_000
FINAL = {"failed", "completed", "cancelled"}


def valid_kwargs(name: str = "poison.pdf") -> dict[str, Any]:
    return {"template": "invoice.html", "data": sample_invoice(1), "output_filename": name}


def job_body(kwargs: Any, args: Any = (), options: Any = None) -> str:
    """A Celery protocol 2 body: ``[args, kwargs, options]``."""
    if options is None:
        options = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return json.dumps([list(args), kwargs, options])


def nested_body(depth: int) -> str:
    """A ``generate_pdf`` body whose data is nested ``depth`` levels (built as text: no
    Python recursion)."""
    data = '{"a":' * depth + "1" + "}" * depth
    return f'[[], {{"template": "invoice.html", "data": {data}, ' \
           f'"output_filename": "nested.pdf"}}, {{}}]'


def headers_for(job_id: str, task: str | None = GENERATE_PDF, **extra: Any) -> dict[str, Any]:
    headers = {"lang": "py", "task": task, "id": job_id, "shadow": None, "eta": None,
               "expires": None, "group": None, "group_index": None, "retries": 0,
               "timelimit": [None, None], "root_id": job_id, "parent_id": None,
               "argsrepr": "()", "kwargsrepr": "{}", "origin": "poison@tests",
               "ignore_result": False}
    if task is None:
        del headers["task"]
    headers.update(extra)
    return headers


def envelope(body: str | bytes, job_id: str, *, headers: Any = None,
             content_type: str = "application/json", content_encoding: str = "utf-8",
             queue: str = QUEUE) -> str:
    """A message as kombu's Redis transport keeps it on a list."""
    raw = body.encode() if isinstance(body, str) else body
    return json.dumps({
        "body": base64.b64encode(raw).decode(), "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers_for(job_id) if headers is None else headers,
        "properties": {"correlation_id": job_id, "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": queue},
                       "priority": 0, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())},
    })


def main_pid() -> int:
    """The pid the (only) running worker reports for its main process."""
    replies = wait_for(lambda: app.control.inspect(timeout=2).stats(), 30, "worker stats")
    (stats,) = replies.values()
    return int(stats["pid"])


def record(job_id: str) -> None:
    """A PENDING record, as a pdftasks client makes before it queues a job."""
    job_store(app).create(make_job(app, job_id, valid_kwargs()))


def job_status(job_id: str) -> tuple[str | None, str | None]:
    job = job_store(app).get(job_id)
    return (job.status.value, job.error) if job else (None, None)


def drained(redis_client) -> bool:
    """Nothing left on the queue nor held unacknowledged by the worker."""
    return redis_client.llen(QUEUE) == 0 and redis_client.hlen("unacked") == 0


def start_guarded_worker(start_worker):
    return start_worker(concurrency=1, max_data_bytes=MAX_DATA_BYTES)


def test_poison_messages_fail_their_jobs_and_the_worker_survives(start_worker,
                                                                  redis_client) -> None:
    worker = start_guarded_worker(start_worker)
    pid = main_pid()
    assert pid == worker.proc.pid

    def ids(n: int) -> list[str]:
        return [str(uuid.uuid4()) for _ in range(n)]

    # Jobs with a record (queued by a client, then tampered with or sent around it):
    # each ends FAILED with this text in its error.
    j = dict(zip(["nested480", "nested5000", "malformed", "pickle", "yaml", "template_type",
                  "data_type", "priority", "retries_type", "missing", "extra", "positional",
                  "oversized", "not_a_list", "scalar_body", "timelimit", "metadata",
                  "headers_nested", "unknown_task", "no_task_header", "compressed",
                  "unhashable_task", "options_nested"], ids(23), strict=True))
    big = {**valid_kwargs(), "data": {"blob": "x" * (3 * MAX_DATA_BYTES)}}
    with_record = {
        "nested480": (envelope(nested_body(480), j["nested480"]),
                      "InvalidDataError: data is nested deeper than the limit of 32 levels"),
        "nested5000": (envelope(nested_body(5000), j["nested5000"]),
                       "nested too deeply to decode"),
        "malformed": (envelope('[[], {"template": "invoice.html", "data": {', j["malformed"]),
                      "cannot be decoded"),
        "pickle": (envelope(pickle.dumps([[], valid_kwargs(), {}]), j["pickle"],
                            content_type="application/x-python-serialize",
                            content_encoding="binary"),
                   "'application/x-python-serialize' is not accepted"),
        "yaml": (envelope("- []\n- {template: invoice.html}\n- {}\n", j["yaml"],
                          content_type="application/x-yaml"),
                 "'application/x-yaml' is not accepted"),
        "template_type": (envelope(job_body({**valid_kwargs(), "template": 5}),
                                   j["template_type"]), "template must be a string, not int"),
        "data_type": (envelope(job_body({**valid_kwargs(), "data": "text"}), j["data_type"]),
                      "data must be a JSON object (dict), not str"),
        "priority": (envelope(job_body({**valid_kwargs(), "priority": "asap"}),
                              j["priority"]), "InvalidPriorityError: unknown priority 'asap'"),
        "retries_type": (envelope(job_body({**valid_kwargs(), "max_retries": "many"}),
                                  j["retries_type"]), "max_retries must be a whole number"),
        "missing": (envelope(job_body({"template": "invoice.html", "data": {}}),
                             j["missing"]), "missing arguments: output_filename"),
        "extra": (envelope(job_body({**valid_kwargs(), "evil": 1}), j["extra"]),
                  "unknown argument 'evil'"),
        "positional": (envelope(job_body({}, args=list(range(10))), j["positional"]),
                       "at most 8 arguments, got 10"),
        "oversized": (envelope(job_body(big), j["oversized"]), "bytes, above the limit of"),
        "not_a_list": (envelope(json.dumps({"template": "invoice.html"}), j["not_a_list"]),
                       "missing arguments"),
        "scalar_body": (envelope("5", j["scalar_body"]), "not a int"),
        "timelimit": (envelope(job_body(valid_kwargs()), j["timelimit"],
                               headers=headers_for(j["timelimit"], timelimit=["x", "y"])),
                      "'timelimit' header"),
        "metadata": (envelope(job_body({**valid_kwargs(), "metadata": json.loads(
            '{"m":' * 100 + "1" + "}" * 100)}), j["metadata"]),
                     "metadata is nested deeper than the limit of 32 levels"),
        # Deep options: before, pickling them for the pool process failed and the job's
        # pool slot was never given back (with -c 1, no later job was ever served).
        "options_nested": (envelope(job_body({**valid_kwargs(), "options": json.loads(
            '{"merge": [{"self": true}, {"template": "invoice.html", "data": '
            + '{"m":' * 700 + "1" + "}" * 700 + "}]}")}), j["options_nested"]),
                           "options is nested deeper than the limit of 36 levels"),
        "headers_nested": (envelope(job_body(valid_kwargs()), j["headers_nested"],
                                    headers=headers_for(j["headers_nested"], x=json.loads(
                                        "[" * 480 + "]" * 480))),
                           "headers are nested deeper than 32 levels"),
        # Refused by Celery's consumer (our hooks), the record failed all the same.
        "unknown_task": (envelope(job_body(valid_kwargs()), j["unknown_task"],
                                  headers=headers_for(j["unknown_task"], task="evil.task")),
                         "unknown task 'evil.task'"),
        "no_task_header": (envelope(job_body(valid_kwargs()), j["no_task_header"],
                                    headers=headers_for(j["no_task_header"], task=None)),
                           "not a Celery task message"),
        "unhashable_task": (envelope(job_body(valid_kwargs()), j["unhashable_task"],
                                     headers=headers_for(j["unhashable_task"], task=["x"])),
                            "could not take this message in"),
        # Refused while kombu reads it: a decompression bomb is never decompressed.
        "compressed": (envelope(b"\x1f\x8b" + b"\x00" * 64, j["compressed"],
                                headers=headers_for(j["compressed"],
                                                    compression="application/x-gzip")),
                       "compressed messages are refused"),
    }
    # No record anywhere: a FAILED record is made for a generate_pdf message with an id,
    # and every one of them is dead-lettered with its reason.
    r = dict(zip(["nested480", "unknown_task", "no_task_header", "bad_headers", "bad_id",
                  "secret_options"], ids(6), strict=True))
    secret = "S3cret-Pa55-" + r["secret_options"][:8]
    secret_kwargs = {**valid_kwargs(), "options": {"encrypt": {"user_password": secret,
                                                               "owner_password": secret}}}
    recordless = {
        "nested480": (envelope(nested_body(480), r["nested480"]), r["nested480"],
                      "data is nested deeper than the limit of 32 levels"),
        "unknown_task": (envelope(job_body(valid_kwargs()), r["unknown_task"],
                                  headers=headers_for(r["unknown_task"], task="nope")),
                         r["unknown_task"], "unknown task 'nope'"),
        "no_task_header": (envelope(job_body(valid_kwargs()), r["no_task_header"],
                                    headers=headers_for(r["no_task_header"], task=None)),
                           r["no_task_header"], "not a Celery task message"),
        "bad_headers": (envelope(job_body(valid_kwargs()), r["bad_headers"],
                                 headers=["not", "an", "object"]), None,
                        "headers are not an object"),
        "bad_id": (envelope(job_body(valid_kwargs()), r["bad_id"],
                            headers=headers_for(r["bad_id"], id=[1, 2])), None,
                   "the message's header 'id' is a list"),
        # A dead letter is kept and listed: the job's secret options are not.
        "secret_options": (envelope(job_body(secret_kwargs), r["secret_options"],
                                    headers=headers_for(r["secret_options"], task="old.task",
                                                        kwargsrepr=repr(secret_kwargs))),
                           r["secret_options"], "unknown task 'old.task'"),
        "not_json": ("{this is not json", None, "JSONDecodeError"),
        "json_list": ("[1, 2, 3]", None, "is a JSON list, not an object"),
        "no_properties": (json.dumps({"body": "", "headers": {}}), None,
                          "has no properties object"),
        "bad_base64": (json.dumps({"body": "abc", "headers": {}, "content-type": "x",
                                   "properties": {"delivery_tag": "t", "body_encoding": "base64",
                                                  "delivery_info": {"routing_key": QUEUE}}}),
                       None, "cannot be read"),
        "nested_envelope": ("[" * 5000 + "]" * 5000, None, "RecursionError"),
    }
    for name in with_record:
        record(j[name])
    for raw, _ in with_record.values():
        redis_client.lpush(QUEUE, raw)
    for raw, _, _ in recordless.values():
        redis_client.lpush(QUEUE, raw)

    # The next job, submitted the normal way behind the poison, is served.
    good = generate_pdf.delay("invoice.html", sample_invoice(7), "after_poison.pdf")
    assert good.get(timeout=120)["pages"] == 1
    # So is a valid job queued around pdftasks' client (no record): the worker records it.
    raw_id = app.send_task(GENERATE_PDF, kwargs=valid_kwargs("sent_raw.pdf"),
                           queue=QUEUE).id
    assert app.AsyncResult(raw_id).get(timeout=60)["pages"] == 1
    wait_for(lambda: job_status(raw_id)[0] == "completed", 30, "the sent job's record")

    wait_for(lambda: all(job_status(i)[0] in FINAL for i in j.values()), 60,
             "every poisoned job to end")
    for name, (_, expected) in with_record.items():
        status, error = job_status(j[name])
        assert status == "failed", (name, status, error)
        assert expected in (error or ""), (name, error)
    # Clients following the job with Celery's result see the failure too.
    failed = app.AsyncResult(j["nested480"])
    assert failed.state == "FAILURE" and "nested deeper" in str(failed.result)

    letters = job_store(app).dead_letters(1000)
    for name, (_, message_id, reason) in recordless.items():
        matches = [e for e in letters if reason in e["reason"] and
                   (message_id is None or e.get("message_id") == message_id)]
        assert matches, (name, [e["reason"] for e in letters])
    assert job_status(r["nested480"])[0] == "failed"  # made FAILED, and dead-lettered
    for entry in letters:  # excerpts only, never whole bodies
        assert all(len(v) <= DEAD_LETTER_EXCERPT for v in entry.values() if isinstance(v, str))
        assert entry["ts"] > 0
    assert secret not in json.dumps(letters)
    with_secret = next(e for e in letters if e.get("message_id") == r["secret_options"])
    assert '"user_password": "***"' in with_secret["body"], with_secret
    nested = next(e for e in letters if e.get("message_id") == r["nested480"])
    assert nested["queue"] == QUEUE and nested["task"] == GENERATE_PDF
    assert nested["body"].startswith('[[], {"template": "invoice.html"')
    # The operator sees them with `pdftasks dead-letters`.
    cli = subprocess.run([sys.executable, "-m", "pdftasks", "dead-letters", "--json", "-n",
                          "1000"], capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert {e["ts"] for e in listed} == {e["ts"] for e in letters}

    # Nothing went back to the queue to come round again, and the worker is the same one.
    wait_for(lambda: drained(redis_client), 30, "the queue to drain")
    assert worker.proc.poll() is None
    assert main_pid() == pid
    assert "Unrecoverable error" not in worker.log
    assert "Restoring" not in worker.log


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=25)
near_valid_kwargs = st.fixed_dictionaries(
    {"template": st.sampled_from(["invoice.html", "missing.html", "../etc/passwd"]) | json_values,
     "data": st.just(sample_invoice(3)) | json_values,
     "output_filename": st.sampled_from(["fuzz.pdf", "../x.pdf"]) | json_values},
    optional={"priority": st.sampled_from(["low", "urgent", 2]) | json_values,
              "css_file": json_values, "max_retries": json_values, "metadata": json_values,
              "bogus": json_values})
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(json.dumps),
    near_valid_kwargs.map(job_body),
    st.tuples(st.lists(json_values, max_size=8), near_valid_kwargs, json_values).map(
        lambda t: job_body(t[1], args=t[0], options=t[2])),
    st.integers(10, 2000).map(nested_body),
)
header_changes = st.fixed_dictionaries({}, optional={
    "task": st.sampled_from([GENERATE_PDF, "nope"]) | json_values,
    "retries": json_values, "timelimit": json_values, "shadow": json_values,
    "argsrepr": json_values, "ignore_result": json_values, "group": json_values,
    "extra": json_values})
content_types = st.sampled_from(["application/json", "application/json", "application/x-yaml",
                                 "application/x-python-serialize", "text/plain", ""])


def test_generated_poison_never_stops_the_worker(start_worker, redis_client) -> None:
    worker = start_guarded_worker(start_worker)
    pid = main_pid()
    sent: list[str] = []

    @settings(max_examples=50, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies, changes=header_changes, content_type=content_types)
    def publish(body: str | bytes, changes: dict[str, Any], content_type: str) -> None:
        job_id = str(uuid.uuid4())
        headers = headers_for(job_id)
        headers.update(changes)
        record(job_id)  # each one has a record, which must end whatever the message
        redis_client.lpush(QUEUE, envelope(body, job_id, headers=headers,
                                           content_type=content_type))
        sent.append(job_id)

    publish()
    good = generate_pdf.delay("invoice.html", sample_invoice(8), "after_fuzz.pdf")
    assert good.get(timeout=180)["pages"] == 1
    wait_for(lambda: all(job_status(i)[0] in FINAL for i in sent), 60,
             "every generated job to end")
    wait_for(lambda: drained(redis_client), 30, "the queue to drain")
    assert len(sent) >= 20
    assert worker.proc.poll() is None
    assert main_pid() == pid
    assert "Unrecoverable error" not in worker.log
