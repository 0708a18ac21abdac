#!/usr/bin/env python
"""Throughput against the rendering limit: pdftasks workers next to a bare process pool.

Issue 8, benchmark 1: the same one-page invoices rendered (a) directly by a process pool of
N processes with no queue (the limit) and (b) through pdftasks with N worker processes from
a backlog, on the same cores. Target: pdftasks >= 97% of the direct pool.

Methodology
-----------
* Both setups render the same ``--jobs`` (500) invoices, ``templates/invoice.html`` with
  ``pdftasks.samples.sample_invoice(i)``, with the same renderer call as the task:
  ``PDFService.generate_pdf`` (checks, Jinja, WeasyPrint, atomic write with fsync) on a
  service reused across jobs and warmed up (``warm_up()``) in every process.
* direct pool: ``multiprocessing`` (spawn) pool of N processes; ``imap_unordered`` with
  ``chunksize=1`` hands out one invoice at a time, so a process takes the next one as soon
  as it is free, like a queue with no broker, no result backend and no job records.
* pdftasks: a private ``redis-server``; ``python -m pdftasks worker -c N`` with stock
  settings (only broker, templates, output and home directories set; log level INFO, task
  events on demand, late acks, prefetch 1, job records and their events, result backend on
  Redis). It renders ``2 x N`` warm-up jobs first and waits until it stopped sending task
  events (a new worker sends them for its first 15 s, for a monitor that may be running;
  none runs here), so the phase measures a worker in its steady state; once it is idle
  the measured jobs are queued
  with ``PDFQueueManager.submit_batch``, which records them and then publishes up to 500
  in one Redis pipeline, so the backlog appears at once. Nothing else is submitted while
  it runs; every 0.25 s this process reads the result of the last job not done yet (and
  all the others once that one is done: ``_common.wait_for_metas``), so it takes next to
  no CPU from the worker.
* Window, the same for both: from the first measured job's start (``time.time()`` when the
  job starts in its process: the pool function's first line; the task's ``started_at``)
  to the end of the last one (pool: after ``generate_pdf`` returned; pdftasks: the result's
  ``date_done``, written after the task returned). PDFs/s = jobs / window. Warm-up jobs
  run before the window in both setups. Everything that happens between two renders
  (pool: IPC; pdftasks: job-record transitions, result and STARTED writes, events, ack,
  fetching the next message, log lines) is inside the window.
* busy = sum of ``duration_ms`` (the renderer's own timing) / (window x N): the share of
  the processes' time spent in ``generate_pdf``. It splits the gap between the setups
  into "renders got slower" (render ms) and "time between renders" (busy). between ms =
  per process, next job's start - this job's start - this job's render (median): what a
  job costs its process outside ``generate_pdf`` (task code, job records, result writes,
  the ack and the wait for the next message).
* CPU per job (from /proc, between the end of the warm-up and the last result): the
  rendering processes, the dispatcher (the pool's parent; the worker's main process),
  redis-server and, for the worker rows, this benchmark process (the driver: it submits and
  polls; for the pool, it is the dispatcher). On N busy cores, CPU used by the dispatcher,
  Redis and the driver is taken from the renders.
* The naive rows (``--no-naive`` leaves them out): what a user would otherwise write.
  "stock Celery task": ``_stock_celery.py``'s ``naive`` task on a plain ``Celery()`` app
  (one queue, default settings: prefetch 4, early acks), ``celery worker -c N``, the
  backlog queued with ``.delay()``; "process pool": a ``multiprocessing`` pool. Both render
  each job as a first PDF task does (``_common.naive_render``): a new Jinja environment and
  ``weasyprint.HTML(string=...).write_pdf(path)``, nothing cached between jobs. The report
  prints pdftasks' PDFs/s over each (median of the rounds' ratios).
* ``--also-tree PATH`` adds a phase with the ``pdftasks worker`` of another checkout (its
  root on ``PYTHONPATH``; e.g. ``git archive <commit>`` unpacked), for a before/after
  comparison in one run.
* ``--variant`` adds pdftasks phases with single options changed (``_variant_app.py``:
  task events off, STARTED state off, extended results off, WARNING logging) to show what
  each costs; ``--variant trace`` (stock options) timestamps the steps of every job in the
  worker's processes (the main process too: message taken in, handed over, result read
  and acknowledged, message written to a pool process's pipe; a pool process also when it
  takes a message in) and prints where the time between two renders goes, in steps that
  follow each other (their means add up to the total), with the Redis round trips per job
  of a pool process and the share of jobs whose next message was taken early;
  ``--also-concurrency C`` adds a stock pdftasks phase with C processes on the
  same cores (e.g. N + 1, so a process waiting for its next job leaves its core to
  another); ``--also-ceiling`` adds three rows from ``_ceiling.py``, N processes that are
  each their own consumer of the pdftasks queues, with no worker main process: "one script
  per job" (end the last job as the job store does, acknowledge it, take the next message
  most urgent queue first, record it unacknowledged, begin it: one round trip) and "the
  task as it is" (a script acknowledges and takes, then ``generate_pdf`` runs through
  Celery's tracer with its own scripts: three round trips) and "the task, one script per
  job" (the same, but the task's end script goes in one pipeline with a script that
  acknowledges the job, takes the next message and begins it, and that job's start script
  is not sent: one round trip while messages wait); upper bounds for a worker built
  that way, without its supervision, retries or events, and the report prints their ratios
  to the pool. None of these is part of the comparison the target is about.
* The speed of this kind of machine drifts by tens of percent over tens of seconds (other
  programs, and a shared host), so the jobs are split over ``--rounds`` (10) rounds; each
  round runs every setup once, in an order that rotates from round to round. Every setup is
  started and warmed up once, before the first round, and stays up: a round's phases follow
  each other within seconds, so a drift touches the setups alike. A setup with a worker is
  paused (``SIGSTOP`` of its process group) while the others run: even idle, a worker wakes
  up to poll Redis and run its timers (a pdftasks worker about 0.2% of a core, 0.6% when
  this was measured), and left running those wake-ups slowed the direct pool's renders
  (pdftasks printed about 2 points higher). Each pdftasks setup has its own Redis database,
  so the workers of the others never take its jobs. PDFs/s = a setup's PDFs / the sum of its
  windows; "of limit" and the target ratio = the median over the rounds of the setup's
  PDFs/s divided by the direct pool's in the same round. The busy share is steadier than
  PDFs/s on such a machine: the report also prints pdftasks' busy share / the pool's, the
  ratio the two would have at equal render speed. ``other CPU`` = CPUs used by other
  programs meanwhile (/proc); above 0.25 the phase was disturbed.

Run: ``.venv/bin/python benchmarks/throughput.py`` (about 2 minutes with defaults;
``--jobs 100`` for a quick check).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    ROOT,
    CpuMonitor,
    RedisServer,
    WorkerProcess,
    celery_ping,
    child_pids,
    date_done_epoch,
    load_average,
    log,
    machine_description,
    naive_render,
    pdftasks_worker,
    percentile,
    print_table,
    proc_cpu_s,
    release_results,
    sigterm_as_exit,
    use_pdftasks_env,
    wait_for_metas,
)

TEMPLATE = "invoice.html"
TARGET_RATIO = 0.97


@dataclass
class Phase:
    name: str
    jobs: int = 0
    window_s: float = math.nan
    render_ms: list[float] = field(default_factory=list)
    processes: int = 0
    other_cpu: float = math.nan
    failed: int = 0
    pids: int = 0
    #: CPU ms per job: the rendering processes, the dispatcher (pool parent / worker main
    #: process) and redis-server, from /proc over the measured part.
    cpu_ms: dict[str, float] = field(default_factory=dict)
    #: Per process, from one job's start to the next one's start, minus the render: the
    #: time each job costs its process outside generate_pdf, in ms.
    gaps_ms: list[float] = field(default_factory=list)
    #: ``--variant trace``: that time split into steps (ms per job, one list per step).
    split_ms: dict[str, list[float]] = field(default_factory=dict)
    #: CPU ms of each generate_pdf in its process (the direct pool, ``--variant trace``;
    #: empty where not measured): the rest of ``cpu_ms["renderers"]`` is spent outside it.
    render_cpu_ms: list[float] = field(default_factory=list)
    round: int = 0
    #: Combined phases: this setup's PDFs/s / the direct pool's, in each round.
    round_ratios: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.jobs / self.window_s if self.window_s and self.window_s > 0 else math.nan

    @property
    def busy(self) -> float:
        if not self.render_ms or not self.window_s:
            return math.nan
        return sum(self.render_ms) / 1000 / (self.window_s * self.processes)


# The direct pool (functions at module level: spawn children import this file).

_service: Any = None


def _pool_init(output_dir: str) -> None:
    global _service
    from pdftasks.render import PDFService, PDFServiceConfig

    _service = PDFService(PDFServiceConfig(templates_dir=ROOT / "templates",
                                           output_dir=output_dir),
                          cache_stylesheets=True)  # as a worker's
    _service.warm_up()


def _pool_render(i: int) -> tuple[float, float, float, int, int, float]:
    started = time.time()
    from pdftasks.samples import sample_invoice

    data = sample_invoice(i)
    cpu = time.process_time()
    result = _service.generate_pdf(TEMPLATE, data, f"direct_{i:05d}.pdf")
    cpu_ms = (time.process_time() - cpu) * 1000
    return started, time.time(), result.duration_ms, result.pages, os.getpid(), cpu_ms


class Setup:
    """One way of rendering the invoices: started (and warmed up) once, then given a share
    of the jobs in every round, and stopped at the end."""

    name = ""

    def start(self) -> None:
        raise NotImplementedError

    def run(self, measured: list[int]) -> Phase:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        """Stop using any CPU until :meth:`resume` (while the other setups run)."""

    def resume(self) -> None:
        """Undo :meth:`pause`."""


class WorkerSetup(Setup):
    """A setup with a Celery worker subprocess (in its own process group) on ``server``.

    ``run`` measures one backlog: ``backlog`` builds it (outside the measurement), ``submit``
    queues it and returns the app to read the results with and the task ids; ``check`` looks
    at the finished phase. The worker is paused with ``SIGSTOP`` while the other setups run,
    since even idle it wakes up to poll Redis and run its timers (about 0.2% of a core for a
    pdftasks worker), which would be taken from them.
    """

    args: argparse.Namespace
    server: RedisServer
    c = 0
    what = "job"
    worker: WorkerProcess | None = None

    def backlog(self, measured: list[int]) -> list[Any]:
        raise NotImplementedError

    def submit(self, backlog: list[Any]) -> tuple[Any, list[str]]:
        raise NotImplementedError

    def check(self, phase: Phase, metas: list[Any], results: list[dict[str, Any]]) -> None:
        """Checks and extra figures of a finished phase (nothing by default)."""

    def run(self, measured: list[int]) -> Phase:
        worker, server = self.worker, self.server
        assert worker is not None and worker.proc is not None and server.proc is not None
        phase = Phase(self.name, processes=self.c)
        backlog = self.backlog(measured)
        cpu = CpuMonitor([worker.proc.pid, server.proc.pid])
        cpu.start()
        kids = child_pids(worker.proc.pid)
        before = cpu_snapshot(kids, worker.proc.pid, server.proc.pid)
        app, ids = self.submit(backlog)
        metas = wait_for_metas(app, ids, timeout=self.args.timeout, worker=worker)
        after = cpu_snapshot(kids, worker.proc.pid, server.proc.pid)
        phase.other_cpu = cpu.foreign_cores()
        results = fill_phase(phase, metas, len(ids), before, after, worker, self.what)
        self.check(phase, metas, results)
        return phase

    def release(self) -> None:
        """What to give back before the worker stops (nothing by default)."""

    def stop(self) -> None:
        if self.worker is not None:
            self.resume()  # a stopped process would not see the SIGTERM
            self.release()
            self.worker.stop()
            self.worker = None

    def pause(self) -> None:
        if self.worker is not None and self.worker.proc is not None:
            os.killpg(self.worker.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.worker is not None and self.worker.proc is not None:
            os.killpg(self.worker.proc.pid, signal.SIGCONT)


def _pythonpath(first: str) -> str:
    """``first``, then this process's ``PYTHONPATH``."""
    return os.pathsep.join(p for p in (first, os.environ.get("PYTHONPATH", "")) if p)


