"""The worker's message checks (``pdftasks.worker.guard``) and the job stores' dead-letter lists,
without a worker: kombu messages built in memory."""

from __future__ import annotations

import json
import pickle
import uuid
from typing import Any

import pytest
from kombu.message import Message

from pdftasks.celery_app import GENERATE_PDF
from pdftasks.errors import InvalidDataError, InvalidJobError, InvalidPriorityError
from pdftasks.limits import DataLimits
from pdftasks.stores import DEAD_LETTER_EXCERPT, SqliteJobStore, dead_letter_entry
from pdftasks.stores import sqlite as sqlite_store
from pdftasks.worker.guard import (
    InvalidMessageError,
    body_limit,
    check_job_message,
    check_task_message,
    envelope_problem,
    excerpt,
    job_id_of,
)

LIMITS = DataLimits(max_bytes=10_000)
KWARGS = {"template": "invoice.html", "data": {"n": 1}, "output_filename": "x.pdf"}


def message(body: Any = None, *, raw: str | bytes | None = None,
            content_type: str = "application/json", **headers: Any) -> Message:
    job_id = str(uuid.uuid4())
    hdrs = {"task": GENERATE_PDF, "id": job_id, "retries": 0, "timelimit": [None, None],
            **headers}
    hdrs = {k: v for k, v in hdrs.items() if v is not ...}
    if raw is None:
        raw = json.dumps([[], KWARGS, {}] if body is None else body)
    return Message(body=raw.encode() if isinstance(raw, str) else raw,
                   content_type=content_type, content_encoding="utf-8", headers=hdrs,
                   properties={"correlation_id": job_id},
                   delivery_info={"routing_key": "pdf.normal"}, accept={"application/json"})


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_a_valid_message_passes_and_its_arguments_are_bound() -> None:
    assert check_job_message(message(), None, LIMITS) == KWARGS
    positional = message([["invoice.html", {"n": 1}, "x.pdf", "high", None, 2, {"k": "v"}],
                          {}, None])
    assert check_job_message(positional, None, LIMITS)["max_retries"] == 2


@pytest.mark.parametrize(("msg", "error", "text"), [
    (lambda: message(raw=f'[[], {{"template": "t", "data": {nested(480)}, '
                         f'"output_filename": "x.pdf"}}, {{}}]'),
     InvalidDataError, "data is nested deeper than the limit of 32 levels"),
    (lambda: message(raw="[" * 5000 + "]" * 5000), InvalidMessageError,
     "nested too deeply to decode"),
    (lambda: message(raw="[[], {"), InvalidMessageError, "cannot be decoded"),
    (lambda: message(raw=pickle.dumps([[], KWARGS, {}]),
                     content_type="application/x-python-serialize"),
     InvalidMessageError, "'application/x-python-serialize' is not accepted"),
    (lambda: message(raw="x" * (body_limit(LIMITS) + 1)), InvalidMessageError,
     "above the limit"),
    (lambda: message([[], {**KWARGS, "evil": 1}, {}]), InvalidMessageError,
     "unknown argument 'evil'"),
    (lambda: message([["a"], KWARGS, {}]), InvalidMessageError,
     "two values for argument 'template'"),
    (lambda: message([[], {"template": "t"}, {}]), InvalidMessageError,
     "missing arguments: data, output_filename"),
    (lambda: message([list(range(9)), {}, {}]), InvalidMessageError, "at most 8"),
    (lambda: message([[], {**KWARGS, "template": None}, {}]), InvalidMessageError,
     "template must be a string"),
    (lambda: message([[], {**KWARGS, "output_filename": "x" * 2000}, {}]),
     InvalidMessageError, "1-1024 characters"),
    (lambda: message([[], {**KWARGS, "data": [1]}, {}]), InvalidDataError,
     "must be a JSON object"),
    (lambda: message([[], {**KWARGS, "priority": "asap"}, {}]), InvalidPriorityError,
     "unknown priority"),
    (lambda: message([[], {**KWARGS, "max_retries": True}, {}]), InvalidMessageError,
     "max_retries"),
    (lambda: message([[], {**KWARGS, "metadata": {"x": float("nan")}}, {}]),
     InvalidDataError, "metadata['x'] is not JSON-serializable"),
    (lambda: message([[], KWARGS, {}, 4]), InvalidMessageError, "list of 4 items"),
    (lambda: message("text"), InvalidMessageError, "not a str"),
    (lambda: message([{}, KWARGS, {}]), InvalidMessageError, "args are a dict"),
    (lambda: message([[], KWARGS, []]), InvalidMessageError, "options are a list"),
    (lambda: message(id=...), InvalidMessageError, "no 'id' and 'task' headers"),
    (lambda: message(id="x" * 300), InvalidMessageError, "id must be printable text"),
    (lambda: message(timelimit="60"), InvalidMessageError, "header 'timelimit' is a str"),
    (lambda: message(timelimit=[1, 2, 3]), InvalidMessageError, "[hard, soft]"),
    (lambda: message(retries=True), InvalidMessageError, "header 'retries' is a bool"),
    (lambda: message(eta="tomorrow"), InvalidMessageError, "not an ISO 8601 time"),
    (lambda: message(extra=json.loads("[" * 100 + "]" * 100)), InvalidMessageError,
     "headers are nested deeper than 32 levels"),
])
def test_bad_messages_are_refused_with_a_clear_error(msg, error, text) -> None:
    with pytest.raises(error) as info:
        check_job_message(msg(), None, LIMITS)
    assert text in str(info.value)
    assert isinstance(info.value, InvalidJobError)


