"""The passwords of the ``encrypt`` option reach the worker and the PDF, and nothing else:
not the job record, the task result Celery stores (``result_extended`` keeps a request's
kwargs with every state), the events Flower shows, the worker's log, a webhook's body, nor
any other key of the Redis server, while the job runs (through a retry) or after it.

The broker message itself carries them to the worker, like the job's data, and is deleted
when the worker acknowledges it: the check during the run skips the queues, the check after
it does not.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pikepdf
import pytest

from pdftasks import JobStatus
from tests.conftest import TEMPLATES
from tests.unit.test_documents_sign import PASSPHRASE, TimestampServer, make_ca

pytestmark = pytest.mark.integration

USER, OWNER = "u5er-Pa55-7f3a", "0wner-Pa55-91c2"
SECRETS = (USER.encode(), OWNER.encode())
#: Broker keys that hold the message in transit (queues, unacknowledged messages).
BROKER_KEYS = ("docsec.", "unacked", "_kombu.")


def secret_keys(client: Any, skip_broker: bool) -> list[str]:
    """Keys of the Redis server whose value contains a password."""
    found = []
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        if skip_broker and name.startswith(BROKER_KEYS):
            continue
        kind = client.type(key)
        values: list[bytes] = []
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        elif kind == b"stream":
            values = [b for _, fields in client.xrange(key) for kv in fields.items() for b in kv]
        if any(secret in value for value in values for secret in SECRETS):
            found.append(name)
    return found


def test_passwords_stay_out_of_records_results_events_logs_and_webhooks(
        redis_client, redis_url, tmp_path: Path) -> None:
    from pdftasks import PDFQueueManager, PDFService, PDFServiceConfig, RedisBackend
    from pdftasks.contrib.webhooks import job_document

    # Given workers that sign with a timestamp authority that fails once (so the job is
    # retried: its retry must still carry the real passwords)
    ca = make_ca(tmp_path)
    tsa = TimestampServer(ca, failures=1)
    service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=tmp_path / "out"))
    manager = PDFQueueManager(
        backend=RedisBackend(url=redis_url, queue_name="docsec"), pdf_service=service,
        num_workers=1, settings={
            "home": tmp_path / "home", "sign_pkcs12_file": str(ca.p12),
            "sign_pkcs12_passphrase": PASSPHRASE.decode(), "sign_timestamp_url": tsa.url,
            "retry_backoff_s": 1, "retry_jitter": False})
    events: list[dict[str, Any]] = []
    leaks_while_running: set[str] = set()
    done = threading.Event()

    def listen() -> None:  # what Flower sees
        with manager.app.connection_for_read() as conn:
            receiver = manager.app.events.Receiver(conn, handlers={"*": events.append})
            while not done.is_set():
                with contextlib.suppress(Exception):  # the idle timeout
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)

    def watch() -> None:  # every key but the queues, all the time
        import redis

        client = redis.Redis.from_url(redis_url)
        while not done.is_set():
            leaks_while_running.update(secret_keys(client, skip_broker=True))
            time.sleep(0.05)

    threads = [threading.Thread(target=fn, daemon=True) for fn in (listen, watch)]
    try:
        manager.start()
        for thread in threads:
            thread.start()
        manager.app.control.enable_events()  # as Flower does, whatever the worker's default
        time.sleep(1)  # the event receiver is consuming
        # When a job asks for encryption and a B-T signature
        job_id = manager.submit_job(
            "invoice.html", {"invoice_number": "INV-SECRET", "client_name": "Acme"},
            "secret.pdf", options={"encrypt": {"user_password": USER, "owner_password": OWNER},
                                   "sign": {"level": "b-t"}})
        job = manager.wait_for_job(job_id, timeout=120)
        time.sleep(1.5)  # the last events and the acknowledgement
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=5)
        manager.stop(timeout=10)
        tsa.close()

    # Then the PDF is encrypted with the real passwords, after a retry, and signed
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.retry_count >= 1, "the timestamp authority's 503 should have been retried"
    pdf = Path(job.result_path).read_bytes()
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(io.BytesIO(pdf))
    with pikepdf.open(io.BytesIO(pdf), password=USER) as doc:
        assert doc.is_encrypted and not doc.owner_password_matched
    with pikepdf.open(io.BytesIO(pdf), password=OWNER) as doc:
        assert doc.owner_password_matched
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(pdf))
    reader.decrypt(USER)
    assert len(reader.embedded_signatures) == 1
    # ... and the passwords are nowhere else
    record = manager.get_job(job_id)
    assert record.options["encrypt"] == {"user_password": "***", "owner_password": "***"}
    assert not any(s.decode() in json.dumps(record.to_record(), default=str) for s in SECRETS)
    assert not any(s.decode() in json.dumps(job_document(record), default=str)
                   for s in SECRETS)
    meta = manager.app.backend.get_task_meta(job_id)  # result_extended: args and kwargs too
    assert meta.get("kwargs"), "result_extended should store the kwargs (else drop this check)"
    assert not any(s.decode() in json.dumps(meta, default=str) for s in SECRETS)
    assert events and {e["type"] for e in events} >= {"task-received", "task-succeeded"}
    assert not any(s.decode() in json.dumps(events, default=str) for s in SECRETS)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "home").rglob("*.log"))
    assert "rendered" in logs or "succeeded" in logs, "no worker log found"
    assert not any(s.decode() in logs for s in SECRETS)
    assert leaks_while_running == set()
    assert secret_keys(redis_client, skip_broker=False) == []


def test_a_cancelled_job_leaves_no_password_in_its_revoked_result(
        redis_client, redis_url, tmp_path: Path) -> None:
    # The REVOKED state of a cancelled job is written by the worker's main process (not the
    # pool process whose task hides the secrets), from the message's own kwargs.
    import json as _json

    from pdftasks import PDFQueueManager, PDFService, PDFServiceConfig, RedisBackend

    report = _json.loads((TEMPLATES / "sample_report.json").read_text())
    report["rows"] = report["rows"] * 25  # a few seconds of rendering: the worker is busy
    service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=tmp_path / "out"))
    manager = PDFQueueManager(backend=RedisBackend(url=redis_url, queue_name="docrev"),
                              pdf_service=service, num_workers=1,
                              settings={"home": tmp_path / "home"})
    try:
        manager.start()
        busy = manager.submit_job("report.html", report, "busy.pdf")
        wait_until = time.monotonic() + 60
        while manager.get_job(busy).status is not JobStatus.PROCESSING:
            assert time.monotonic() < wait_until, "the busy job never started"
            time.sleep(0.05)
        # When an encrypted job queued behind it is cancelled
        job_id = manager.submit_job(
            "invoice.html", {"invoice_number": "INV-REVOKED", "client_name": "Acme"},
            "revoked.pdf", options={"encrypt": {"user_password": USER, "owner_password": OWNER}})
        assert manager.cancel_job(job_id)
        manager.wait_for_job(busy, timeout=120)
        meta: dict[str, Any] = {}
        while meta.get("status") != "REVOKED":  # the worker took the message and dropped it
            assert time.monotonic() < wait_until + 120, f"no REVOKED result: {meta}"
            time.sleep(0.1)
            meta = manager.app.backend.get_task_meta(job_id)
    finally:
        manager.stop(timeout=10)
    # Then its result keeps the kwargs (result_extended), the passwords redacted
    assert meta["kwargs"]["options"]["encrypt"] == {"user_password": "***",
                                                    "owner_password": "***"}
    assert not any(s.decode() in json.dumps(meta, default=str) for s in SECRETS)
    assert manager.get_job(job_id).status is JobStatus.CANCELLED
    assert secret_keys(redis_client, skip_broker=False) == []
