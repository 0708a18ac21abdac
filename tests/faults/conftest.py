"""Fault-injection fixtures: restartable Redis servers, worker process trees, job tallies.

Every scenario ends with one count line (submitted / completed / failed / lost / duplicated,
plus re-renders and redeliveries). The line is printed, appended to
``test-artifacts/faults-summary.txt`` and repeated in pytest's terminal summary, so CI logs
show the counts even though test output is captured.

Definitions used by the counts:

- *lost*: a submitted job that has no final status (COMPLETED, FAILED, CANCELLED) in the
  job store when the scenario's deadline passes, or a COMPLETED job without a whole PDF.
- *duplicated*: PDF files beyond one per job (every job has its own output name, so any
  extra file is a duplicate); ``tmp`` counts temporary files left in the output directory.
- *re-renders*: renders beyond the first of a job, from the workers' ``rendered …`` log
  lines (at-least-once delivery after a crash re-renders; it must not duplicate files).
- *redeliveries*: deliveries of a job to a worker beyond its first and its retries
  (the job record's ``attempts``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from tests.conftest import REDIS_URL, ROOT, TEMPLATES, Worker, free_port

SUMMARY_FILE = ROOT / "test-artifacts" / "faults-summary.txt"
FINAL = ("completed", "failed", "cancelled")
_RENDERED = re.compile(r"rendered (\S+\.pdf) \(")
_summaries: list[str] = []


def record_summary(line: str) -> None:
    """Print a scenario's count line and keep it for the file and the terminal summary."""
    print(line)
    if not _summaries:
        SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY_FILE.write_text("")
    _summaries.append(line)
    with SUMMARY_FILE.open("a") as out:
        out.write(line + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _summaries:
        terminalreporter.section("fault-injection counts")
        for line in _summaries:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(also in {SUMMARY_FILE.relative_to(ROOT)})")


class RedisServer:
    """A redis-server of our own: append-only file fsynced on every write, restartable on
    the same port (so clients and workers reconnect to the same URL)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 15) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `scripts/setup.sh --test`")
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.workdir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", ""],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=1)
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"redis-server did not start:\n{(self.workdir / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        client.close()
        self.starts += 1
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """``own_redis()`` starts a private, persistent redis-server; all are stopped after."""
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}")
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


def process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants (the worker main process and its pool children)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to ``pid`` first, then to the children it had; return the pids."""
    procs = process_tree(pid)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)
    return [p.pid for p in procs]


