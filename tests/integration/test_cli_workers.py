"""The command line with and without a worker, on the test Redis and a real `pdftasks
worker`: no-worker warnings, timeouts (exit 3), failed jobs (exit 1 from `submit --wait` and
`wait` alike), data type errors named as such, and no WeasyPrint step lines in the INFO log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, pdf_text

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pdftasks", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_no_worker_warnings_timeouts_and_failures(redis_client, start_worker,
                                                  output_dir: Path) -> None:
    env = {**os.environ, "PDFTASKS_OUTPUT_DIR": str(output_dir)}
    data = json.dumps(sample_invoice(7))

    # Given no worker: submit queues the job, prints its id and warns on stderr
    queued = cli(env, "submit", "invoice.html", "-o", "queued.pdf", "-d", data, "-p", "high")
    assert queued.returncode == 0, queued.stderr
    assert queued.stderr.startswith("warning: no worker is consuming pdf.high")
    job_id = queued.stdout.strip()
    # --wait times out with exit 3 and says why
    waited = cli(env, "submit", "invoice.html", "-o", "w.pdf", "-d", data, "--wait",
                 "--timeout", "2")
    assert waited.returncode == 3, waited
    assert "error: TimeoutError: job " in waited.stderr
    assert "no worker is consuming pdf.normal" in waited.stderr.splitlines()[-1]
    # and so does `wait`, which prints one line per status when stderr is not a terminal
    later = cli(env, "wait", job_id, "--timeout", "1")
    assert later.returncode == 3 and "\r" not in later.stderr
    assert later.stderr.splitlines()[0].startswith("pending (")
    assert "no worker is consuming pdf.high" in later.stderr

    # When a worker starts
    worker = start_worker(concurrency=1)
    # Then the queued job completes and no warning is printed any more
    done = cli(env, "wait", job_id, "--timeout", "90")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    ok = cli(env, "submit", "invoice.html", "-o", "ok.pdf", "-d", data, "--wait",
             "--timeout", "90")
    assert ok.returncode == 0 and "warning" not in ok.stderr, ok.stderr
    text, pages = pdf_text(json.loads(ok.stdout.split("\n", 1)[1])["path"])
    assert "INV-2026-0007" in text and pages == 1

    # A job whose data has the wrong type fails with a DataTypeError: exit 1 from both
    bad_data = json.dumps({**sample_invoice(8), "items": "abc"})
    bad = cli(env, "submit", "invoice.html", "-o", "bad.pdf", "-d", bad_data, "--wait",
              "--timeout", "90")
    assert bad.returncode == 1, bad
    assert bad.stderr.startswith("error: DataTypeError: Template 'invoice.html' expects an "
                                 "object with 'quantity' but the data has a str")
    bad_id = bad.stdout.split()[0]
    again = cli(env, "wait", bad_id, "--timeout", "30")
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"].startswith("DataTypeError")

    # WeasyPrint's per-render steps stay out of the worker's INFO log
    assert "Step 1" not in worker.log and "Step 6" not in worker.log
    assert "DataTypeError" in worker.log
