#!/usr/bin/env python
"""Which broker/result backend should the zero-setup default use, and does it keep up?

The zero-setup default (no ``PDFTASKS_BROKER_URL``) must drain jobs faster than two
rendering worker processes complete them (a one-page invoice takes ~60-80 ms, so two
processes need ~25-35 jobs/s). This benchmark compares, in one run:

1. ``default``          pdftasks' default: kombu filesystem transport with the options of
                        ``pdftasks.celery_app.broker_transport_options(Settings(home=tmp))``
                        (``polling_interval`` 0.05 s) + Celery ``file://`` results.
2. ``fs-poll-1.0``      the same with kombu's default ``polling_interval`` (1.0 s).
3. ``fs+sqlite``        filesystem transport (0.05 s) + ``db+sqlite:///`` result backend.
4. ``sqla+sqlite``      kombu SQLAlchemy transport (``sqla+sqlite:///``, default polling)
                        + ``db+sqlite:///`` results.
5. ``render (ref)``     real pdftasks rendering on the default: one-page invoices
                        (``templates/invoice.html``, ``pdftasks.samples.sample_invoice(i)``)
                        through ``python -m pdftasks worker -c 2``, submitted with
                        ``pdftasks.generate_pdf``.

Methodology
-----------
* Scenarios 1-4 use ``benchmarks/_noop_app.py``: a task that returns its argument, with
  pdftasks' job options (late acks, reject on worker loss, prefetch multiplier 1,
  ``task_track_started``, ``result_extended``, JSON). Each scenario gets a fresh temporary
  directory (broker folders / SQLite files / results).
* ``--jobs`` (500) jobs are submitted *before* the worker starts; ``submit/s`` = jobs /
  time of the ``.delay()`` loop in this process.
* Then ``celery -A _noop_app worker -Q noop -c 2 --prefetch-multiplier 1 -O fair
  -l WARNING`` is started (cwd and PYTHONPATH = benchmarks/). Its ``worker_ready`` signal
  writes ``time.time()`` to a file; drain time = from that moment until this process has
  seen every result ready (results checked in submission order, one at a time, every
  10 ms while the next one is not ready). jobs/s = jobs done / drain time.
* A scenario is bounded by ``--max-seconds`` (40) of draining: slow setups report the
  jobs done by then (``done`` < ``jobs``) and the rate achieved.
* Reference (5): the worker is started, ``2 x concurrency`` warm-up PDFs are rendered and
  waited for (this is also the readiness check), then ``--pdfs`` (100) PDFs are submitted in
  a burst; rate = PDFs / (first submit -> last result ready), bounded by ``--max-seconds``
  too. This is the steady rate with a queue that never runs dry; it still includes the
  wait of each freed process for the broker's next poll (see below).
* Extra reference ``render direct``: the same invoices rendered by a ``multiprocessing``
  pool of ``--concurrency`` processes calling ``pdftasks.render.PDFService`` (warmed up), with
  no broker and no result backend: the upper bound the queue can at best reach.
* headroom = no-op drain rate of the default / rendering rate. Above 1, the default
  broker drains faster than two rendering processes consume. The last line shows what the
  queue costs the renderers: rate through the default broker / direct rate. On the
  filesystem transport a freed worker slot is refilled only at the next poll (Celery uses
  its blocking ``synloop`` for this transport and kombu sleeps ``polling_interval`` whenever
  the prefetch window is full), so each render waits on average about half a
  ``polling_interval`` before the next one starts.
* ``other CPU`` = average CPUs used by processes other than this benchmark and its workers
  during the scenario (``/proc``); a high value means the run was disturbed.

Run: ``.venv/bin/python benchmarks/local_broker.py`` (about 2 minutes with defaults;
``--jobs 200 --max-seconds 15 --pdfs 40`` for a quick check).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    CpuMonitor,
    WorkerProcess,
    print_table,
    sigterm_as_exit,
    use_pdftasks_env,
)

#: Check interval of this process for results, in seconds.
RESULT_POLL_S = 0.01
#: kombu's default polling interval for virtual transports (kombu.transport.virtual.Transport).
KOMBU_DEFAULT_POLLING_S = 1.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    name: str
    description: str
    jobs: int  # submitted (measured jobs only)
    done: int = 0
    seconds: float = math.nan
    submit_rate: float = math.nan
    startup_s: float = math.nan
    other_cpu: float = math.nan
    bounded: bool = False
    render_ms: float = math.nan  # mean duration_ms of the PDFs (render rows)
    error: str | None = None

    @property
    def rate(self) -> float:
        if self.error or not self.seconds or math.isnan(self.seconds):
            return math.nan
        return self.done / self.seconds


def wait_in_order(results: list[Any], deadline: float,
                  worker: WorkerProcess | None = None) -> int:
    """Wait until every result is ready or ``deadline`` (monotonic) passes.

    Results are checked in submission order (the queues are FIFO), so each poll reads one
    result. Returns how many are ready.
    """
    i, n = 0, len(results)
    while i < n:
        if results[i].ready():
            i += 1
            continue
        if time.monotonic() > deadline:
            break
        if worker is not None and not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        time.sleep(RESULT_POLL_S)
    # Out-of-order completions after the first pending one.
    return i + sum(1 for r in results[i:] if r.ready())


def kill_worker(worker: WorkerProcess) -> None:
    """SIGKILL the worker's process group (main process and pool children).

    Its shutdown is not measured and its state is thrown away with the temporary directory;
    a warm (SIGTERM) or cold (SIGQUIT) shutdown of an idle worker on the filesystem
    transport takes 6-7 s here, which would only lengthen the run.
    """
    if worker.proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(timeout=10)
    worker.stop(timeout=5)  # reaps it; SIGTERM/SIGKILL again if it somehow survived


def wait_ready_file(path: Path, worker: WorkerProcess, timeout: float) -> float:
    """Wait for the worker's ready file; return the ``time.time()`` it wrote."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            return float(path.read_text())
        if not worker.alive():
            raise RuntimeError(f"worker exited before it was ready:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready after {timeout:.0f} s:\n{worker.log_tail()}")
        time.sleep(0.01)


