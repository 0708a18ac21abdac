"""`pdftasks flower` for real: Flower on the test Redis with basic auth, jobs visible from
the moment they are submitted (task-sent events), per-priority queue lengths, 401 without
credentials, and its tasks page rendered by headless Chromium (screenshot saved under
test-artifacts/)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pdftasks import generate_pdf
from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration

USER, PASSWORD = "ops", "s3cret-flower"
ARTIFACTS = ROOT / "test-artifacts"




def pattern_subscribers(redis_client: Any) -> int:
    """Connections with a pattern subscription (kombu's fanout, which events use)."""
    return sum(1 for c in redis_client.client_list() if int(c.get("psub", 0)) > 0)


class Flower:
    def __init__(self, env: dict[str, str], log: Path, redis_client: Any, *args: str) -> None:
        self.port = free_port()
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        subscribed = pattern_subscribers(redis_client)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pdftasks", "flower", "--port", str(self.port),
             "--address", "127.0.0.1", *args], env=env, cwd=ROOT, stdout=self._log,
            stderr=subprocess.STDOUT)
        wait_for(self._healthy, 60, "Flower's /healthcheck")
        # Events travel on Redis pub/sub, which keeps nothing for late subscribers: wait
        # until Flower's event receiver has subscribed before anything is submitted.
        wait_for(lambda: pattern_subscribers(redis_client) > subscribed, 30,
                 "Flower to subscribe to task events")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()
        try:
            return self.get("/healthcheck", auth=None)[0] == 200
        except OSError:
            return False

    def get(self, path: str, auth: tuple[str, str] | None = (USER, PASSWORD)
            ) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def api(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def flower(redis_client, tmp_path: Path) -> Iterator[Callable[..., Flower]]:
    started: list[Flower] = []

    def start(*args: str, **overrides: str) -> Flower:
        env = dict(os.environ)
        env.update({f"PDFTASKS_{k.upper()}": str(v) for k, v in overrides.items()})
        started.append(Flower(env, tmp_path / f"flower{len(started)}.log", redis_client,
                              *args))
        return started[-1]

    yield start
    for f in started:
        f.stop()


def queue_lengths(f: Flower) -> dict[str, int]:
    return {q["name"]: q["messages"] for q in f.api("/api/queues/length")["active_queues"]}


def states(f: Flower, ids: list[str]) -> dict[str, str]:
    tasks = f.api("/api/tasks")
    return {i: tasks[i]["state"] for i in ids if i in tasks}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("Chromium is not installed: apt-get install chromium "
                "(scripts/setup.sh --test installs it)")


def headless(url: str, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    profile.mkdir()
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,900",
         "--virtual-time-budget=10000", *mode, url],
        capture_output=True, text=True, timeout=120)


def screenshot(url: str, tmp_path: Path, name: str) -> Path:
    """Save the page as test-artifacts/NAME (a 1400x900 PNG)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    result = headless(url, tmp_path, f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 900)
    return shot


def test_flower_refuses_to_start_without_credentials(redis_client) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PDFTASKS_FLOWER_BASIC_AUTH"}
    env["FLOWER_BASIC_AUTH"] = "someone:else"  # Flower's own variable does not count
    result = subprocess.run([sys.executable, "-m", "pdftasks", "flower", "--port",
                             str(free_port())], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "PDFTASKS_FLOWER_BASIC_AUTH is not set" in result.stderr
    bad = subprocess.run([sys.executable, "-m", "pdftasks", "flower"],
                         env={**env, "PDFTASKS_FLOWER_BASIC_AUTH": "no-password"}, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "user:password" in bad.stderr


def test_insecure_flower_is_explicit(flower) -> None:
    f = flower("--insecure-no-auth")
    assert f.get("/api/queues/length", auth=None)[0] == 200
    assert "WITHOUT authentication" in f.log_path.read_text()


def test_flower_shows_jobs_queues_and_requires_auth(flower, start_worker,
                                                    tmp_path: Path) -> None:
    f = flower(flower_basic_auth=f"{USER}:{PASSWORD}")
    # Unauthenticated or wrongly authenticated requests get 401, on the API and the pages
    for path in ("/api/tasks", "/api/queues/length", "/api/workers", "/tasks", "/"):
        assert f.get(path, auth=None)[0] == 401, path
        assert f.get(path, auth=(USER, "wrong"))[0] == 401, path
    # The health check (for probes) and Flower's Prometheus metrics answer without
    # credentials (deploy/prometheus/prometheus.yml relies on it)
    assert f.get("/healthcheck", auth=None) == (200, b"OK")
    status, body = f.get("/metrics", auth=None)
    assert status == 200 and b"flower_events_total" in body

    # Given jobs submitted while no worker runs: 3 urgent, 2 high, 1 normal
    submitted = {"urgent": 3, "high": 2, "normal": 1}
    ids = [generate_pdf.delay(template="invoice.html", data=sample_invoice(n + 1),
                              output_filename=f"{p}{n}.pdf", priority=p).id
           for p, count in submitted.items() for n in range(count)]
    # Then Flower lists them at once, PENDING (from their task-sent events)
    assert wait_for(lambda: states(f, ids) == dict.fromkeys(ids, "PENDING"), 30,
                    "the submitted jobs in /api/tasks")
    # And /api/queues/length shows the backlog of each priority queue
    expected = {"pdf.urgent": 3, "pdf.high": 2, "pdf.normal": 1, "pdf.low": 0}
    assert queue_lengths(f) == expected
    # (its broker page shows the same backlog to a person: saved as an artifact)
    broker = f"http://{USER}:{PASSWORD}@127.0.0.1:{f.port}/broker"
    dom = headless(broker, tmp_path, "--dump-dom")
    assert dom.returncode == 0 and all(q in dom.stdout for q in expected), dom.stderr[-2000:]
    screenshot(broker, tmp_path, "flower-broker.png")

    # When a worker runs them, and a job whose template lacks a variable fails
    start_worker(concurrency=2)
    failing = generate_pdf.delay(template="strict.html", data={"invoice_number": "x"},
                                 output_filename="failing.pdf", priority="low").id
    # Then Flower shows their final states and empty queues
    final = {**dict.fromkeys(ids, "SUCCESS"), failing: "FAILURE"}
    wait_for(lambda: states(f, [*ids, failing]) == final, 90, "the final states")
    assert queue_lengths(f) == dict.fromkeys(expected, 0)
    tasks = f.api("/api/tasks")
    assert tasks[ids[0]]["routing_key"] == "pdf.urgent"
    assert "MissingVariableError" in (tasks[failing]["exception"] or "")
    workers = wait_for(lambda: f.api("/api/workers?refresh=1"), 30, "a worker in Flower")
    assert len(workers) == 1
    [info] = workers.values()
    assert {q["name"] for q in info["active_queues"]} == set(expected)

    # And its tasks page, opened in a browser, lists them
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{f.port}/tasks"
    dom = headless(url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for job_id in [*ids, failing]:
        assert job_id in dom.stdout, job_id
    screenshot(url, tmp_path, "flower-tasks.png")
