"""The worker heartbeat file: fresh while the worker runs, stale while its main process is
stopped (SIGSTOP), fresh again after SIGCONT, gone after a clean stop. The probe commands
are the ones in k8s/base/worker.yaml, run for real against the file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.deploy.manifests import container, find, load_documents

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5
#: The probes' thresholds scaled down for the test (the manifests say 60 s and 30 s).
MAX_AGE_S = 3.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def manifest_probes() -> dict[str, list[str]]:
    """The worker's probe commands from k8s/base/worker.yaml, thresholds set to MAX_AGE_S."""
    docs = load_documents(ROOT / "k8s" / "base" / "worker.yaml")
    c = container(find(docs, "Deployment", "pdftasks-worker"))
    probes = {}
    for kind in ("livenessProbe", "readinessProbe"):
        command = list(c[kind]["exec"]["command"])
        command[-1], n = re.subn(r"st_mtime > \d+(\.\d+)?", f"st_mtime > {MAX_AGE_S}",
                                 command[-1])
        assert n == 1, command
        probes[kind] = [sys.executable if command[0] == "python" else command[0],
                        *command[1:]]
    return probes


def probe_ok(command: list[str], heartbeat: Path) -> bool:
    env = {**os.environ, "PDFTASKS_HEARTBEAT_FILE": str(heartbeat)}
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0


def cli_ok(heartbeat: Path, *args: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "pdftasks", "heartbeat", "--file", str(heartbeat),
         "--max-age", str(MAX_AGE_S), *args], capture_output=True, timeout=60, cwd=ROOT)
    return result.returncode == 0


def test_heartbeat_goes_stale_when_the_worker_stops_and_fresh_after_it_continues(
        start_worker, tmp_path: Path) -> None:
    heartbeat = tmp_path / "hb" / "heartbeat"
    probes = manifest_probes()
    # Given a running worker writing its heartbeat every 0.5 s
    worker = start_worker(concurrency=1, heartbeat_file=heartbeat,
                          heartbeat_interval_s=INTERVAL_S)
    wait_for(heartbeat.exists, 30, "the first heartbeat")
    document = json.loads(heartbeat.read_text())
    assert document["pid"] == worker.proc.pid
    wait_for(lambda: json.loads(heartbeat.read_text())["consuming"], 30, "consuming")
    first = mtime(heartbeat)
    wait_for(lambda: mtime(heartbeat) > first, 10, "the heartbeat to advance")
    second = mtime(heartbeat)
    wait_for(lambda: mtime(heartbeat) > second, 10, "the heartbeat to advance again")
    # Then the cluster's probes pass, and so does `pdftasks heartbeat --ready`
    assert probe_ok(probes["livenessProbe"], heartbeat)
    assert probe_ok(probes["readinessProbe"], heartbeat)
    assert cli_ok(heartbeat, "--ready")

    # When its main process is stopped
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        stopped_at = mtime(heartbeat)
        # Then the file stops changing and goes stale: both probes fail
        wait_for(lambda: time.time() - mtime(heartbeat) > MAX_AGE_S, MAX_AGE_S + 10,
                 "the heartbeat to go stale")
        assert mtime(heartbeat) == stopped_at
        assert not probe_ok(probes["livenessProbe"], heartbeat)
        assert not probe_ok(probes["readinessProbe"], heartbeat)
        assert not cli_ok(heartbeat)
    finally:
        # When it continues
        os.kill(worker.proc.pid, signal.SIGCONT)
    # Then the heartbeat is fresh again within a few intervals
    wait_for(lambda: mtime(heartbeat) > stopped_at, 10, "the heartbeat to resume")
    wait_for(lambda: probe_ok(probes["livenessProbe"], heartbeat), 10, "liveness to pass")
    assert probe_ok(probes["readinessProbe"], heartbeat)
    assert cli_ok(heartbeat, "--ready")

    # And a worker that shuts down cleanly removes its heartbeat
    worker.stop()
    assert worker.proc.returncode == 0, worker.log
    assert not heartbeat.exists()
    assert not probe_ok(probes["livenessProbe"], heartbeat)


def test_a_stale_heartbeat_from_a_previous_worker_is_removed_at_start(
        start_worker, tmp_path: Path) -> None:
    # Given a heartbeat file left by a worker that was killed (an emptyDir survives restarts)
    heartbeat = tmp_path / "heartbeat"
    heartbeat.write_text(json.dumps({"ts": time.time(), "pid": 1, "consuming": True}))
    # When a new worker starts, the old file is replaced by its own
    worker = start_worker(concurrency=1, heartbeat_file=heartbeat,
                          heartbeat_interval_s=INTERVAL_S)
    wait_for(lambda: heartbeat.exists() and json.loads(heartbeat.read_text()).get("pid")
             == worker.proc.pid, 30, "the new worker's heartbeat")
    assert json.loads(heartbeat.read_text())["hostname"].startswith(worker.name[:9])


def test_heartbeat_command_needs_a_file() -> None:
    result = subprocess.run([sys.executable, "-m", "pdftasks", "heartbeat"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2 and "PDFTASKS_HEARTBEAT_FILE" in result.stderr