class PoolSetup(Setup):
    """A ``multiprocessing`` (spawn) pool: the direct pool (a warm ``PDFService`` per
    process, the limit) or, ``naive``, a plain pool rendering each job naively."""

    def __init__(self, args: argparse.Namespace, tmp: Path, naive: bool = False) -> None:
        self.c = args.concurrency
        self.name = (f"naive: process pool, {self.c} processes" if naive
                     else f"direct pool, {self.c} processes (limit)")
        self.init, self.render = ((_naive_init, _naive_pool_render) if naive
                                  else (_pool_init, _pool_render))
        self.out = tmp / ("out-naive" if naive else "out-direct")
        self.pool: Any = None
        self.kids: list[int] = []

    def start(self) -> None:
        others = set(child_pids(os.getpid()))
        self.pool = multiprocessing.get_context("spawn").Pool(
            self.c, initializer=self.init, initargs=(str(self.out),))
        warm = list(range(900_000, 900_000 + 2 * self.c))
        self.pool.map(self.render, warm, chunksize=1)  # not measured; every process warm
        # This pool's processes (not the other setups', which are this process's children
        # too).
        self.kids = [p for p in child_pids(os.getpid()) if p not in others]

    def run(self, measured: list[int]) -> Phase:
        phase = Phase(self.name, processes=self.c)
        cpu = _ChildrenCpuMonitor([])
        cpu.start()
        before = cpu_snapshot(self.kids, os.getpid(), None)
        done = list(self.pool.imap_unordered(self.render, measured, chunksize=1))
        after = cpu_snapshot(self.kids, os.getpid(), None)
        phase.other_cpu = cpu.foreign_cores()
        phase.jobs = len(done)
        phase.window_s = max(d[1] for d in done) - min(d[0] for d in done)
        phase.render_ms = [d[2] for d in done]
        phase.pids = len({d[4] for d in done})
        phase.cpu_ms = {k: (after[k] - before[k]) * 1000 / len(done) for k in before}
        phase.gaps_ms = gaps([(d[4], d[0], d[2]) for d in done])
        phase.render_cpu_ms = [d[5] for d in done if len(d) > 5]
        if {d[3] for d in done} != {1}:
            raise RuntimeError("expected one-page invoices")
        return phase

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


