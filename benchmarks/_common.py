"""Helpers shared by the benchmarks: a private redis-server or moto_server, worker
subprocesses, statistics.

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


class MotoServer:
    """A throw-away ``moto_server`` (SQS, DynamoDB, S3 over HTTP) on a free port of 127.0.0.1.

    moto's server extra (``pip install 'moto[server]'``, in pdftasks' dev extra) provides
    the binary. Use as a context manager; stopped on exit, also on errors and Ctrl-C.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        import urllib.request

        beside = Path(sys.executable).parent / "moto_server"
        binary = str(beside) if beside.exists() else shutil.which("moto_server")
        if binary is None:
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"moto-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as resp:
                if resp.status == 200:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start; see {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, timeout=10)
            self.proc = None

    def __enter__(self) -> MotoServer:
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


def log_ready(worker: WorkerProcess) -> Callable[[], bool]:
    """A ``ping`` callable for brokers without remote control (SQS): the worker logged
    ``ready.`` (it must run with ``-l INFO``)."""
    def ping() -> bool:
        try:
            return " ready." in worker.log_path.read_text(errors="replace")
        except OSError:
            return False
    return ping


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


# Helpers added for throughput.py, render_cost.py, multipage.py, memory.py, latency.py and
# run_all.py. Like the rest of this module they import pdftasks only inside functions.