def test_the_arguments_seen_before_a_refusal_are_kept_for_the_record() -> None:
    seen: dict[str, Any] = {}
    with pytest.raises(InvalidDataError):
        check_job_message(message([[], {**KWARGS, "data": {"s": "x" * 20_000}}, {}]), None, LIMITS,
                          seen)
    assert seen["bound"]["template"] == "invoice.html"


def test_other_tasks_get_the_bounded_checks() -> None:
    ok = message([["https://example.com", {"job_id": "x"}], {}, None],
                 task="pdftasks.deliver_webhook")
    check_task_message(ok, None, LIMITS)
    deep = message(raw=f"[[{nested(480)}], {{}}, null]", task="pdftasks.deliver_webhook")
    with pytest.raises(InvalidMessageError, match="nested deeper"):
        check_task_message(deep, None, LIMITS)


def test_protocol_1_bodies_take_their_id_from_the_body() -> None:
    body = {"task": GENERATE_PDF, "id": "job-1", "args": [], "kwargs": KWARGS}
    msg = message(body, id=..., task=...)
    assert job_id_of(msg, body) == "job-1"
    assert check_job_message(msg, body, LIMITS) == KWARGS


def test_headers_celery_would_take_from_a_hybrid_body_are_checked_too() -> None:
    # Protocol 2 headers without 'timelimit', a body with args, kwargs and a timelimit.
    msg = message({"args": [], "kwargs": KWARGS, "timelimit": "soon"}, timelimit=...)
    with pytest.raises(InvalidMessageError, match="'timelimit' is a str"):
        check_job_message(msg, None, LIMITS)


@pytest.mark.parametrize(("payload", "text"), [
    ("text", "JSON str, not an object"),
    ({"body": ""}, "no properties object"),
    ({"properties": {"delivery_tag": 5}}, "no delivery tag"),
    ({"properties": {"delivery_tag": "t", "body_encoding": "rot13"}}, "not base64"),
    ({"properties": {"delivery_tag": "t"}, "headers": []}, "headers are not an object"),
    ({"properties": {"delivery_tag": "t"}, "headers": {"compression": "zlib"}},
     "compressed messages are refused"),
    ({"properties": {"delivery_tag": "t"}, "body": 5}, "body is not a string"),
])
def test_broken_envelopes_are_named(payload, text) -> None:
    assert text in envelope_problem(payload)


def test_a_good_envelope_has_no_problem() -> None:
    assert envelope_problem({"body": "W10=", "headers": {"id": "x"}, "content-type":
                             "application/json", "properties": {
                                 "delivery_tag": "t", "body_encoding": "base64",
                                 "delivery_info": {"routing_key": "pdf.normal"}}}) is None