# The naive rows: what a user would otherwise write (functions at module level: spawn).

_naive_out: Path | None = None


def _naive_init(output_dir: str) -> None:
    global _naive_out
    _naive_out = Path(output_dir)
    _naive_pool_render(899_999)  # this process's first WeasyPrint render loads the fonts


def _naive_pool_render(i: int) -> tuple[float, float, float, int, int]:
    from pdftasks.samples import sample_invoice

    assert _naive_out is not None
    started, ms = naive_render(ROOT / "templates", TEMPLATE, sample_invoice(i),
                               _naive_out / f"naive_{i:05d}.pdf")
    return started, time.time(), ms, 1, os.getpid()


class StockNaiveSetup(WorkerSetup):
    """Stock Celery (``_stock_celery.py``: one queue, default settings) with a plain task
    that renders naively; each round's backlog is queued at once with ``.delay()``."""

    what = "naive task"

    def __init__(self, args: argparse.Namespace, tmp: Path, server: RedisServer) -> None:
        self.args, self.tmp, self.server = args, tmp, server
        self.c = args.concurrency
        self.name = f"naive: stock Celery task, -c {self.c}"
        self.held: list[Any] = []

    def start(self) -> None:
        from pdftasks.samples import sample_invoice

        os.environ["BENCH_STOCK_BROKER_URL"] = self.server.url(1)
        import _stock_celery as stock

        self.stock = stock
        hostname = f"bench-stock-naive-{os.getpid()}@localhost"
        env = {k: v for k, v in os.environ.items() if k.startswith("PDFTASKS_")}
        env.update(PDFTASKS_OUTPUT_DIR=str(self.tmp / "out-stock"),
                   BENCH_STOCK_BROKER_URL=self.server.url(1),
                   PYTHONPATH=_pythonpath(str(BENCH_DIR)))
        self.worker = worker = WorkerProcess(
            [sys.executable, "-m", "celery", "-A", "_stock_celery", "worker", "-c", str(self.c),
             "-n", hostname], env=env, log_path=self.tmp / "stock-worker.log", cwd=self.tmp)
        worker.start()
        worker.wait_ready(celery_ping(stock.app, hostname), timeout=90)
        warm = [stock.naive.delay(TEMPLATE, sample_invoice(900_000 + i), f"warm_{i}.pdf")
                for i in range(2 * self.c)]
        self.held += warm
        wait_for_metas(stock.app, [r.id for r in warm], timeout=120, worker=worker,
                       poll_s=0.05)
        time.sleep(0.5)

    def backlog(self, measured: list[int]) -> list[Any]:
        from pdftasks.samples import sample_invoice

        return [(TEMPLATE, sample_invoice(i), f"inv_{i:05d}.pdf") for i in measured]

    def submit(self, backlog: list[Any]) -> tuple[Any, list[str]]:
        queued = [self.stock.naive.delay(*task) for task in backlog]
        self.held += queued
        log(f"stock naive: {len(queued)} tasks queued")
        return self.stock.app, [r.id for r in queued]

    def release(self) -> None:
        release_results(self.stock.app, self.held)


