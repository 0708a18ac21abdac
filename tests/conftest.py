"""Shared fixtures.

The test process is a pdftasks *client* configured through PDFTASKS_* variables set here,
before pdftasks is imported: a private redis-server on a free port (started by the
``redis_url`` fixture), and a temporary templates directory holding the sample templates
plus the hostile ones the tests need. Workers are real ``pdftasks worker`` subprocesses.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_TMP = Path(tempfile.mkdtemp(prefix="pdftasks-tests-"))
TEMPLATES = _TMP / "templates"
shutil.copytree(ROOT / "templates", TEMPLATES)
for item in FIXTURES.glob("*"):
    shutil.copy(item, TEMPLATES / item.name)
REDIS_PORT = free_port()
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"

for key in [k for k in os.environ if k.startswith("PDFTASKS_")]:
    del os.environ[key]
os.environ.update({
    "PDFTASKS_BROKER_URL": REDIS_URL,
    "PDFTASKS_TEMPLATES_DIR": str(TEMPLATES),
    "PDFTASKS_OUTPUT_DIR": str(_TMP / "output"),
    "PDFTASKS_HOME": str(_TMP / "home"),
})


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server (no persistence) for the whole session; fails if missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `scripts/setup.sh --test`")
    proc = subprocess.Popen(
        [binary, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(_TMP)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield REDIS_URL
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _forget_event_listeners() -> None:
    """Each test starts with this process knowing nothing of the event stream's listeners
    (``pdftasks.contrib.monitoring``: task-sent events on demand), so that what one test's
    submits learnt (nobody listens) does not hold back the next test's events for up to a
    second."""
    monitoring = sys.modules.get("pdftasks.contrib.monitoring")
    if monitoring is not None:
        monitoring._listeners.clear()


@pytest.fixture
def redis_client(redis_url: str):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    path = tmp_path / "output"
    path.mkdir()
    return path


class Worker:
    """A real ``pdftasks worker`` subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int) -> None:
        self.log_path = log_path
        self.name = f"w{uuid.uuid4().hex[:8]}@%h"
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pdftasks", "worker", "-c", str(concurrency),
             "-l", "INFO", "-n", self.name],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT))

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> Worker:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {timeout}s:\n{self.log}")
            time.sleep(0.1)
        return self

    def children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_worker(redis_client, output_dir: Path, tmp_path: Path):
    """Start workers on the test Redis: ``start_worker(concurrency=2, **env_overrides)``."""
    workers: list[Worker] = []

    def start(concurrency: int = 2, wait: bool = True, **overrides: str) -> Worker:
        env = dict(os.environ)
        env["PDFTASKS_OUTPUT_DIR"] = str(output_dir)
        env.update({f"PDFTASKS_{k.upper()}": str(v) for k, v in overrides.items()})
        worker = Worker(env, tmp_path / f"worker{len(workers)}.log", concurrency)
        workers.append(worker)
        return worker.wait_ready() if wait else worker

    yield start
    for worker in workers:
        worker.stop()


def pdf_text(path: str | Path) -> tuple[str, int]:
    """All text of a PDF and its page count, read with pypdf."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    return "\n".join(page.extract_text() or "" for page in reader.pages), len(reader.pages)


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def make_manager(redis_client, redis_url, tmp_path):
    """``make(queue_name, num_workers, start, output_dir, **settings)``: a PDFQueueManager on
    the test Redis with its own workers (stopped at the end)."""
    from pdftasks import PDFQueueManager, PDFService, PDFServiceConfig, RedisBackend

    managers: list[Any] = []

    def make(queue_name: str = "pdf", num_workers: int = 2, start: bool = True,
             output_dir: Path | None = None, **settings: Any) -> Any:
        service = PDFService(PDFServiceConfig(
            templates_dir=TEMPLATES, output_dir=output_dir or tmp_path / f"out-{queue_name}"))
        manager = PDFQueueManager(backend=RedisBackend(url=redis_url, queue_name=queue_name),
                                  pdf_service=service, num_workers=num_workers,
                                  settings={"home": tmp_path / "home", **settings})
        managers.append(manager)
        if start:
            manager.start()
        return manager

    yield make
    for manager in managers:
        manager.stop(timeout=10)