def run_noop(name: str, description: str, broker_url: str, result_backend: str,
             transport_options: dict[str, Any], workdir: Path, args: argparse.Namespace
             ) -> Outcome:
    from _noop_app import QUEUE, TASK_NAME, make_app

    out = Outcome(name, description, jobs=args.jobs)
    app = make_app(broker_url, result_backend, transport_options)
    task = app.tasks[TASK_NAME]
    worker: WorkerProcess | None = None
    try:
        # Creates the result tables of a db+ backend now, not concurrently in the workers.
        app.AsyncResult("local-broker-init").state  # noqa: B018
        log(f"{name}: submitting {args.jobs} no-op jobs")
        t0 = time.perf_counter()
        results = [task.delay(i) for i in range(args.jobs)]
        out.submit_rate = args.jobs / (time.perf_counter() - t0)

        ready_file = workdir / "worker.ready"
        env = {
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p),
            "BENCH_NOOP_BROKER_URL": broker_url,
            "BENCH_NOOP_RESULT_BACKEND": result_backend,
            "BENCH_NOOP_TRANSPORT_OPTIONS": json.dumps(transport_options),
            "BENCH_NOOP_READY_FILE": str(ready_file),
        }
        argv = [sys.executable, "-m", "celery", "-A", "_noop_app", "worker", "-Q", QUEUE,
                "-c", str(args.concurrency), "--prefetch-multiplier", "1", "-O", "fair",
                "-l", "WARNING", "-n", f"noop-{os.getpid()}-{name}@%h"]
        worker = WorkerProcess(argv, env, workdir / "worker.log", cwd=BENCH_DIR)
        cpu = CpuMonitor([])
        started = time.time()
        worker.start()
        cpu.sessions.add(worker.proc.pid)  # type: ignore[union-attr]
        t_ready = wait_ready_file(ready_file, worker, timeout=60)
        out.startup_s = t_ready - started
        cpu.start()
        log(f"{name}: worker ready after {out.startup_s:.1f} s, draining "
            f"(at most {args.max_seconds:g} s)")
        deadline = time.monotonic() + max(0.0, args.max_seconds - (time.time() - t_ready))
        out.done = wait_in_order(results, deadline, worker)
        out.seconds = time.time() - t_ready
        out.other_cpu = cpu.foreign_cores()
        out.bounded = out.done < args.jobs
        log(f"{name}: {out.done}/{args.jobs} done in {out.seconds:.2f} s "
            f"({out.rate:.1f} jobs/s)")
    except Exception as exc:  # report and go on with the other scenarios
        out.error = f"{type(exc).__name__}: {str(exc)[:2000]}"
        log(f"{name}: FAILED: {out.error}")
    finally:
        if worker is not None:
            kill_worker(worker)
        with contextlib.suppress(Exception):
            app.close()
    return out