def fill_phase(phase: Any, metas: list[Any], expected: int, before: dict[str, float],
               after: dict[str, float], worker: Any, what: str) -> list[dict[str, Any]]:
    """``phase``'s figures from the Celery results of its tasks; their results."""
    ok = [m for m in metas if m and m.get("status") == "SUCCESS"]
    phase.failed = expected - len(ok)
    if not ok:
        raise RuntimeError(f"no {what} succeeded" + (f":\n{worker.log_tail()}" if worker else ""))
    results = [m["result"] for m in ok]
    phase.jobs = len(ok)
    phase.window_s = max(date_done_epoch(m) for m in ok) - min(r["started_at"] for r in results)
    phase.render_ms = [r["duration_ms"] for r in results]
    phase.pids = len({r["worker_pid"] for r in results})
    phase.cpu_ms = {k: (after[k] - before[k]) * 1000 / len(ok) for k in before}
    phase.gaps_ms = gaps([(r["worker_pid"], r["started_at"], r["duration_ms"]) for r in results])
    return results


def gaps(jobs: list[tuple[int, float, float]]) -> list[float]:
    """(pid, start s, render ms) of every job -> next start - start - render, in ms."""
    out = []
    for pid in {j[0] for j in jobs}:
        mine = sorted(j for j in jobs if j[0] == pid)
        out += [(b[1] - a[1]) * 1000 - a[2] for a, b in zip(mine, mine[1:], strict=False)]
    return out


def cpu_snapshot(renderers: list[int], dispatcher: int | None, redis_pid: int | None
                 ) -> dict[str, float]:
    """CPU seconds used so far by the rendering processes, the dispatcher (None: there is
    none), Redis and this process (the driver: it submits and polls; when it is the
    dispatcher, only there)."""
    out = {"renderers": sum(proc_cpu_s(p) for p in renderers),
           "dispatcher": proc_cpu_s(dispatcher) if dispatcher else 0.0,
           "redis": proc_cpu_s(redis_pid) if redis_pid else 0.0}
    if dispatcher != os.getpid():
        out["driver"] = proc_cpu_s(os.getpid())
    return out


class _ChildrenCpuMonitor(CpuMonitor):
    """:class:`CpuMonitor` that also counts this process's children (the pool) and the
    processes ``also`` (grandchildren)."""

    def __init__(self, sessions: list[int], also: list[int] | None = None) -> None:
        super().__init__(sessions)
        self.also = also or []

    def _our_jiffies(self) -> int:
        total = super()._our_jiffies()
        for pid in {*child_pids(os.getpid()), *self.also}:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(rest[3]) not in self.sessions:
                total += int(rest[11]) + int(rest[12])
        return total


def job_backlog(measured: list[int]) -> list[dict[str, Any]]:
    """``submit_batch``'s jobs for the invoices ``measured``."""
    from pdftasks.samples import sample_invoice

    return [{"template": TEMPLATE, "data": sample_invoice(i), "output": f"inv_{i:05d}.pdf",
             "priority": "normal"} for i in measured]


class PdftasksSetup(WorkerSetup):
    """``pdftasks worker -c N`` (stock settings, a ``--variant``, another tree or another
    concurrency) on its own database of the Redis server, so that the workers of the other
    setups, idle meanwhile, never take its jobs."""

    def __init__(self, args: argparse.Namespace, tmp: Path, server: RedisServer, db: int,
                 variant: str = "", concurrency: int = 0, tree: str = "") -> None:
        self.args, self.tmp, self.server, self.db = args, tmp, server, db
        self.variant, self.tree = variant, tree
        self.c = concurrency or args.concurrency
        label = f"variant {variant}" if variant else "stock settings"
        if concurrency:
            label = f"stock settings, {self.c} processes"
        if tree:
            label = f"the pdftasks of {tree}"
        self.name = f"pdftasks worker -c {self.c} ({label})"
        self.trace_dir = tmp / f"trace-{db}"

    def start(self) -> None:
        from pdftasks import PDFQueueManager, RedisBackend
        from pdftasks.celery_app import queue_names
        from pdftasks.samples import sample_invoice

        c, variant, tree = self.c, self.variant, self.tree
        url = self.server.url(self.db)
        self.manager = manager = PDFQueueManager(backend=RedisBackend(url=url))
        warm_ids = manager.submit_batch(
            [{"template": TEMPLATE, "data": sample_invoice(900_000 + i),
              "output": f"warm_{i:03d}.pdf", "priority": "high"}
             for i in range(2 * c)])
        hostname = f"bench-throughput-{os.getpid()}-{self.db}@localhost"
        self.worker = worker = pdftasks_worker(
            c, hostname, self.tmp / f"worker-{self.db}.log", cwd=self.tmp,
            extra_env={"PDFTASKS_BROKER_URL": url})
        if variant:  # the same worker command line, on _variant_app (see that module)
            worker.argv = [sys.executable, "-m", "celery", "-A", "_variant_app", "worker",
                           "-Q", ",".join(queue_names(manager.settings.queue_namespace)),
                           "-c", str(c), "--prefetch-multiplier", "1", "-O", "fair",
                           "-n", hostname,
                           "-l", "WARNING" if "warning-logs" in variant else "INFO"]
            worker.env.update(BENCH_VARIANT=variant, PYTHONPATH=_pythonpath(str(BENCH_DIR)))
        if tree:  # another checkout's pdftasks (e.g. an older commit) for a same-run comparison
            worker.env["PYTHONPATH"] = _pythonpath(tree)
        if "trace" in variant:
            self.trace_dir.mkdir()
            worker.env["BENCH_TRACE_DIR"] = str(self.trace_dir)
        worker.start()
        worker.wait_ready(celery_ping(manager.app, hostname), timeout=90)
        wait_for_metas(manager.app, warm_ids, timeout=120, worker=worker, poll_s=0.05)
        time.sleep(0.5)  # let the last warm-up's ack and events settle: the worker is idle
        if "events" not in variant.split(",") and not tree:
            wait_task_events_off(worker, variant)

    def backlog(self, measured: list[int]) -> list[Any]:
        return job_backlog(measured)

    def submit(self, backlog: list[Any]) -> tuple[Any, list[str]]:
        # The whole backlog appears at once: submit_batch publishes in one Redis pipeline
        # (up to 500 jobs) after recording the jobs, so the workers find it all queued.
        ids = []
        for start in range(0, len(backlog), 500):
            ids += self.manager.submit_batch(backlog[start:start + 500])
        log(f"pdftasks: {len(ids)} jobs queued on the warm, idle worker")
        return self.manager.app, ids

    def check(self, phase: Phase, metas: list[Any], results: list[dict[str, Any]]) -> None:
        if {r["pages"] for r in results} != {1}:
            raise RuntimeError("expected one-page invoices")
        if "trace" in self.variant:
            phase.split_ms = trace_split(self.trace_dir, {
                m["task_id"] for m in metas if m and m.get("status") == "SUCCESS"})
            phase.render_cpu_ms = phase.split_ms.pop(RENDER_CPU)


