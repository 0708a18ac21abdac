"""Integration test of the zero-setup default: no broker configured, no server at all.

Everything runs through the real `pdftasks` command line in subprocesses with a clean
environment: broker and results are files under PDFTASKS_HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEMPLATES, Worker, pdf_text

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, "-m", "pdftasks", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_jobs_queue_without_any_server_and_survive_a_worker_restart(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFTASKS_")}
    env.update(PDFTASKS_HOME=str(tmp_path / "home"), PDFTASKS_TEMPLATES_DIR=str(TEMPLATES),
               PDFTASKS_OUTPUT_DIR=str(tmp_path / "out"))
    data = json.dumps({"invoice_number": "ZS-1", "client_name": "Offline Client",
                       "items": [{"description": "Thing", "quantity": 2, "unit_price": 5}],
                       "total": 10})
    # Given a job queued while no worker runs
    queued_id = cli(env, "submit", "invoice.html", "-d", data, "-o", "queued.pdf",
                    "-p", "low").strip()
    assert list((tmp_path / "home" / "broker" / "queue").glob("*.msg"))
    # When a worker starts, then stops and a second one starts
    first = Worker(env, tmp_path / "w1.log", concurrency=1).wait_ready()
    done = json.loads(cli(env, "submit", "invoice.html", "-d", data, "-o", "waited.pdf",
                          "--wait", "--timeout", "60").split("\n", 1)[1])
    first.stop()
    later_id = cli(env, "submit", "invoice.html", "-d", data, "-o", "later.pdf").strip()
    second = Worker(env, tmp_path / "w2.log", concurrency=2).wait_ready()
    try:
        # Then every job completes, including those queued while no worker ran
        for job_id in (queued_id, later_id):
            for _ in range(120):
                status = json.loads(cli(env, "status", job_id))
                if status["status"] == "completed":
                    break
            assert status["status"] == "completed", status
    finally:
        second.stop()
    for name in ("queued.pdf", "waited.pdf", "later.pdf"):
        [path] = (tmp_path / "out").rglob(name)
        text, pages = pdf_text(path)
        assert "ZS-1" in text and "Offline Client" in text and pages == 1
    assert done["path"] == str(next((tmp_path / "out").rglob("waited.pdf")))