def run_render(workdir: Path, env: dict[str, str], args: argparse.Namespace) -> Outcome:
    """Scenario 5: real PDFs through ``python -m pdftasks worker`` on the default broker."""
    from pdftasks import generate_pdf
    from pdftasks.samples import sample_invoice

    out = Outcome("render (ref)", "pdftasks worker, one-page invoices, default broker",
                  jobs=args.pdfs)
    argv = [sys.executable, "-m", "pdftasks", "worker", "-c", str(args.concurrency),
            "-l", "WARNING", "-n", f"render-{os.getpid()}@%h"]
    worker = WorkerProcess(argv, env, workdir / "worker.log", cwd=workdir)
    try:
        cpu = CpuMonitor([])
        started = time.monotonic()
        worker.start()
        cpu.sessions.add(worker.proc.pid)  # type: ignore[union-attr]
        warm = [generate_pdf.delay(template="invoice.html", data=sample_invoice(900 + i),
                                   output_filename=f"warmup_{i:02d}.pdf")
                for i in range(2 * args.concurrency)]
        if wait_in_order(warm, time.monotonic() + 90, worker) < len(warm):
            raise RuntimeError(f"warm-up PDFs not rendered in 90 s:\n{worker.log_tail()}")
        for r in warm:
            r.get(timeout=1)  # raises if a warm-up job failed
        out.startup_s = time.monotonic() - started
        log(f"render: worker warm after {out.startup_s:.1f} s; rendering {args.pdfs} PDFs")
        datas = [sample_invoice(i) for i in range(1, args.pdfs + 1)]
        cpu.start()
        t0 = time.perf_counter()
        results = [generate_pdf.delay(template="invoice.html", data=d,
                                      output_filename=f"invoice_{i:04d}.pdf")
                   for i, d in enumerate(datas, 1)]
        out.submit_rate = args.pdfs / (time.perf_counter() - t0)
        out.done = wait_in_order(results, time.monotonic() + args.max_seconds, worker)
        out.seconds = time.perf_counter() - t0
        out.other_cpu = cpu.foreign_cores()
        out.bounded = out.done < args.pdfs
        docs = [r.get(timeout=1) for r in results if r.ready()]
        pages = {d["pages"] for d in docs}
        out.render_ms = sum(d["duration_ms"] for d in docs) / max(1, len(docs))
        if pages != {1}:
            raise RuntimeError(f"expected one-page invoices, got page counts {sorted(pages)}")
        log(f"render: {out.done}/{args.pdfs} PDFs in {out.seconds:.2f} s "
            f"({out.rate:.1f} PDFs/s)")
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {str(exc)[:2000]}"
        log(f"render: FAILED: {out.error}")
    finally:
        kill_worker(worker)
    return out


class _CpuMonitorWithChildren(CpuMonitor):
    """:class:`CpuMonitor` that also counts our direct children (the pool of ``render
    direct``, which stays in our session, unlike the workers)."""

    def _our_jiffies(self) -> int:
        total = super()._our_jiffies()
        me = os.getpid()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # rest[1] = ppid (field 4); utime, stime = fields 14, 15.
            if int(rest[1]) == me and int(rest[3]) not in self.sessions:
                total += int(rest[11]) + int(rest[12])
        return total


_direct_service: Any = None


def _direct_init() -> None:
    global _direct_service
    from pdftasks.render import PDFService

    _direct_service = PDFService(cache_stylesheets=True)  # as a worker's
    _direct_service.warm_up()