class CeilingSetup(Setup):
    """``--also-ceiling``: N processes, each its own consumer of the queues, with no worker
    main process (``_ceiling.py``: upper bounds for that design, not a way to run
    pdftasks), on its own database of the Redis server. Default: N spawned processes, one
    script does all of a job's Redis work (one round trip). ``task``: one spawned parent
    builds the app and forks the N processes, which run ``generate_pdf`` as a pool process
    does (three round trips per job); with ``one_script``, the end script of a job also
    takes and begins the next one (one round trip per job while messages wait)."""

    def __init__(self, args: argparse.Namespace, tmp: Path, server: RedisServer, db: int,
                 task: bool = False, one_script: bool = False) -> None:
        self.args, self.tmp, self.server, self.db, self.task = args, tmp, server, db, task
        self.one_script = one_script
        self.c = args.concurrency
        self.name = (f"ceiling: consumer per process, {self.c}, "
                     + ("one script per job" if not task
                        else "the task, one script per job" if one_script
                        else "the task as it is"))
        self.procs: list[Any] = []
        self.kids: list[int] = []

    def start(self) -> None:
        import _ceiling

        from pdftasks import PDFQueueManager, RedisBackend
        from pdftasks.celery_app import queue_names

        url = self.server.url(self.db)
        self.manager = manager = PDFQueueManager(backend=RedisBackend(url=url))
        ns = manager.settings.queue_namespace
        ctx = multiprocessing.get_context("spawn")
        ready = [ctx.Event() for _ in range(self.c)]
        if self.task:  # the task's own settings: PDFTASKS_* as for the stock worker
            # Not a daemon: it has children. stop() terminates it, and it them.
            self.procs = [ctx.Process(target=_ceiling.supervise_tasks, daemon=False, args=(
                url, ns, queue_names(ns), str(self.tmp / f"ceiling-{self.db}.log"), ready,
                self.one_script))]
        else:
            self.procs = [ctx.Process(target=_ceiling.consume, daemon=True, args=(
                url, ns, queue_names(ns), str(self.tmp / "out-ceiling"),
                str(ROOT / "templates"), manager.settings.result_expires_s, event))
                for event in ready]
        for proc in self.procs:
            proc.start()
        deadline = time.monotonic() + 90
        for event in ready:  # every process warm before the warm-up jobs
            while not event.wait(0.5):
                if time.monotonic() > deadline or not all(p.is_alive() for p in self.procs):
                    raise RuntimeError("a ceiling process did not start")
        # The rendering processes: the task row's are children of its one parent.
        self.kids = [k for p in self.procs for k in child_pids(p.pid)] if self.task \
            else [p.pid for p in self.procs]
        warm = manager.submit_batch(job_backlog(list(range(900_000, 900_000 + 2 * self.c))))
        wait_for_metas(manager.app, warm, timeout=120, worker=self, poll_s=0.05)

    def alive(self) -> bool:
        """For ``wait_for_metas``: a process that died would leave its job unfinished."""
        return all(proc.is_alive() for proc in self.procs) and all(
            os.path.exists(f"/proc/{pid}") for pid in self.kids)

    def log_tail(self) -> str:
        return "a ceiling process exited (its traceback is on this process's stderr)"

    def run(self, measured: list[int]) -> Phase:
        assert self.server.proc is not None
        phase = Phase(self.name, processes=self.c)
        backlog = job_backlog(measured)
        kids = self.kids
        cpu = _ChildrenCpuMonitor([self.server.proc.pid], also=kids)
        cpu.start()
        before = cpu_snapshot(kids, None, self.server.proc.pid)
        ids = self.manager.submit_batch(backlog)
        metas = wait_for_metas(self.manager.app, ids, timeout=self.args.timeout, worker=self)
        after = cpu_snapshot(kids, None, self.server.proc.pid)
        phase.other_cpu = cpu.foreign_cores()
        results = fill_phase(phase, metas, len(ids), before, after, self, "ceiling job")
        if {r["pages"] for r in results} != {1}:
            raise RuntimeError("expected one-page invoices")
        return phase

    def _signal(self, sig: int) -> None:
        for pid in {*(p.pid for p in self.procs if p.is_alive()), *self.kids}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        for proc in self.procs:
            proc.terminate()
            proc.join(10)
        self.procs, self.kids = [], []


def wait_task_events_off(worker: Any, variant: str) -> None:
    """Wait until a new worker stopped sending task events (``PDFTASKS_TASK_EVENTS``
    on-demand, the default: on for the first ``TASK_EVENTS_LEASE_S`` of a worker, then only
    while a monitor asks; none runs here), so the phase measures a worker in its steady
    state: until it logs so (at INFO), or one lease (``warning-logs`` variant)."""
    from pdftasks.contrib.monitoring import TASK_EVENTS_LEASE_S

    log("waiting for the worker's task events to go off (no monitor asks for them)")
    if "warning-logs" in variant:
        time.sleep(TASK_EVENTS_LEASE_S + 1.0)
        return
    deadline = time.monotonic() + TASK_EVENTS_LEASE_S + 30.0
    while "task events off" not in worker.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker still sends task events:\n{worker.log_tail()}")
        time.sleep(0.2)


