"""Unit tests (no services) of webhooks: callback URL checks, signatures, one delivery.

Deliveries go to real HTTP servers on 127.0.0.1, allowed by the allow-list where a test
wants them to arrive; the servers record what they receive.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from pdftasks.contrib import webhooks
from pdftasks.contrib.webhooks import UnsafeCallbackError, check_callback_url
from pdftasks.models import JobPriority, JobStatus
from pdftasks.stores import Job


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.10/hook",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[fe80::1]/hook",
    "http://[fd00::1]/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one number
])
def test_private_loopback_link_local_and_reserved_addresses_are_refused(url) -> None:
    with pytest.raises(UnsafeCallbackError, match="refused|does not resolve"):
        check_callback_url(url)


@pytest.mark.parametrize("url,message", [
    ("ftp://example.com/x", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("http:///nohost", "no host"),
    ("http://user:pw@93.184.216.34/", "credentials"),
    ("http://93.184.216.34/a b", "spaces"),
    ("http://93.184.216.34:99999/", "not a valid URL"),
    ("http://" + "a" * 2100 + ".com/", "longer than"),
    ("", "non-empty"),
    ("http://no-such-host.invalid/", "does not resolve"),
])
def test_malformed_callback_urls_are_refused_with_a_reason(url, message) -> None:
    with pytest.raises(UnsafeCallbackError, match=message):
        check_callback_url(url)


def test_public_addresses_and_the_allow_list_pass() -> None:
    assert [str(a) for a in check_callback_url("https://93.184.216.34/hook")] == [
        "93.184.216.34"]
    assert check_callback_url("http://127.0.0.1:9/x", "127.0.0.1")
    assert check_callback_url("http://10.9.8.7/x", "192.168.0.0/16, 10.0.0.0/8")
    assert check_callback_url("http://[::1]:8000/x", "::1")
    assert check_callback_url("http://LOCALHOST/x", "localhost.")
    with pytest.raises(UnsafeCallbackError):
        check_callback_url("http://10.9.8.7/x", "10.9.8.8, 11.0.0.0/8")


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"event":"job.completed"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.sign("s3cret", 1700000000, body) == "sha256=" + expected
    signature = webhooks.sign("s3cret", "1700000000", body)
    assert webhooks.verify("s3cret", "1700000000", body, signature, now=1700000100)
    assert not webhooks.verify("s3cret", "1700000000", body + b" ", signature, now=1700000100)
    assert not webhooks.verify("other", "1700000000", body, signature, now=1700000100)
    assert not webhooks.verify("s3cret", "1700000001", body, signature, now=1700000100)
    assert not webhooks.verify("s3cret", "1700000000", body, signature, now=1700000301)
    assert not webhooks.verify("s3cret", "soon", body, signature)
    assert not webhooks.verify("s3cret", None, body, signature)


def test_each_tenant_signs_with_its_own_derived_secret() -> None:
    acme = webhooks.tenant_secret("root", "acme")
    assert acme == hmac.new(b"root", b"pdftasks-webhook:acme", hashlib.sha256).hexdigest()
    assert acme != webhooks.tenant_secret("root", "globex")
    assert webhooks.tenant_secret("root", None) == "root"


def _job(status: JobStatus = JobStatus.COMPLETED) -> Job:
    start = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    return Job(job_id="j1", template="invoice.html", data={"secret": "not in documents"},
               output_filename="inv.pdf", status=status, priority=JobPriority.HIGH,
               created_at=start, started_at=start,
               completed_at=start + dt.timedelta(seconds=1.5), pages=2,
               metadata={"tenant": "acme", "callback_url": "http://x/", "order": 7})


def test_job_document_has_the_guide_fields_and_hides_internals() -> None:
    doc = webhooks.job_document(_job())
    assert doc["status"] == "completed" and doc["priority"] == "high"
    assert doc["duration"] == "1.50s" and doc["duration_s"] == 1.5
    assert doc["retries"] == "0/3" and doc["pages"] == 2
    assert doc["download_url"] == "/api/pdf/j1/download"
    assert doc["metadata"] == {"order": 7}
    assert "data" not in doc and "result_path" not in doc
    assert webhooks.job_document(_job(JobStatus.FAILED))["download_url"] is None


def test_retrying_attempts_do_not_trigger_a_webhook() -> None:
    # Returns before looking the job up: no app and no job store are needed.
    assert webhooks.on_event(None, "retrying", "j1", "StorageError: disk full") is None


class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", 0))
        self.server.received.append((self.path, dict(self.headers), self.rfile.read(length)))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        if status in (301, 302, 307):
            self.send_header("Location", self.server.redirect_to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.received, server.statuses, server.redirect_to = [], [], ""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_post_delivers_to_an_allowed_loopback_receiver(receiver) -> None:
    port = receiver.server_address[1]
    body = b'{"a":1}'
    headers = webhooks.delivery_headers("k", "job.completed", "d-1", body, timestamp=1234)
    status = webhooks.post(f"http://127.0.0.1:{port}/hook?x=1", body, headers, "127.0.0.1")
    assert status == 200
    [(path, got, raw)] = receiver.received
    assert path == "/hook?x=1" and raw == body
    assert got["Host"] == f"127.0.0.1:{port}"
    assert got["X-PDFTasks-Timestamp"] == "1234" and got["X-PDFTasks-Event"] == "job.completed"
    assert webhooks.verify("k", "1234", raw, got["X-PDFTasks-Signature"], now=1234)


def test_redirects_are_not_followed(receiver) -> None:
    port = receiver.server_address[1]
    receiver.statuses = [302]
    receiver.redirect_to = f"http://127.0.0.1:{port}/elsewhere"
    assert webhooks.post(f"http://127.0.0.1:{port}/hook", b"{}", {}, "127.0.0.1") == 302
    assert [path for path, _, _ in receiver.received] == ["/hook"]


def test_a_receiver_not_allowed_receives_nothing(receiver) -> None:
    port = receiver.server_address[1]
    with pytest.raises(UnsafeCallbackError):
        webhooks.post(f"http://127.0.0.1:{port}/hook", b"{}", {}, "")
    assert receiver.received == []


def test_the_delivery_task_signs_and_classifies_answers(receiver) -> None:
    from pdftasks.celery_app import create_app
    from pdftasks.settings import Settings

    app = create_app(Settings(webhook_secret="root", webhook_allowed_hosts="127.0.0.1"))
    task = app.tasks[webhooks.DELIVER_WEBHOOK]
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    payload = webhooks.payload_for(_job(), "completed")
    receiver.statuses = [200, 503, 404]
    assert task(url, payload, "acme") == 200
    with pytest.raises(webhooks.WebhookDeliveryError, match="HTTP 503"):
        task(url, payload, "acme")  # retried by Celery in a worker
    with pytest.raises(webhooks.WebhookRejectedError, match="HTTP 404"):
        task(url, payload, "acme")
    _, headers, body = receiver.received[0]
    secret = webhooks.tenant_secret("root", "acme")
    assert webhooks.verify(secret, headers["X-PDFTasks-Timestamp"], body,
                           headers["X-PDFTasks-Signature"])
    sent = json.loads(body)
    assert sent["event"] == "job.completed" and sent["job"]["job_id"] == "j1"
    assert sent["delivery_id"] == headers["X-PDFTasks-Delivery"]
    assert task.max_retries == Settings().webhook_max_retries