def log(msg: str) -> None:
    """Progress line on stderr (tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def use_pdftasks_env(tmp: Path, broker_url: str | None = None, output: str = "out",
                     templates: Path = ROOT / "templates", **extra: str) -> dict[str, str]:
    """Replace every ``PDFTASKS_*`` variable of this process: the broker (None: the
    zero-setup default), the templates, ``tmp/output`` for PDFs, ``tmp/home``, and
    ``extra`` (``log_level="WARNING"`` sets ``PDFTASKS_LOG_LEVEL``). Returns the variables
    set (for ``WorkerProcess``, which passes no ``PDFTASKS_*`` of its own).

    Call before pdftasks is imported: its settings are read once, on first use.
    """
    for key in [k for k in os.environ if k.startswith("PDFTASKS_")]:
        del os.environ[key]
    values = {"PDFTASKS_TEMPLATES_DIR": str(templates),
              "PDFTASKS_OUTPUT_DIR": str(tmp / output), "PDFTASKS_HOME": str(tmp / "home")}
    if broker_url:
        values["PDFTASKS_BROKER_URL"] = broker_url
    values.update({f"PDFTASKS_{key.upper()}": value for key, value in extra.items()})
    os.environ.update(values)
    return values


def pdftasks_worker(concurrency: int, hostname: str, log_path: Path, cwd: Path,
                    loglevel: str | None = None, extra_env: Mapping[str, str] | None = None,
                    extra_args: Sequence[str] = ()) -> WorkerProcess:
    """``python -m pdftasks worker -c N -n HOST`` with this process's ``PDFTASKS_*``.

    ``loglevel`` None keeps the worker's default (``PDFTASKS_LOG_LEVEL``, INFO): stock
    settings, one log line per job, as in production.
    """
    env = {k: v for k, v in os.environ.items() if k.startswith("PDFTASKS_")}
    env.update(extra_env or {})
    argv = [sys.executable, "-m", "pdftasks", "worker", "-c", str(concurrency), "-n", hostname]
    if loglevel:
        argv += ["-l", loglevel]
    return WorkerProcess([*argv, *extra_args], env=env, log_path=log_path, cwd=cwd)


def result_metas_by_id(app: Any, task_ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """Celery result metadata of many tasks by Redis MGET (None = not stored yet)."""
    backend = app.backend
    keys = [backend.get_key_for_task(t) for t in task_ids]
    out: list[dict[str, Any] | None] = []
    for i in range(0, len(keys), 500):
        for raw in backend.client.mget(keys[i:i + 500]):
            out.append(backend.decode(raw) if raw is not None else None)
    return out


def wait_for_metas(app: Any, task_ids: Sequence[str], timeout: float,
                   worker: WorkerProcess | None = None,
                   poll_s: float = 0.25) -> list[dict[str, Any] | None]:
    """Poll until every task has a ready result (SUCCESS or FAILURE) or ``timeout`` passes.

    This process shares the cores with the processes being measured, so it polls cheaply:
    the last task not ready yet alone (a backlog ends about in the order it was queued),
    and only once that one is ready, one MGET of every task not ready yet. Reading and
    decoding all the results four times a second instead (about 3 ms of CPU a poll for 170
    invoices, whose results hold their data) took about half a percent of 2 cores from a
    worker, and nothing from the direct pool, whose results come through its own pipe.
    """
    deadline = time.monotonic() + timeout
    ready: dict[str, dict[str, Any]] = {}
    while True:
        pending = [t for t in task_ids if t not in ready]
        if not pending:
            return [ready[t] for t in task_ids]
        if _is_ready(result_metas_by_id(app, pending[-1:])[0]):
            for task_id, meta in zip(pending, result_metas_by_id(app, pending), strict=True):
                if meta is not None and _is_ready(meta):
                    ready[task_id] = meta
            if len(ready) == len(task_ids):
                continue
        if worker is not None and not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            return result_metas_by_id(app, task_ids)
        time.sleep(poll_s)


def _is_ready(meta: Mapping[str, Any] | None) -> bool:
    return meta is not None and meta.get("status") in ("SUCCESS", "FAILURE")


def date_done_epoch(meta: Mapping[str, Any]) -> float:
    """``date_done`` of a Celery result (ISO 8601, UTC) as a ``time.time()`` value."""
    import datetime as dt

    value = dt.datetime.fromisoformat(str(meta["date_done"]))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (``VmRSS`` from ``/proc``); NaN if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``), e.g. a Celery worker's pool processes."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


def machine_description() -> str:
    """CPU model, cores, memory, OS and the versions that matter for rendering speed."""
    import platform
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        mem = f", {int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB RAM"
    system = f"{platform.system()} {platform.release()}"
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                system = f"{line.split('=', 1)[1].strip().strip(chr(34))}, {system}"
    versions = []
    for dist in ("weasyprint", "celery", "kombu", "redis"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    import ctypes
    import ctypes.util

    for label, lib, fn in (("Pango", "pango-1.0", "pango_version_string"),
                           ("HarfBuzz", "harfbuzz", "hb_version_string")):
        with contextlib.suppress(Exception):  # the C libraries WeasyPrint loads
            version = getattr(ctypes.CDLL(ctypes.util.find_library(lib)), fn)
            version.restype = ctypes.c_char_p
            versions.append(f"{label} {version().decode()}")
    return (f"{cpu}, {os.cpu_count()} CPUs{mem}; {system}; "
            f"Python {platform.python_version()}; {', '.join(versions)}")


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def proc_cpu_s(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid``, in seconds; NaN if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(rest[11]) + int(rest[12])) / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf")
                                              else 100)


def naive_render(templates_dir: Path, template: str, data: Mapping[str, Any],
                 output_path: Path) -> tuple[float, float]:
    """The render of a first PDF task, for the naive rows of ``throughput.py``: a new Jinja
    environment, ``weasyprint.HTML(string=...).write_pdf(path)``, nothing kept between jobs
    (no template, stylesheet or font cache of pdftasks' renderer, no checks, no atomic
    write). Returns (``time.time()`` at the start, render ms)."""
    import jinja2
    import weasyprint

    started, t0 = time.time(), time.perf_counter()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)),
                             autoescape=True)
    html = env.get_template(template).render(**data)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    weasyprint.HTML(string=html, base_url=str(templates_dir)).write_pdf(str(output_path))
    return started, (time.perf_counter() - t0) * 1000