#: ``--variant trace``: the steps between two renders of one process, in order; each
#: starts where the one before ended, so they add up to the time between the renders.
#: ``next:`` marks are the process's next job's; ``next:m_write`` is the main process's
#: first write to this process's pipe after the acknowledgement.
TRACE_STEPS = [
    ("render end -> on_success", "render_end", "on_success",
     "the task returns; Celery's tracer holds the SUCCESS result for the end script; log line"),
    ("end script", "on_success", "emit",
     "JobStore.finish: COMPLETED, its event, counters and the SUCCESS result (one Lua script)"),
    ("event + hooks", "emit", "on_success_end", "metrics, monitoring's log line, webhooks"),
    ("on_success end -> postrun", "on_success_end", "postrun",
     "after_return, task_postrun receivers"),
    ("result to the main process", "postrun", "m_result",
     "the pool process returns; its result crosses the pipe; the main process reads it"),
    ("main: acknowledgement", "m_result", "m_result_end",
     "the message acknowledged (its unacked record goes with the next command), request ended"),
    ("main: next message written", "m_result_end", "next:m_write",
     "the event loop writes the next message (taken early, or now) to the free process"),
    ("pipe to the pool process", "next:m_write", "next:k_in",
     "the pool process wakes up and reads the message"),
    ("tracer set-up", "next:k_in", "next:prerun", "Celery's tracer: the request, task_prerun"),
    ("start script + task set-up", "next:prerun", "next:render_start",
     "JobStore.begin (attempt count, PROCESSING, STARTED: one Lua script), task set-up"),
]


#: ``--variant trace``: extra rows of the split (not ms, not in the total).
TRIPS_POOL = "Redis round trips, pool process"
TAKEN_EARLY = "next message taken before the result came back"
RENDER_CPU = "render CPU"
#: ``CPU_OF + step``: the pool process's CPU in a step where both marks are its own; and
#: the CPU it uses from returning a result to taking its next message (``HAND_OVER``).
CPU_OF = "cpu: "
HAND_OVER = ("pool process: postrun -> next message", "postrun", "next:k_in", "")


def trace_split(trace_dir: Path, measured: set[str]) -> dict[str, list[float]]:
    """Per step, ms per job, from the trace files of the worker's processes (only jobs
    with every mark, so that the steps add up: ``total``); the Redis round trips per job of
    a pool process (prerun to the next job's prerun); 1/0 per job for ``TAKEN_EARLY``;
    the CPU ms of each render (``RENDER_CPU``, from the pool processes' CPU clocks)."""
    steps: dict[str, dict[str, float]] = {}
    cpu: dict[str, dict[str, float]] = {}
    trips: dict[str, int] = {}
    order: dict[str, list[str]] = {}
    writes: dict[str, list[float]] = {}  # pool process pid -> the main process's writes
    for path in trace_dir.glob("trace-*.log"):
        pid = path.stem.rsplit("-", 1)[1]
        for line in path.read_text().splitlines():
            parts = line.split()
            stamp, step, task_id = parts[:3]
            count = parts[3] if len(parts) > 3 else "0"  # Redis round trips so far
            clock = parts[4] if len(parts) > 4 else "nan"  # the process's CPU clock
            if not step.startswith("m_"):  # a pool process's mark: its CPU clock
                cpu.setdefault(task_id, {})[step] = float(clock)
            if step == "m_write":
                writes.setdefault(task_id, []).append(float(stamp))
                continue
            steps.setdefault(task_id, {})[step] = float(stamp)
            if step == "k_in":
                order.setdefault(pid, []).append(task_id)
            if step == "prerun":
                trips[task_id] = int(count)
    out: dict[str, list[float]] = {name: [] for name, *_ in TRACE_STEPS}
    out.update({"total": [], TRIPS_POOL: [], TAKEN_EARLY: []})
    out[RENDER_CPU] = [(c["render_end"] - c["render_start"]) * 1000 for t, c in cpu.items()
                       if t in measured and not math.isnan(c.get("render_end", math.nan)
                                                           - c.get("render_start", math.nan))]
    for pid, ids in order.items():
        ids.sort(key=lambda t: steps[t]["k_in"])
        stamps = sorted(writes.get(pid, []))
        for a, b in zip(ids, ids[1:], strict=False):
            if a not in measured or b not in measured:
                continue
            here = _with_next(steps[a], steps[b])
            if "m_result_end" in here and "next:k_in" in here:
                after = [t for t in stamps if here["m_result_end"] <= t <= here["next:k_in"]]
                if after:
                    here["next:m_write"] = after[0]
            if not all(start in here and end in here for _, start, end, _ in TRACE_STEPS):
                continue
            for name, start, end, _ in TRACE_STEPS:
                out[name].append((here[end] - here[start]) * 1000)
            clock = _with_next(cpu.get(a, {}), cpu.get(b, {}))
            for name, start, end, _ in [*TRACE_STEPS, HAND_OVER]:
                if start in clock and end in clock and not math.isnan(clock[end] - clock[start]):
                    out.setdefault(CPU_OF + name, []).append((clock[end] - clock[start]) * 1000)
            out["total"].append((here["next:render_start"] - here["render_end"]) * 1000)
            if a in trips and b in trips:
                out[TRIPS_POOL].append(trips[b] - trips[a])
            if "next:m_dispatched" in here:
                out[TAKEN_EARLY].append(float(here["next:m_dispatched"] < here["m_result"]))
    return out


def _with_next(marks: dict[str, float], following: dict[str, float]) -> dict[str, float]:
    """One job's marks and, as ``next:<step>``, those of its process's next job."""
    return {**marks, **{f"next:{k}": v for k, v in following.items()}}


def _cpu_of(split: dict[str, list[float]], step: str) -> str:
    """The pool process's mean CPU ms in ``step`` of a trace split, or "-"."""
    values = split.get(CPU_OF + step)
    return f"{statistics.mean(values):.2f}" if values else "-"