def test_excerpts_are_bounded_whatever_the_value() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    assert len(excerpt(deep)) <= DEAD_LETTER_EXCERPT
    assert len(excerpt(b"x" * 100_000)) == DEAD_LETTER_EXCERPT
    entry = dead_letter_entry("r" * 10_000, {"body": "b" * 10_000, "obj": deep, "n": 3})
    assert all(len(v) <= DEAD_LETTER_EXCERPT for v in entry.values() if isinstance(v, str))
    assert entry["n"] == 3 and entry["ts"] > 0
    json.dumps(entry)


def test_sqlite_store_keeps_a_bounded_dead_letter_list(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sqlite_store, "MAX_DEAD_LETTERS", 5)
    store = SqliteJobStore(tmp_path / "jobs.db", "ns")
    other = SqliteJobStore(tmp_path / "jobs.db", "other")
    for i in range(8):
        store.dead_letter(f"reason {i}", {"queue": "pdf.normal", "body": "x" * 5000})
    other.dead_letter("elsewhere", {})
    letters = store.dead_letters(100)
    assert [e["reason"] for e in letters] == [f"reason {i}" for i in range(7, 2, -1)]
    assert len(letters[0]["body"]) == DEAD_LETTER_EXCERPT
    assert [e["reason"] for e in other.dead_letters()] == ["elsewhere"]


class _Message:
    def __init__(self, headers: dict) -> None:
        self.headers = headers


@pytest.mark.parametrize(("asked", "kept"), [
    ([1e6, 1e6], [90.0, 60.0]),        # a message cannot switch the worker's limits off
    ([None, None], [90.0, 60.0]),
    (None, [90.0, 60.0]),
    ([10, 5], [10, 5]),                  # shorter limits are kept
    ([None, 30], [90.0, 30]),
])
def test_message_time_limits_are_held_to_the_workers(asked, kept) -> None:
    from pdftasks.worker.guard import cap_time_limits

    message = _Message({"task": "pdftasks.generate_pdf", "timelimit": asked})
    cap_time_limits(message, None, (90.0, 60.0))
    assert message.headers["timelimit"] == kept
    body = {"task": "pdftasks.generate_pdf", "timelimit": asked}  # protocol 1: in the body
    cap_time_limits(_Message({}), body, (90.0, 60.0))
    assert body["timelimit"] == kept


def test_options_are_bounded_by_their_own_shape_and_each_part_by_the_data_limits() -> None:
    from pdftasks.errors import InvalidOptionsError
    from pdftasks.worker.checks import check_arguments

    limits = DataLimits()
    part = {"template": "invoice.html", "data": {"rows": ["x" * 1000] * 3000}}  # 3 MB
    bound = {**KWARGS, "options": {"merge": [{"self": True}, part, part]}}
    check_arguments(bound, limits)  # two parts of 3 MB: 6 MB of options, as at submit
    attachment = {"name": "a.txt", "content_base64": "eHh4" * 120_000}  # 480,000 chars
    check_arguments({**KWARGS, "options": {"attachments": [attachment]}},
                    DataLimits(max_string=200_000))  # attachments have their own limit
    big = {"template": "invoice.html", "data": {"rows": ["x" * 1000] * 6000}}
    with pytest.raises(InvalidOptionsError, match=r"^options.merge\[1\].data is 6018010 bytes"):
        check_arguments({**KWARGS, "options": {"merge": [{"self": True}, big]}}, limits)
    deep = {"merge": [{"self": True}, {"template": "invoice.html",
                                       "data": json.loads('{"a":' * 700 + "1" + "}" * 700)}]}
    with pytest.raises(InvalidOptionsError, match="^options is nested deeper"):
        check_arguments({**KWARGS, "options": deep}, limits)


def test_dead_letters_of_broken_envelopes_hide_secret_options_in_base64_bodies() -> None:
    import base64

    from pdftasks.brokers.redis_guard import BrokenEnvelopeError
    from pdftasks.worker.guard import envelope_info

    body = json.dumps([[], {**KWARGS, "options": {"encrypt": {
        "user_password": "S3cret-u", "owner_password": "S3cret-o"}}}, {}])
    payload = {"body": base64.b64encode(body.encode()).decode(), "headers": {"id": "j"},
               "properties": {"body_encoding": "base64"}, "content-type": "application/json"}
    info = envelope_info(BrokenEnvelopeError("no delivery tag", payload))
    assert "S3cret" not in json.dumps(info)
    assert '"user_password": "***"' in info["body"] and '"template": "invoice.html"' \
        in info["body"]