def _direct_render(i: int) -> tuple[int, float]:
    from pdftasks.samples import sample_invoice

    result = _direct_service.generate_pdf("invoice.html", sample_invoice(i),
                                          f"direct_{i:04d}.pdf")
    return result.pages, result.duration_ms


def run_direct(args: argparse.Namespace) -> Outcome:
    """Extra reference: the same invoices rendered by a plain process pool, no broker."""
    import multiprocessing

    out = Outcome("render direct", "multiprocessing pool of PDFService, no broker/results "
                  "(upper bound)", jobs=args.pdfs)
    pool = None
    try:
        started = time.monotonic()
        pool = multiprocessing.get_context("spawn").Pool(args.concurrency,
                                                         initializer=_direct_init)
        pool.map(_direct_render, range(900, 900 + 2 * args.concurrency), chunksize=1)
        out.startup_s = time.monotonic() - started
        cpu = _CpuMonitorWithChildren([])
        cpu.start()
        t0 = time.perf_counter()
        done = pool.map(_direct_render, range(1, args.pdfs + 1), chunksize=1)
        out.seconds = time.perf_counter() - t0
        out.other_cpu = cpu.foreign_cores()
        out.done = len(done)
        out.render_ms = sum(ms for _, ms in done) / len(done)
        if {p for p, _ in done} != {1}:
            raise RuntimeError("expected one-page invoices")
        log(f"direct: {out.done} PDFs in {out.seconds:.2f} s ({out.rate:.1f} PDFs/s)")
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {str(exc)[:2000]}"
        log(f"direct: FAILED: {out.error}")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return out


def fmt(value: float, spec: str = ".1f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Drain throughput of the local (zero-setup) broker/result-backend "
                    "candidates with no-op jobs, next to the real pdftasks rendering rate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500,
                        help="no-op jobs per scenario, queued before the worker starts")
    parser.add_argument("--pdfs", type=int, default=100,
                        help="one-page invoices for the rendering reference (0 = skip)")
    parser.add_argument("-c", "--concurrency", type=int, default=2,
                        help="worker processes")
    parser.add_argument("--max-seconds", type=float, default=40.0,
                        help="bound on the drain time of each scenario")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (worker logs) for inspection")
    args = parser.parse_args()
    if args.jobs < 1 or args.concurrency < 1 or args.max_seconds <= 0 or args.pdfs < 0:
        parser.error("--jobs, --concurrency and --max-seconds must be positive")

    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pdftasks-local-broker-"))
    try:
        with sigterm_as_exit():
            outcomes = run_all(tmp, args)
    except (KeyboardInterrupt, SystemExit):
        log("interrupted: workers stopped, temporary files removed")
        raise
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(outcomes, args, time.monotonic() - t_start)
    return 1 if any(o.error for o in outcomes) else 0