def combine(phases: list[Phase]) -> list[Phase]:
    """One phase per setup: the rounds of a setup added up (jobs, windows, samples)."""
    direct = {p.round: p.rate for p in phases if p.name.startswith("direct")}
    out: dict[str, Phase] = {}
    for p in phases:
        total = out.setdefault(p.name, Phase(p.name, processes=p.processes, window_s=0.0))
        total.round_ratios.append(p.rate / direct[p.round])
        weight = p.jobs
        total.cpu_ms = {k: (total.cpu_ms.get(k, 0.0) * total.jobs + v * weight)
                        / (total.jobs + weight) for k, v in p.cpu_ms.items()}
        total.other_cpu = p.other_cpu if math.isnan(total.other_cpu) else (
            (total.other_cpu * total.window_s + p.other_cpu * p.window_s)
            / (total.window_s + p.window_s))
        total.jobs += p.jobs
        total.window_s += p.window_s
        total.render_ms += p.render_ms
        total.gaps_ms += p.gaps_ms
        total.failed += p.failed
        total.render_cpu_ms += p.render_cpu_ms
        for k, v in p.split_ms.items():
            total.split_ms.setdefault(k, []).extend(v)
    return list(out.values())


def report(args: argparse.Namespace, phases: list[Phase], seconds: float) -> bool:
    phases = combine(phases)
    ours = next(p for p in phases if p.name.endswith("(stock settings)"))
    rows = []
    for p in phases:
        rows.append([p.name, p.jobs, f"{p.window_s:.2f}", f"{p.rate:.2f}",
                     f"{statistics.median(p.round_ratios):.1%}",
                     f"{statistics.mean(p.render_ms):.1f}",
                     f"{statistics.median(p.gaps_ms):.1f}", f"{p.busy:.1%}",
                     f"{p.other_cpu:.2f}"])
    print()
    print(f"throughput: {args.jobs} one-page invoices per setup in {args.rounds} alternating "
          f"round(s), {args.concurrency} processes on {os.cpu_count()} CPUs, from a backlog "
          "(warm processes)")
    print(f"machine: {machine_description()}")
    print()
    print_table(["setup", "PDFs", "window s", "PDFs/s", "of limit", "render ms",
                 "between ms", "busy", "other CPU"], rows)
    ratio = statistics.median(ours.round_ratios)
    met = ratio >= TARGET_RATIO
    print("render ms = mean duration_ms of generate_pdf; between ms = median time a job costs "
          "its process outside generate_pdf\n(next job's start - this job's start - render: "
          "task code, job records, results, ack, fetching the next job);\nbusy = share of the "
          "processes' time inside generate_pdf; PDFs/s = PDFs / sum of the rounds' windows;\n"
          "of limit = median over the rounds of PDFs/s / the direct pool's PDFs/s in the "
          "same round")
    if len(phases) > 2:
        print("rows with 'variant', 'ceiling' or more processes than the pool are informative "
              "(what an option costs, what another design would reach, what N+1 processes "
              "recover); the target compares the first two")
    print()
    print("CPU per job (ms, /proc, measured part): renderers = the rendering processes "
          "(render + task code), of which outside the render = renderers - the CPU of "
          "generate_pdf\n(its own clock; direct pool and trace rows only), dispatcher = pool "
          "parent / worker main process,\ndriver = this benchmark (submits, polls; the pool's "
          "parent: in dispatcher)")
    cpu_rows = []
    for p in phases:
        c = p.cpu_ms
        driver = f"{c['driver']:.1f}" if "driver" in c else "-"
        outside = (f"{c['renderers'] - statistics.mean(p.render_cpu_ms):.2f}"
                   if p.render_cpu_ms else "-")
        cpu_rows.append([p.name, f"{c['renderers']:.1f}", outside, f"{c['dispatcher']:.1f}",
                         f"{c['redis']:.1f}", driver, f"{sum(c.values()):.1f}"])
    print_table(["setup", "renderers", "outside the render", "dispatcher", "redis", "driver",
                 "total"], cpu_rows)
    print()
    for p in phases:
        if not p.split_ms:
            continue
        print(f"Between two renders of one process, {p.name} (ms per job, from trace "
              "timestamps):")
        if not p.split_ms["total"]:
            print("  no job had every mark (Celery's private pool names changed?)\n")
            continue
        split_rows = [[name, f"{percentile(p.split_ms[name], 50):.2f}",
                       f"{statistics.mean(p.split_ms[name]):.2f}",
                       f"{percentile(p.split_ms[name], 90):.2f}", _cpu_of(p.split_ms, name)]
                      for name, *_ in [*TRACE_STEPS, ("total",)]]
        print_table(["step", "p50", "mean", "p90", "pool process CPU"], split_rows)
        steps_cpu = [CPU_OF + name for name, *_ in [*TRACE_STEPS, HAND_OVER]
                     if p.split_ms.get(CPU_OF + name)]
        if steps_cpu:
            print(f"  pool process CPU = mean ms of its own CPU clock in the steps between its "
                  f"own marks; returning the result and taking the next message in: "
                  f"{_cpu_of(p.split_ms, HAND_OVER[0])}; all of it between two renders: "
                  f"{sum(statistics.mean(p.split_ms[k]) for k in steps_cpu):.2f}")
        print(f"  {len(p.split_ms['total'])} jobs; the means add up to the total's mean, "
              "the medians need not")
        if p.split_ms.get(TRIPS_POOL):
            pool = percentile(p.split_ms[TRIPS_POOL], 50)
            print(f"  Redis round trips per job of a pool process: {pool:.0f} (median)")
        if p.split_ms.get(TAKEN_EARLY):
            early_share = statistics.mean(p.split_ms[TAKEN_EARLY])
            print(f"  {TAKEN_EARLY}: {early_share:.0%} of the jobs (early fetch)")
        for name, _, _, what in TRACE_STEPS:
            print(f"  {name}: {what}")
        print()
    if args.rounds > 1:
        print("of limit per round: " + "; ".join(
            f"{p.name.split(' (')[-1].rstrip(')')} " + " ".join(
                f"{r:.1%}" for r in p.round_ratios) for p in phases[1:]))
    print(f"pdftasks / direct pool = {ratio:.1%} (median of {len(ours.round_ratios)} rounds; "
          f"target >= {TARGET_RATIO:.0%}: {'met' if met else 'NOT met'})")
    for p in phases:
        if p.name.startswith("naive"):
            ahead = statistics.median(o / n for o, n in zip(ours.round_ratios, p.round_ratios,
                                                            strict=True))
            print(f"pdftasks / {p.name} = {ahead:.2f}x (median of the rounds' PDFs/s ratios; "
                  f"{'ahead' if ahead > 1 else 'NOT ahead'})")
    direct = phases[0]
    print(f"at equal render speed (busy share / the pool's): {ours.busy / direct.busy:.1%}; "
          "steadier than PDFs/s when the machine's speed drifts between phases")
    for p in phases:
        if p.name.startswith("ceiling"):
            print(f"{p.name} / direct pool = {statistics.median(p.round_ratios):.1%}, "
                  f"{p.busy / direct.busy:.1%} at equal render speed (an upper bound for "
                  "that design, not pdftasks)")
    side = {p.name: sum(v for k, v in p.cpu_ms.items() if k != "renderers") for p in phases}
    extra = side[ours.name] - side[direct.name]
    render = statistics.mean(direct.render_ms)
    print(f"CPU per job outside the rendering processes: {side[ours.name]:.1f} ms against the "
          f"pool's {side[direct.name]:.1f} ({extra:+.1f} ms, {extra / render:.1%} of a "
          f"{render:.0f} ms render); with {direct.processes} processes on "
          f"{os.cpu_count()} CPUs it is taken from the renders")
    if any(p.failed for p in phases):
        print(f"WARNING: {sum(p.failed for p in phases)} jobs failed or did not finish")
    if any(p.other_cpu > 0.25 for p in phases):
        print("WARNING: other programs used the CPUs while measuring (other CPU > 0.25): "
              "absolute numbers are low and the ratio holds only if that load was steady. "
              "Re-run on an idle machine.")
    print(f"load average at end: {load_average()}; total run time {seconds:.0f} s")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="PDFs/s through pdftasks workers vs a bare process pool (the limit).",
        epilog="Methodology: see the docstring at the top of this file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500, help="invoices per setup")
    parser.add_argument("-c", "--concurrency", type=int, default=os.cpu_count() or 2,
                        help="processes in each setup")
    parser.add_argument("--rounds", type=int, default=10,
                        help="alternating rounds the jobs are split over (against slow drifts "
                             "of other load)")
    parser.add_argument("--variant", action="append", default=[],
                        help="also run pdftasks with options changed (repeatable; see "
                             "_variant_app.py: no-events, no-track-started, no-extended, "
                             "warning-logs, trace; comma-combined)")
    parser.add_argument("--also-concurrency", type=int, default=0,
                        help="also run stock pdftasks with this many processes (0 = no)")
    parser.add_argument("--also-tree", default="", metavar="PATH",
                        help="also run the pdftasks worker of another checkout (its root on "
                             "PYTHONPATH), e.g. the commit before a change")
    parser.add_argument("--also-ceiling", action="store_true",
                        help="also run _ceiling.py: a consumer in each process, no main "
                             "process; one row with one Redis script per job, one with the "
                             "task as it is, one with the task and one round trip per job "
                             "(upper bounds for that design)")
    parser.add_argument("--no-naive", action="store_true",
                        help="leave out the two naive rows (stock Celery task, process pool)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="longest wait for the pdftasks backlog, in seconds")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.rounds < 1 or args.jobs < args.rounds * 10:
        parser.error("--concurrency and --rounds must be >= 1, --jobs >= 10 per round")

    begin = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pdftasks-throughput-"))
    server = RedisServer(tmp / "redis")
    phases: list[Phase] = []
    running: list[Setup] = []
    try:
        with sigterm_as_exit():
            server.start()
            use_pdftasks_env(tmp, server.url(0), output="out-pdftasks")
            ids = list(range(1, args.jobs + 1))
            setups: list[Setup] = [PoolSetup(args, tmp),
                                   PdftasksSetup(args, tmp, server, db=0)]
            if not args.no_naive:  # (database 1: the stock Celery app's)
                setups += [StockNaiveSetup(args, tmp, server), PoolSetup(args, tmp, naive=True)]
            extra = [{"variant": v} for v in args.variant]
            if args.also_tree:
                extra.append({"tree": args.also_tree})
            if args.also_concurrency:
                extra.append({"concurrency": args.also_concurrency})
            setups += [PdftasksSetup(args, tmp, server, db=2 + k, **kw)
                       for k, kw in enumerate(extra)]
            if args.also_ceiling:
                setups += [CeilingSetup(args, tmp, server, db=2 + len(extra) + k, task=task,
                                        one_script=one)
                           for k, (task, one) in enumerate(
                               ((False, False), (True, False), (True, True)))]
            for setup in setups:
                log(f"starting: {setup.name}")
                running.append(setup)
                setup.start()
                setup.pause()
            for r in range(args.rounds):
                jobs = ids[r::args.rounds]
                log(f"round {r + 1}/{args.rounds}: {len(jobs)} invoices per setup")
                for k in range(len(setups)):  # the order rotates every round
                    setup = setups[(r + k) % len(setups)]
                    setup.resume()
                    try:
                        phase = setup.run(jobs)
                    finally:
                        setup.pause()
                    phase.round = r
                    phases.append(phase)
                    log(f"{setup.name}: {phase.rate:.2f} PDFs/s")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        for setup in reversed(running):
            try:
                setup.stop()
            except Exception as exc:  # the others are stopped all the same
                log(f"stopping {setup.name} failed: {exc!r}")
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    met = report(args, phases, time.monotonic() - begin)
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