class Workers:
    """Real ``pdftasks worker`` subprocesses; their whole process trees are reaped after."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Worker] = []

    def start(self, output_dir: Path, concurrency: int = 2, broker_url: str = REDIS_URL,
              wait: bool = True, **overrides: Any) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDFTASKS_")}
        env.update({"PDFTASKS_BROKER_URL": broker_url, "PDFTASKS_TEMPLATES_DIR": str(TEMPLATES),
                    "PDFTASKS_OUTPUT_DIR": str(output_dir),
                    "PDFTASKS_HOME": str(self.tmp_path / "home")})
        env.update({f"PDFTASKS_{k.upper()}": str(v) for k, v in overrides.items()})
        worker = Worker(env, self.tmp_path / f"worker{len(self.started)}.log", concurrency)
        self.started.append(worker)
        return worker.wait_ready(timeout=90) if wait else worker

    @property
    def logs(self) -> list[Path]:
        return [w.log_path for w in self.started]

    def reap(self) -> None:
        for worker in self.started:
            pids = [p.pid for p in process_tree(worker.proc.pid)[1:]]
            worker.stop(timeout=15)
            for pid in pids:  # children orphaned by a killed main process
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class Supervisor(threading.Thread):
    """Starts a new worker when the supervised one exits on its own, as systemd does with
    ``Restart=always`` (deploy/systemd/pdftasks-worker.service)."""

    def __init__(self, pool: Workers, **start: Any) -> None:
        super().__init__(name="worker-supervisor", daemon=True)
        self.pool, self.start_args = pool, start
        self.current = pool.start(**start)
        self.restarts = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            if self.current.proc.poll() is not None:
                self.restarts += 1
                self.current = self.pool.start(**self.start_args)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=120)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.reap()


def make_manager(redis_url: str, output_dir: Path, home: Path, **settings: Any) -> Any:
    """A client-side ``PDFQueueManager`` on ``redis_url`` (it starts no workers itself)."""
    from pdftasks import PDFQueueManager, PDFService, PDFServiceConfig, RedisBackend

    service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=output_dir))
    return PDFQueueManager(backend=RedisBackend(url=redis_url), pdf_service=service,
                           settings={"home": home, **settings})


def is_whole_pdf(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]


class Tally:
    """The jobs of one scenario and what became of them, read from the job store, the
    output directory and the workers' logs."""

    def __init__(self, name: str, redis_url: str, output_dir: Path,
                 logs: Callable[[], Iterable[Path]], namespace: str = "pdf") -> None:
        self.name = name
        self.output_dir = output_dir
        self.namespace = namespace
        self.logs = logs
        self.client = redis.Redis.from_url(redis_url, decode_responses=True,
                                           socket_timeout=5, socket_connect_timeout=2)
        self.jobs: dict[str, str] = {}  # job id -> output file name
        self.started = time.monotonic()
        self.earlier = set(self.files())
        self.extra: dict[str, Any] = {}

    def add(self, job_ids: Iterable[str], names: Iterable[str]) -> None:
        self.jobs.update(zip(job_ids, names, strict=True))

    def records(self, job_ids: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        ids = list(self.jobs if job_ids is None else job_ids)
        fields = ("status", "attempts", "retry_count", "error", "result_path", "completed_at")
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(f"{self.namespace}:job:{job_id}", fields)
        return {job_id: dict(zip(fields, values, strict=True))
                for job_id, values in zip(ids, pipe.execute(), strict=True)}

    def statuses(self, job_ids: Iterable[str] | None = None) -> Counter[str]:
        return Counter(str(r["status"]) for r in self.records(job_ids).values())

    def wait(self, timeout: float, job_ids: Iterable[str] | None = None) -> bool:
        """Wait until the jobs are final (Redis may be briefly away); False on timeout."""
        ids = list(self.jobs if job_ids is None else job_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(r["status"] in FINAL for r in self.records(ids).values()):
                    return True
            except redis.RedisError:
                pass
            time.sleep(0.25)
        return False

    def wait_for(self, predicate: Callable[[Counter[str]], bool], timeout: float,
                 what: str) -> Counter[str]:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.statuses()
            if predicate(counts):
                return counts
            assert time.monotonic() < deadline, f"{self.name}: {what} not reached: {counts}"
            time.sleep(0.05)

    def renders(self) -> Counter[str]:
        names = Counter()
        for log in self.logs():
            names.update(_RENDERED.findall(log.read_text(errors="replace")))
        return names

    def files(self) -> list[str]:
        """Every file under the output directory, as a path relative to it."""
        if not self.output_dir.is_dir():
            return []
        return [p.relative_to(self.output_dir).as_posix()
                for p in self.output_dir.rglob("*") if p.is_file()]

    def key(self, job_id: str) -> str:
        """Where the worker stores a job's PDF (``pdftasks.storage.storage_key``)."""
        return f"{self.namespace}/_/{job_id}/{self.jobs[job_id]}"

    def counts(self) -> dict[str, int]:
        records = self.records()
        by_status = Counter(str(r["status"]) for r in records.values())
        files = [Path(f) for f in self.files() if f not in self.earlier]
        pdfs = {f.as_posix() for f in files if f.suffix == ".pdf" and not f.name.startswith(".")}
        tmp = [f for f in files if f.suffix == ".tmp" or f.name.startswith(".")]
        lost = sum(1 for job_id, rec in records.items()
                   if rec["status"] not in FINAL or rec["status"] == "completed" and not (
                       self.key(job_id) in pdfs
                       and is_whole_pdf(self.output_dir / self.key(job_id))))
        owned = {self.key(job_id) for job_id in self.jobs if self.key(job_id) in pdfs}
        renders = self.renders()
        return {
            "submitted": len(self.jobs),
            "completed": by_status["completed"],
            "failed": by_status["failed"],
            "cancelled": by_status["cancelled"],
            "lost": lost,
            "duplicated": len(pdfs) - len(owned),
            "tmp": len(tmp),
            "re-renders": sum(max(0, n - 1) for name, n in renders.items()
                              if name in self.jobs.values()),
            "redeliveries": sum(
                max(0, int(r["attempts"] or 0) - 1 - int(r["retry_count"] or 0))
                for r in records.values()),
        }

    def report(self) -> dict[str, int]:
        """Record this scenario's count line; return the counts for the assertions."""
        counts = self.counts()
        line = f"[faults] {self.name}: " + " ".join(f"{k}={v}" for k, v in counts.items())
        if self.extra:
            line += " | " + " ".join(f"{k}={v}" for k, v in self.extra.items())
        line += f" | {time.monotonic() - self.started:.1f} s"
        record_summary(line)
        return counts

    def lost_jobs(self) -> dict[str, dict[str, str]]:
        return {i: r for i, r in self.records().items() if r["status"] not in FINAL}


def worker_log_text(logs: Iterable[Path]) -> str:
    return "\n".join(p.read_text(errors="replace") for p in logs)


def wait_port_closed(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} still open")
