"""Helpers shared by the benchmarks: a private redis-server, worker subprocesses, statistics.

Nothing here imports pdftasks, so a benchmark can set ``PDFTASKS_*`` variables before it
imports the package (settings are read once, on first use).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Repository root (parent of benchmarks/).
ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _terminate(proc: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``proc``; SIGKILL its process group if it is still alive after ``timeout``.

    The processes are started with ``start_new_session=True``, so the process group id is
    the child's own pid and holds only what that child started (e.g. Celery pool children).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Orphaned pool children of a worker that died: same process group, kill them too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class RedisServer:
    """A throw-away ``redis-server`` on a free port of 127.0.0.1, without persistence.

    Use as a context manager; the server is stopped on exit, also on errors and Ctrl-C.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"redis-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, timeout=10)
            self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerProcess:
    """A Celery worker subprocess (``pdftasks worker`` or ``celery worker``) with its own log.

    Args:
        argv: Full command line.
        env: Extra environment variables (added to a copy of ``os.environ`` without
            ``PDFTASKS_*``, so only what the benchmark sets applies).
        log_path: Where stdout and stderr go.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PDFTASKS_")}
        self.env.update(env)
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.cwd,
                                         start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, ping: Callable[[], bool], timeout: float = 60.0) -> float:
        """Call ``ping`` until it returns True; return seconds waited. Fails if the worker exits."""
        started = time.monotonic()
        while True:
            if not self.alive():
                raise RuntimeError(f"worker exited early ({self.argv[:4]}...):\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                if ping():
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"worker not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of its process group after ``timeout``."""
        if self.proc is not None:
            _terminate(self.proc, timeout=timeout)
            self.proc = None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def celery_ping(app: Any, hostname: str) -> Callable[[], bool]:
    """A ``ping`` callable for :meth:`WorkerProcess.wait_ready`: the node answers a ping."""
    def ping() -> bool:
        replies = app.control.ping(destination=[hostname], timeout=0.5)
        return any(hostname in r for r in replies or ())
    return ping


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while active, so ``finally`` blocks clean up."""
    def _handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), linear interpolation between closest ranks
    (numpy's default method). NaN for an empty sequence."""
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (rank - lo))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                file: Any = None) -> None:
    """Plain-text table, first column left-aligned, the others right-aligned."""
    out = file or sys.stdout
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    print(fmt(cells[0]), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells[1:]:
        print(fmt(row), file=out)


class CpuMonitor:
    """CPU time used on this host by processes *other* than ours during a time window.

    Ours = this process plus every process in the sessions of the given subprocesses (a
    worker started with ``start_new_session=True`` and its pool children; redis-server).
    Linux only (``/proc``); elsewhere every reading is NaN. A benchmark can report the
    "foreign" load so a run disturbed by other programs (tests, builds) is recognisable.
    """

    def __init__(self, sessions: Sequence[int]) -> None:
        self.sessions = set(sessions)
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _busy_jiffies() -> int:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal [guest guest_nice: inside user]
        return sum(fields[:8]) - fields[3] - fields[4]

    def _our_jiffies(self) -> int:
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # rest[0] = state (field 3); session = field 6; utime, stime = fields 14, 15.
            if int(entry.name) == os.getpid() or int(rest[3]) in self.sessions:
                total += int(rest[11]) + int(rest[12])
        return total

    def _snapshot(self) -> tuple[float, float, float]:
        return time.monotonic(), self._busy_jiffies(), self._our_jiffies()

    def start(self) -> None:
        try:
            self._start = self._snapshot()
        except OSError:
            self._start = None

    def foreign_cores(self) -> float:
        """Average CPUs used by other processes since :meth:`start` (NaN if unknown)."""
        if self._start is None:
            return math.nan
        try:
            now = self._snapshot()
        except OSError:
            return math.nan
        wall = now[0] - self._start[0]
        foreign = (now[1] - self._start[1]) - (now[2] - self._start[2])
        return max(0.0, foreign / self.tick / wall) if wall > 0 else math.nan


def release_results(app: Any, results: Sequence[Any]) -> None:
    """Stop tracking ``results`` (Celery AsyncResults) while the result backend still runs.

    With the Redis result backend every sent task subscribes to its result channel, and an
    AsyncResult that is interrupted in ``get()`` stays registered with the backend until
    the interpreter exits; its ``__del__`` then unsubscribes and, against a Redis server
    that was already stopped, retries for about 20 s and prints a traceback. Call this in
    the ``finally`` of a benchmark phase, before stopping Redis.
    """
    for result in results:
        with contextlib.suppress(Exception):
            app.backend.remove_pending_result(result)
