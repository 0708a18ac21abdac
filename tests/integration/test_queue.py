"""Integration tests: real Redis, real `pdftasks worker` processes, real WeasyPrint, pypdf."""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time

import pytest
from celery.result import AsyncResult

from pdftasks import errors, generate_pdf
from pdftasks.samples import sample_invoice
from tests.conftest import pdf_text

pytestmark = pytest.mark.integration


def wait_state(result: AsyncResult, states: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while result.state not in states:
        assert time.monotonic() < deadline, f"{result.id} stuck in {result.state}"
        time.sleep(0.05)
    return result.state


def test_invoice_is_rendered_by_a_worker(start_worker, output_dir) -> None:
    start_worker(concurrency=2)
    data = sample_invoice(1, client="Acme Corp")
    result = generate_pdf.delay(template="invoice.html", data=data,
                                output_filename="invoice_001.pdf", priority="urgent")
    info = result.get(timeout=60)
    # Stored under a key the server chose: <namespace>/<owner>/<job id>/<name>
    assert info["path"] == str(output_dir / "pdf" / "_" / result.id / "invoice_001.pdf")
    assert info["bytes"] == os.path.getsize(info["path"]) and info["duration_ms"] > 0
    text, pages = pdf_text(info["path"])
    assert pages == info["pages"] == 1
    assert "INV-2026-0001" in text and "Acme Corp" in text
    assert result.info["priority"] == "urgent"


def test_queues_are_consumed_in_strict_priority_order(start_worker, redis_client) -> None:
    # Given a backlog of every priority, submitted least urgent first, with no worker running
    submitted = []
    for prio, count in (("low", 6), ("normal", 4), ("high", 4), ("urgent", 3)):
        for i in range(count):
            submitted.append((prio, generate_pdf.delay(
                "invoice.html", sample_invoice(i), f"{prio}_{i}.pdf", priority=prio)))
    assert redis_client.llen("pdf.low") == 6 and redis_client.llen("pdf.urgent") == 3
    # When one worker process drains it
    start_worker(concurrency=1)
    starts = [(r.get(timeout=120)["started_at"], prio) for prio, r in submitted]
    # Then every urgent job started before every high one, and so on down to low
    order = [prio for _, prio in sorted(starts)]
    assert order == ["urgent"] * 3 + ["high"] * 4 + ["normal"] * 4 + ["low"] * 6


def test_urgent_job_overtakes_a_running_backlog(start_worker) -> None:
    start_worker(concurrency=2)
    backlog = [generate_pdf.delay("invoice.html", sample_invoice(i), f"low_{i}.pdf",
                                  priority="low") for i in range(60)]
    wait_state(backlog[3], {"SUCCESS"})
    submitted_at = time.time()
    urgent = generate_pdf.delay("invoice.html", sample_invoice(99), "urgent.pdf",
                                priority="urgent").get(timeout=60)
    lows = [r.get(timeout=120) for r in backlog]
    overtaken = [r for r in lows if r["started_at"] > urgent["started_at"]]
    jumped_ahead = [r for r in lows if submitted_at < r["started_at"] < urgent["started_at"]]
    # Only jobs already running or reserved (one per process) may start before it.
    assert len(jumped_ahead) <= 2, jumped_ahead
    assert len(overtaken) >= 30


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_bad_jobs_fail_with_clear_errors_and_are_not_retried(start_worker, output_dir) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    start_worker(concurrency=2, soft_time_limit_s=3, hard_time_limit_s=10)
    cases = {
        "missing_var.pdf": ("strict.html", {"invoice_number": "X"},
                            errors.MissingVariableError, "client_name"),
        "local_file.pdf": ("local_file.html", {"title": "t"}, errors.UnsafeResourceError,
                           "file:///etc/hostname"),
        "attachment.pdf": ("attachment.html", {"title": "t"}, errors.UnsafeResourceError,
                           "file:///etc/hostname"),
        "network.pdf": ("network.html",
                        {"title": "t", "url": f"http://127.0.0.1:{server.server_port}/x.png"},
                        errors.UnsafeResourceError, "network access is off"),
        "runaway.pdf": ("runaway.html", {}, errors.RenderTimeoutError,
                        "soft time limit of 3 s"),
    }
    try:
        results = {name: generate_pdf.delay(template, data, name)
                   for name, (template, data, _, _) in cases.items()}
        good = generate_pdf.delay("invoice.html", sample_invoice(5), "good.pdf")
        for name, result in results.items():
            _, _, error, message = cases[name]
            result.get(timeout=60, propagate=False)
            assert result.state == "FAILURE", name
            assert isinstance(result.result, error), (name, result.result)
            assert message in str(result.result)
            assert result.retries == 0, name
            assert not list(output_dir.rglob(name))
        assert good.get(timeout=60)["pages"] == 1
        assert _Recorder.hits == []
    finally:
        server.shutdown()


def test_sigkilled_child_does_not_lose_its_job(start_worker, output_dir) -> None:
    worker = start_worker(concurrency=1)
    [child] = worker.children()
    result = generate_pdf.delay("slow.html", {"title": "Survivor", "rows": 2500},
                                "survivor.pdf", priority="high")
    wait_state(result, {"STARTED"})
    time.sleep(0.3)  # well inside a render of several seconds
    os.kill(child, signal.SIGKILL)
    # Another worker process picks the job up again and completes it.
    wait_state(result, {"SUCCESS"}, timeout=120)
    info = result.result
    assert info["worker_pid"] != child
    text, pages = pdf_text(info["path"])
    assert pages == info["pages"] > 5
    assert "Survivor" in text and "END-OF-DOCUMENT" in text
    assert "WorkerLostError" in worker.log or "SIGKILL" in worker.log
    assert not [p for p in output_dir.iterdir() if p.suffix == ".tmp"]