def run_all(tmp: Path, args: argparse.Namespace) -> list[Outcome]:
    # pdftasks reads PDFTASKS_* once, at import: point it at the reference scenario's dirs
    # (and drop any PDFTASKS_* of the caller, so "default" really is the default).
    render_dir = tmp / "render"
    render_env = use_pdftasks_env(render_dir, output="output")

    from pdftasks.celery_app import broker_transport_options
    from pdftasks.settings import Settings

    outcomes: list[Outcome] = []

    def scenario_dir(name: str) -> Path:
        d = tmp / name
        d.mkdir(parents=True)
        return d

    # 1. pdftasks default: exactly what pdftasks configures for a home directory.
    d = scenario_dir("default")
    s = Settings(home=d / "home")
    opts = broker_transport_options(s)
    (s.home / "results").mkdir(parents=True, exist_ok=True)
    assert s.is_local and s.effective_broker_url == "filesystem://", s
    outcomes.append(run_noop(
        "default", f"filesystem:// polling {opts['polling_interval']:g} s + file:// results",
        s.effective_broker_url, s.effective_result_backend, opts, d, args))

    # 2. Same, kombu's default polling interval.
    d = scenario_dir("fs-poll-1.0")
    s = Settings(home=d / "home")
    opts = {k: v for k, v in broker_transport_options(s).items() if k != "polling_interval"}
    (s.home / "results").mkdir(parents=True, exist_ok=True)
    outcomes.append(run_noop(
        "fs-poll-1.0", f"filesystem:// polling {KOMBU_DEFAULT_POLLING_S:g} s (kombu default) "
        "+ file:// results", s.effective_broker_url, s.effective_result_backend, opts, d, args))

    # 3. Filesystem transport (0.05) + SQLite results.
    d = scenario_dir("fs+sqlite")
    s = Settings(home=d / "home")
    opts = broker_transport_options(s)
    outcomes.append(run_noop(
        "fs+sqlite", f"filesystem:// polling {opts['polling_interval']:g} s + db+sqlite results",
        s.effective_broker_url, f"db+sqlite:///{d / 'results.sqlite'}", opts, d, args))

    # 4. SQLAlchemy transport, default polling, + SQLite results.
    d = scenario_dir("sqla+sqlite")
    outcomes.append(run_noop(
        "sqla+sqlite", f"sqla+sqlite:// polling {KOMBU_DEFAULT_POLLING_S:g} s (kombu default) "
        "+ db+sqlite results", f"sqla+sqlite:///{d / 'broker.sqlite'}",
        f"db+sqlite:///{d / 'results.sqlite'}", {}, d, args))

    # 5. Reference: real rendering on the default.
    if args.pdfs:
        render_dir.mkdir(parents=True, exist_ok=True)
        outcomes.append(run_render(render_dir, render_env, args))
        outcomes.append(run_direct(args))
    return outcomes


def report(outcomes: list[Outcome], args: argparse.Namespace, total_s: float) -> None:
    default = outcomes[0].rate if outcomes else math.nan
    rows = []
    for o in outcomes:
        done = f"{o.done}/{o.jobs}" if o.bounded else str(o.done)
        if o.error:
            done = "FAILED"
        ratio = o.rate / default if default and not math.isnan(default) else math.nan
        rows.append([o.name, done, fmt(o.seconds, ".2f"),
                     fmt(o.rate) + (" (bounded)" if o.bounded and not o.error else ""),
                     fmt(ratio, ".2f"), fmt(o.submit_rate, ".0f"), fmt(o.startup_s),
                     fmt(o.other_cpu, ".2f")])
    print()
    print(f"Drain throughput, worker -c {args.concurrency} --prefetch-multiplier 1, late acks; "
          f"{args.jobs} no-op jobs queued before the worker started "
          f"(bounded at {args.max_seconds:g} s)")
    print()
    print_table(["scenario", "jobs", "seconds", "jobs/s", "ratio", "submit/s",
                 "startup s", "other CPU"], rows)
    print()
    for o in outcomes:
        extra = f" [mean render {o.render_ms:.0f} ms]" if not math.isnan(o.render_ms) else ""
        print(f"  {o.name:<13} {o.description}{extra}")
        if o.error:
            print(f"  {'':<13} ERROR: {o.error.splitlines()[0]}")
    print("  seconds: worker ready -> all results seen (render: first submit -> last PDF); "
          "ratio: jobs/s / default's;\n  other CPU: CPUs used by unrelated processes meanwhile "
          "(high = disturbed run)")
    render = next((o for o in outcomes if o.name == "render (ref)"), None)
    direct = next((o for o in outcomes if o.name == "render direct"), None)
    if render is not None and not math.isnan(render.rate) and not math.isnan(default):
        headroom = default / render.rate
        verdict = "OK, > 1" if headroom > 1 else "NOT ENOUGH, must be > 1"
        print()
        print(f"headroom = default no-op drain {default:.1f} jobs/s / rendering "
              f"{render.rate:.1f} PDFs/s ({args.concurrency} processes) = {headroom:.2f}x "
              f"({verdict})")
        if direct is not None and not math.isnan(direct.rate):
            print(f"rendering through the default broker = {render.rate / direct.rate:.0%} "
                  f"of the same processes rendering without a broker ({direct.rate:.1f} PDFs/s)")
    print(f"total runtime: {total_s:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
