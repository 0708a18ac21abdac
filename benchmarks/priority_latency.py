#!/usr/bin/env python
"""How long does an urgent PDF job wait behind a backlog of low-priority jobs?

Acceptance criterion: submit 1,000 low jobs, then urgent jobs, and report how long each
urgent job waited before a worker started it (p50/p95), next to a stock Celery setup (one
queue, default prefetch) in the same run. Target with 2 worker processes on 2 cores:
pdftasks p95 wait <= one render time + 50 ms.

Methodology
-----------
* A private ``redis-server`` (127.0.0.1, free port, no persistence) is started for the run
  and stopped at the end (also on Ctrl-C / SIGTERM / errors). pdftasks uses db 0, the stock
  setup db 1. Worker logs, PDFs and Redis files go to a temporary directory, removed at the
  end.
* Both setups run one after the other, each with one worker of ``--concurrency`` (2)
  processes, the same one-page invoice (``templates/invoice.html`` with
  ``pdftasks.samples.sample_invoice(i)``) and the same renderer (``pdftasks.render.PDFService``,
  warmed up in every worker child). Each worker is started, pinged until it answers, then
  given ``2 x concurrency`` warm-up jobs (not measured) so templates and CSS are compiled.
* pdftasks: ``python -m pdftasks worker -c 2`` (four queues consumed in strict order,
  prefetch 1, late acks). ``--low`` jobs (1000) are queued with ``priority="low"``; then
  ``--urgent`` jobs (20) are submitted *one at a time*: submit, wait for the result, sleep
  ``--gap`` (0.3 s) +-50 % (uniform, fixed seed), next. The jitter keeps the submissions
  from locking onto the workers' render cycle (renders take a near-constant time, so a
  fixed pause would hit the same point of the current render every time). The low backlog
  keeps both processes busy throughout (its length at each urgent submission is recorded;
  the run warns if it ever reached 0).
* stock Celery: ``benchmarks/_stock_celery.py``, a plain ``Celery()`` with defaults (one
  ``celery`` queue, prefetch multiplier 4, early acks) and a task calling the same renderer,
  run as ``celery -A _stock_celery worker -c 2``. Same low backlog, then urgent jobs into the
  same (only) queue. They are submitted at the *same cadence* as the pdftasks urgent jobs
  (the mean interval measured in the pdftasks phase) *without* waiting for each one: in a
  FIFO queue, waiting for the first urgent job would drain the whole backlog, and every
  later urgent job would then be measured on an idle worker. Results are read afterwards;
  the wait is bounded by the time the backlog needs (1.5 x estimated drain time + 30 s);
  an urgent job not started by then is reported with a lower bound (">").
* wait = ``started_at`` (``time.time()`` at the start of the task body, in the worker
  child) - ``time.time()`` just before ``.delay()`` in this process (same host, same clock).
  It includes publishing, the queue wait, the worker's reservation and the hand-over to a
  pool process.
* render(ms) = mean ``duration_ms`` (check + render + atomic write) of the low jobs that
  completed during the phase, i.e. measured under the same load. target = render + 50 ms.
* Percentiles: linear interpolation between closest ranks (numpy's default).
* Noise check: the CPU time used by *other* programs during each measured phase (from
  /proc) is printed; above 0.25 cores the phase is flagged, since both render times and
  waits are then inflated (e.g. a test suite running at the same time).

SQS mode (``--broker sqs``)
--------------------------
* After the pdftasks phase on Redis (the reference; no stock phase), the same measurement
  runs three times with SQS as the broker, served by a private ``moto_server`` on
  127.0.0.1. What is measured is the broker's queue order, so job records and results
  stay on the reference Redis (db 2) by default: a worker child does its job's
  bookkeeping before it is free again, and moto's DynamoDB copies the whole table for
  every transaction (real DynamoDB answers in milliseconds), which would measure moto.
  ``--sqs-dynamodb`` puts them on DynamoDB (moto) as in a full AWS deployment. PDFs go
  to a local directory. Each phase has its own queue namespace (four SQS queues,
  ``--sqs-wait`` s long polling) and ``--concurrency`` worker processes in total:
  1. pdftasks' priority polling (``pdftasks.brokers.sqs.Channel``): a free process polls the
     queues urgent first;
  2. kombu's own polling (``PDFTASKS_SQS_PRIORITY_POLLING=false``): one independent loop
     per queue;
  3. a dedicated group: one process serving only urgent and high, the rest all queues.
  Each phase queues ``--sqs-low`` (400) low jobs through the batch API (with
  ``--sqs-dynamodb``: in a fresh table), and also prints the urgent jobs' submit time
  (record + publish) and the wait after it.
* Readiness is read from the worker log (SQS has no remote control); the low backlog from
  the queue's ``ApproximateNumberOfMessages``.
* moto answers in about a millisecond on loopback; real SQS and DynamoDB add network round
  trips (typically 5-30 ms each in-region) to every poll and transition, so real waits are
  somewhat longer. The comparison between the setups is what this mode is for.

Run: ``.venv/bin/python benchmarks/priority_latency.py`` (about 1-2 minutes with defaults;
``--low 200 --urgent 5`` for a quick check; ``--broker sqs`` about 4-5 minutes).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    CpuMonitor,
    MotoServer,
    RedisServer,
    WorkerProcess,
    celery_ping,
    log_ready,
    mean,
    percentile,
    print_table,
    release_results,
    sigterm_as_exit,
    use_pdftasks_env,
)

TEMPLATE = "invoice.html"
TARGET_SLACK_MS = 50.0
#: DynamoDB table of the SQS phases (on the private moto_server).
SQS_TABLE = "pdftasks-bench"
#: Credentials moto accepts; only ever sent to the private moto_server on 127.0.0.1.
AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class SetupResult:
    name: str
    waits_ms: list[float] = field(default_factory=list)
    censored: int = 0                      # urgent jobs not started within the bound
    failed: int = 0
    low_render_ms: list[float] = field(default_factory=list)
    urgent_render_ms: list[float] = field(default_factory=list)
    backlog_at_submit: list[int] = field(default_factory=list)
    submit_times: list[float] = field(default_factory=list)
    lows_done: int = 0
    low_total: int = 0
    seconds: float = 0.0
    foreign_cores: float = math.nan        # CPUs used by other programs while measuring
    urgent_log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)   # .delay() until it returned
    pickup_ms: list[float] = field(default_factory=list)   # wait - submit

    @property
    def render_ms(self) -> float:
        return mean(self.low_render_ms or self.urgent_render_ms)

    def interval_s(self) -> float:
        t = self.submit_times
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else math.nan


def result_metas(app: Any, results: list[Any]) -> list[dict[str, Any] | None]:
    """Result metadata of many jobs, by one MGET per 500 (None = no result stored yet)."""
    if not results:
        return []
    backend = app.backend
    keys = [backend.get_key_for_task(r.id) for r in results]
    # Redis: MGET on its client; other key-value backends (DynamoDB on SQS): their mget.
    client = getattr(backend, "client", None)
    mget = client.mget if hasattr(client, "mget") else backend.mget
    out: list[dict[str, Any] | None] = []
    for i in range(0, len(keys), 500):
        for raw in mget(keys[i:i + 500]):
            out.append(backend.decode(raw) if raw is not None else None)
    return out


def low_durations(app: Any, results: list[Any]) -> list[float]:
    return [m["result"]["duration_ms"] for m in result_metas(app, results)
            if m and m.get("status") == "SUCCESS"]


def warm_up(submit: Any, n: int, timeout: float = 120.0) -> None:
    from pdftasks.samples import sample_invoice

    jobs = [submit(sample_invoice(9000 + i), f"warmup_{i:02d}.pdf") for i in range(n)]
    for job in jobs:
        job.get(timeout=timeout)


def run_pdftasks(args: argparse.Namespace, redis_url: str, tmp: Path,
                 redis_session: int) -> SetupResult:
    import redis

    from pdftasks.celery_app import app, queue_name
    from pdftasks.samples import sample_invoice

    try:
        from pdftasks import generate_pdf  # the public name
    except ImportError:  # older layout: defined in pdftasks.worker.tasks
        from pdftasks.worker.tasks import generate_pdf  # type: ignore[attr-defined,no-redef]

    res = SetupResult(f"pdftasks (4 queues, strict, prefetch 1, c={args.concurrency})")
    started = time.monotonic()
    hostname = f"bench-pdftasks-{os.getpid()}@localhost"
    env = {k: v for k, v in os.environ.items() if k.startswith("PDFTASKS_")}
    worker = WorkerProcess(
        [sys.executable, "-m", "pdftasks", "worker", "-c", str(args.concurrency),
         "-l", "WARNING", "-n", hostname],
        env=env, log_path=tmp / "pdftasks-worker.log", cwd=tmp)
    r = redis.Redis.from_url(redis_url)
    low_key = queue_name("low", app.pdftasks_settings.queue_namespace)
    rng = random.Random(args.seed)
    lows: list[Any] = []
    held: list[Any] = []  # every AsyncResult sent, to release at the end
    try:
        worker.start()
        log(f"pdftasks: worker ready in {worker.wait_ready(celery_ping(app, hostname)):.1f} s")

        def submit(data: dict[str, Any], name: str, priority: str = "normal") -> Any:
            held.append(generate_pdf.delay(template=TEMPLATE, data=data,
                                           output_filename=name, priority=priority))
            return held[-1]

        warm_up(submit, 2 * args.concurrency)
        assert worker.proc is not None
        cpu = CpuMonitor([worker.proc.pid, redis_session])
        cpu.start()
        t0 = time.monotonic()
        lows[:] = [submit(sample_invoice(i), f"low_{i:04d}.pdf", "low")
                   for i in range(1, args.low + 1)]
        res.low_total = len(lows)
        log(f"pdftasks: queued {len(lows)} low jobs in {time.monotonic() - t0:.1f} s; "
            f"submitting {args.urgent} urgent jobs one at a time")
        urgent_phase(args, res, submit, lambda: int(r.llen(low_key)), rng)
        res.foreign_cores = cpu.foreign_cores()
        backlog_after = int(r.llen(low_key))
        res.backlog_at_submit.append(backlog_after)
        res.low_render_ms = low_durations(app, lows)
        res.lows_done = len(res.low_render_ms)
        purged = app.control.purge()
        log(f"pdftasks: done; {res.lows_done} low jobs rendered, {backlog_after} still "
            f"queued (purged {purged})")
    finally:
        # While Redis still runs: see release_results.
        release_results(app, held)
        held.clear()
        lows.clear()
        try:
            worker.stop()
        finally:
            r.close()
    res.seconds = time.monotonic() - started
    return res


def urgent_phase(args: argparse.Namespace, res: SetupResult, submit: Any,
                 backlog: Any, rng: random.Random) -> None:
    """Submit ``--urgent`` jobs one at a time (submit, wait for the result, sleep ``--gap``
    +-50 %), recording each wait (worker start - submit time)."""
    from pdftasks.samples import sample_invoice

    for j in range(args.urgent):
        res.backlog_at_submit.append(backlog())
        data = sample_invoice(args.low + 1 + j)
        submitted = time.time()
        job = submit(data, f"urgent_{j:03d}.pdf", "urgent")
        returned = time.time()
        res.submit_times.append(submitted)
        res.submit_ms.append((returned - submitted) * 1000)
        try:
            out = job.get(timeout=args.urgent_timeout)
        except Exception as exc:  # a timeout or a failed render
            res.failed += 1
            res.notes.append(f"urgent job {j} failed: {type(exc).__name__}: {exc}")
            continue
        res.waits_ms.append((out["started_at"] - submitted) * 1000)
        res.pickup_ms.append((out["started_at"] - returned) * 1000)
        res.urgent_render_ms.append(out["duration_ms"])
        res.urgent_log.append(
            f"urgent {j:2d}: wait {res.waits_ms[-1]:6.1f} ms, render "
            f"{out['duration_ms']:6.1f} ms, pid {out.get('worker_pid')}, "
            f"low backlog {res.backlog_at_submit[-1]}")
        time.sleep(rng.uniform(0.5, 1.5) * args.gap)


def run_pdftasks_sqs(args: argparse.Namespace, moto: MotoServer, tmp: Path, name: str,
                     groups: list[tuple[str | None, int]], overrides: dict[str, Any],
                     other_sessions: list[int], redis_url: str) -> SetupResult:
    """The pdftasks phase on SQS (moto_server): worker ``groups`` of (priorities, processes),
    PDFs in a local directory (as on Redis). Job records and results on the reference
    Redis (db 2), or on DynamoDB with ``--sqs-dynamodb``."""
    import uuid

    from pdftasks.awsclient import client
    from pdftasks.brokers.sqs import queue_attributes
    from pdftasks.celery_app import GENERATE_PDF, create_app, queue_name
    from pdftasks.client import submit_jobs
    from pdftasks.contrib.aws import ensure_queues, ensure_table
    from pdftasks.samples import sample_invoice
    from pdftasks.settings import Settings, get_settings

    res = SetupResult(name)
    started = time.monotonic()
    ns = f"b{uuid.uuid4().hex[:8]}"
    # A fresh table per phase: moto copies a whole table for every transaction, so a
    # table that grew in earlier phases would slow this one down (DynamoDB does not).
    s = Settings(**{**get_settings().model_dump(), "broker_url": "sqs://",
                    "result_backend": None, "job_store_url": None,
                    "aws_endpoint_url": moto.url, "aws_region": "us-east-1",
                    "queue_namespace": ns, "dynamodb_table": f"{SQS_TABLE}-{ns}",
                    "storage": "",
                    "sqs_wait_time_s": args.sqs_wait, "output_dir": tmp / f"output-{ns}",
                    **({} if args.sqs_dynamodb else {"job_store_url": redis_url,
                                                     "result_backend": redis_url}),
                    **overrides})
    if args.sqs_dynamodb:
        ensure_table(s)
    urls = ensure_queues(s)
    app = create_app(s)
    task = app.tasks[GENERATE_PDF]
    env = {**s.to_env(), **AWS_TEST_CREDENTIALS}
    workers = []
    for i, (queues, concurrency) in enumerate(groups):
        argv = [sys.executable, "-m", "pdftasks", "worker", "-c", str(concurrency),
                "-l", "INFO", "-n", f"bench-sqs-{ns}-{i}@localhost"]
        if queues:
            argv += ["--queues", queues]
        workers.append(WorkerProcess(argv, env=env, log_path=tmp / f"sqs-{ns}-{i}.log",
                                     cwd=tmp))
    low_queue = queue_name("low", ns)
    rng = random.Random(args.seed)
    lows: list[Any] = []
    held: list[Any] = []
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            log(f"{name}: worker ready in {worker.wait_ready(log_ready(worker)):.1f} s")

        def submit(data: dict[str, Any], filename: str, priority: str = "normal") -> Any:
            held.append(task.delay(template=TEMPLATE, data=data, output_filename=filename,
                                   priority=priority))
            return held[-1]

        warm_up(submit, 2 * args.concurrency)
        cpu = CpuMonitor([w.proc.pid for w in workers if w.proc] + other_sessions)
        cpu.start()
        t0 = time.monotonic()
        # The batch API: records in transactions of 80 (one per job would make moto copy
        # the table a thousand times); the messages are the same as .delay()'s.
        ids = submit_jobs(app, [{"template": TEMPLATE, "data": sample_invoice(i),
                                 "output": f"low_{i:04d}.pdf", "priority": "low"}
                                for i in range(1, args.sqs_low + 1)])
        lows[:] = [app.AsyncResult(job_id) for job_id in ids]
        res.low_total = len(lows)
        log(f"{name}: queued {len(lows)} low jobs in {time.monotonic() - t0:.1f} s; "
            f"submitting {args.urgent} urgent jobs one at a time")
        urgent_phase(args, res, submit, lambda: queue_attributes(s)[low_queue].waiting, rng)
        res.foreign_cores = cpu.foreign_cores()
        backlog_after = queue_attributes(s)[low_queue].waiting
        res.backlog_at_submit.append(backlog_after)
        res.low_render_ms = low_durations(app, lows)
        res.lows_done = len(res.low_render_ms)
        sqs = client("sqs", s)
        for url in urls.values():
            sqs.purge_queue(QueueUrl=url)
        log(f"{name}: done; {res.lows_done} low jobs rendered, {backlog_after} still "
            "queued (purged)")
    finally:
        held.clear()
        lows.clear()
        for worker in workers:
            worker.stop()
    res.seconds = time.monotonic() - started
    return res


def run_sqs_phases(args: argparse.Namespace, tmp: Path, redis_session: int,
                   redis_url: str) -> list[SetupResult]:
    """``--broker sqs``: the same measurement on SQS, with pdftasks' priority polling, with
    kombu's own polling, and with a dedicated urgent/high worker process."""
    moto = MotoServer(tmp / "moto")
    moto.start()
    os.environ.update(AWS_TEST_CREDENTIALS)
    log(f"moto_server on port {moto.port}")
    c = args.concurrency
    phases: list[tuple[str, list[tuple[str | None, int]], dict[str, Any]]] = [
        (f"pdftasks on SQS, priority polling (c={c})", [(None, c)],
         {"sqs_priority_polling": True}),
        (f"pdftasks on SQS, kombu's polling (c={c})", [(None, c)],
         {"sqs_priority_polling": False}),
    ]
    if c >= 2:
        phases.append((f"pdftasks on SQS, 1 urgent/high + {c - 1} general process",
                       [("urgent,high", 1), (None, c - 1)], {"sqs_priority_polling": True}))
    try:
        assert moto.proc is not None
        return [run_pdftasks_sqs(args, moto, tmp, name, groups, overrides,
                                 [moto.proc.pid, redis_session], redis_url)
                for name, groups, overrides in phases]
    finally:
        moto.stop()


def run_stock(args: argparse.Namespace, redis_url: str, tmp: Path, interval_s: float,
              render_estimate_ms: float, redis_session: int) -> SetupResult:
    import redis
    from celery.exceptions import TimeoutError as CeleryTimeoutError

    os.environ["BENCH_STOCK_BROKER_URL"] = redis_url
    import _stock_celery as stock

    from pdftasks.samples import sample_invoice

    res = SetupResult(f"stock celery (1 queue, prefetch 4, c={args.concurrency})")
    started = time.monotonic()
    hostname = f"bench-stock-{os.getpid()}@localhost"
    env = {k: v for k, v in os.environ.items() if k.startswith("PDFTASKS_")}
    env["PDFTASKS_OUTPUT_DIR"] = str(tmp / "output-stock")
    env["BENCH_STOCK_BROKER_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])
    worker = WorkerProcess(
        [sys.executable, "-m", "celery", "-A", "_stock_celery", "worker",
         "-c", str(args.concurrency), "-l", "WARNING", "-n", hostname],
        env=env, log_path=tmp / "stock-worker.log", cwd=tmp)
    r = redis.Redis.from_url(redis_url)
    queue_key = stock.app.conf.task_default_queue  # "celery"
    lows: list[Any] = []
    urgent: list[tuple[float, Any]] = []
    held: list[Any] = []
    job: Any = None
    try:
        worker.start()
        log(f"stock: worker ready in "
            f"{worker.wait_ready(celery_ping(stock.app, hostname)):.1f} s")

        def submit(data: dict[str, Any], name: str) -> Any:
            held.append(stock.render.delay(TEMPLATE, data, name))
            return held[-1]

        warm_up(submit, 2 * args.concurrency)
        assert worker.proc is not None
        cpu = CpuMonitor([worker.proc.pid, redis_session])
        cpu.start()
        t0 = time.monotonic()
        lows[:] = [submit(sample_invoice(i), f"low_{i:04d}.pdf")
                   for i in range(1, args.low + 1)]
        res.low_total = len(lows)
        log(f"stock: queued {len(lows)} low jobs in {time.monotonic() - t0:.1f} s; "
            f"submitting {args.urgent} urgent jobs every {interval_s:.3f} s without waiting")
        next_at = time.monotonic()
        for j in range(args.urgent):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += interval_s
            res.backlog_at_submit.append(int(r.llen(queue_key)))
            data = sample_invoice(args.low + 1 + j)
            submitted = time.time()
            urgent.append((submitted, submit(data, f"urgent_{j:03d}.pdf")))
            res.submit_times.append(submitted)
        # Bound: the time the backlog needs, with a margin.
        drain_s = args.low * render_estimate_ms / 1000 / args.concurrency
        bound_s = 1.5 * drain_s + 30
        deadline = time.monotonic() + bound_s
        log(f"stock: waiting for the urgent jobs (backlog needs ~{drain_s:.0f} s; "
            f"waiting at most {bound_s:.0f} s)")
        for j, (submitted, job) in enumerate(urgent):
            try:
                out = job.get(timeout=max(0.1, deadline - time.monotonic()))
            except CeleryTimeoutError:
                res.censored += 1
                res.waits_ms.append((time.time() - submitted) * 1000)  # lower bound
                continue
            except Exception as exc:
                res.failed += 1
                res.notes.append(f"urgent job {j} failed: {type(exc).__name__}: {exc}")
                continue
            res.waits_ms.append((out["started_at"] - submitted) * 1000)
            res.urgent_render_ms.append(out["duration_ms"])
            res.urgent_log.append(
                f"urgent {j:2d}: wait {res.waits_ms[-1]:8.1f} ms, render "
                f"{out['duration_ms']:6.1f} ms, pid {out.get('worker_pid')}, "
                f"queue length {res.backlog_at_submit[j]}")
        res.foreign_cores = cpu.foreign_cores()
        res.low_render_ms = low_durations(stock.app, lows)
        res.lows_done = len(res.low_render_ms)
        purged = stock.app.control.purge()
        log(f"stock: done; {res.lows_done} low jobs rendered (purged {purged})")
    finally:
        release_results(stock.app, held)  # see run_pdftasks
        held.clear()
        lows.clear()
        urgent.clear()
        job = None
        try:
            worker.stop()
        finally:
            r.close()
    res.seconds = time.monotonic() - started
    return res


def fmt_ms(value: float, censored: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return (">" if censored else "") + f"{value:,.0f} ms"


def report(args: argparse.Namespace, results: list[SetupResult], interval_s: float) -> bool:
    target_ms = results[0].render_ms + TARGET_SLACK_MS
    print()
    print(f"priority_latency: {args.low} low jobs queued, then {args.urgent} urgent jobs; "
          f"one-page invoice; {args.concurrency} worker processes on {os.cpu_count()} CPUs")
    print("wait = worker start (started_at) - submit time. pdftasks: urgent jobs one at a "
          f"time (wait for result, sleep {args.gap:g} s +-50%).")
    if any(r.name.startswith("stock") for r in results):
        print(f"stock: urgent jobs at the same cadence ({interval_s:.3f} s apart) without "
              "waiting for each (FIFO: waiting would drain the backlog).")
    print(f"target (pdftasks): p95 wait <= mean render under load + {TARGET_SLACK_MS:.0f} ms")
    print(f"load average (1/5/15 min) at start: {args.load_before}; at end: "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} (other CPU users skew both setups)")
    print()
    rows = []
    for res in results:
        cens = res.censored > 0
        p95 = percentile(res.waits_ms, 95)
        ok = "yes" if not cens and not res.failed and p95 <= target_ms else "NO"
        rows.append([res.name, len(res.waits_ms), fmt_ms(percentile(res.waits_ms, 50), cens),
                     fmt_ms(p95, cens), fmt_ms(max(res.waits_ms, default=math.nan), cens),
                     f"{res.render_ms:.1f}", fmt_ms(target_ms), ok])
    print_table(["setup", "urgent n", "p50 wait", "p95 wait", "max", "render(ms)",
                 "target p95<=", "ok"], rows)
    p95s = [percentile(r.waits_ms, 95) for r in results]
    if len(p95s) == 2 and p95s[0] > 0 and results[1].name.startswith("stock"):
        print(f"ratio stock/pdftasks p95: {p95s[1] / p95s[0]:,.0f}x")
    print()
    for res in results:
        backlog = res.backlog_at_submit
        print(f"{res.name}: {res.seconds:.1f} s; low jobs rendered {res.lows_done}/"
              f"{res.low_total}; backlog at urgent submits min {min(backlog, default=0)} "
              f"max {max(backlog, default=0)}; urgent render mean "
              f"{mean(res.urgent_render_ms):.1f} ms; low render p50 "
              f"{percentile(res.low_render_ms, 50):.1f} / p95 "
              f"{percentile(res.low_render_ms, 95):.1f} ms; failed {res.failed}; "
              f"not started within bound {res.censored}")
        print(f"  urgent waits (ms, sorted): "
              f"{' '.join(f'{w:.0f}' for w in sorted(res.waits_ms))}")
        if args.broker == "sqs":
            print(f"  urgent submit (record + publish) p50 {percentile(res.submit_ms, 50):.0f}"
                  f" ms; wait after submit p50 {percentile(res.pickup_ms, 50):.0f} / p95 "
                  f"{percentile(res.pickup_ms, 95):.0f} ms")
        print(f"  CPU used by other programs while measuring: {res.foreign_cores:.2f} cores")
        if res.foreign_cores > 0.25:
            print("  WARNING: other programs competed for the CPUs during this phase; its "
                  "render times and waits are inflated. Re-run on an idle machine.")
        for note in res.notes:
            print(f"  note: {note}")
        if args.verbose:
            for line in res.urgent_log:
                print(f"  {line}")
    warn = results[0].backlog_at_submit and min(results[0].backlog_at_submit) == 0
    if warn:
        print("WARNING: the pdftasks low backlog ran empty during the urgent phase: later "
              "urgent jobs met an idle worker; raise --low.")
    return rows[0][-1] == "yes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Urgent-job wait behind a low-priority backlog: pdftasks vs stock Celery.",
        epilog="Methodology: see the docstring at the top of this file.")
    parser.add_argument("--low", type=int, default=1000, help="low jobs queued (default 1000)")
    parser.add_argument("--urgent", type=int, default=20, help="urgent jobs (default 20)")
    parser.add_argument("--concurrency", "-c", type=int, default=2,
                        help="worker processes per setup (default 2)")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="mean pause after each pdftasks urgent result, in s (default "
                             "0.3, jittered +-50%%)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the gap jitter")
    parser.add_argument("--urgent-timeout", type=float, default=60.0,
                        help="longest wait for one pdftasks urgent job, in s (default 60)")
    parser.add_argument("--skip-stock", action="store_true", help="run only pdftasks")
    parser.add_argument("--broker", choices=["redis", "sqs"], default="redis",
                        help="sqs: after pdftasks on Redis, the same on SQS (a private "
                             "moto_server): priority polling, kombu's polling, and a "
                             "dedicated urgent/high process; no stock phase")
    parser.add_argument("--sqs-wait", type=int, default=10,
                        help="SQS long polling in the sqs phases, in s (default 10)")
    parser.add_argument("--sqs-dynamodb", action="store_true",
                        help="sqs phases: job records and results on DynamoDB (moto) too, "
                             "instead of the reference Redis")
    parser.add_argument("--sqs-low", type=int, default=400,
                        help="low jobs queued in each sqs phase (default 400: enough to "
                             "outlast the urgent jobs; moto slows down with table size)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every urgent job (wait, render time, worker pid)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when pdftasks misses the target")
    args = parser.parse_args(argv)
    if args.low < 1 or args.urgent < 1 or args.concurrency < 1:
        parser.error("--low, --urgent and --concurrency must be >= 1")

    begin = time.monotonic()
    args.load_before = "/".join(f"{x:.2f}" for x in os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="pdftasks-bench-"))
    server = RedisServer(tmp / "redis")
    try:
        with sigterm_as_exit():
            try:
                results, interval = run_all(args, server, tmp)
            except KeyboardInterrupt:
                log("interrupted; cleaning up")
                return 130
            except SystemExit as exc:
                log("terminated; cleaning up")
                return exc.code if isinstance(exc.code, int) else 1
            except Exception:
                traceback.print_exc()
                log("failed; cleaning up")
                return 1
            finally:
                # The traceback of an error is gone once its handler has run; collect the
                # AsyncResults it kept alive now, while Redis still answers their
                # unsubscribe (against a stopped server, each one retries for seconds).
                gc.collect()
                server.stop()
        ok = report(args, results, interval)
        print(f"\ntotal run time {time.monotonic() - begin:.1f} s")
        return 0 if ok or not args.check else 1
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(args: argparse.Namespace, server: RedisServer,
            tmp: Path) -> tuple[list[SetupResult], float]:
    """Start Redis, run both setups, return their results and the urgent cadence."""
    server.start()
    log(f"redis-server on port {server.port}; tmp dir {tmp}")
    # Before pdftasks is imported: settings are read once.
    use_pdftasks_env(tmp, server.url(0), output="output-pdftasks", log_level="WARNING")
    assert server.proc is not None
    redis_session = server.proc.pid
    results = [run_pdftasks(args, server.url(0), tmp, redis_session)]
    interval = results[0].interval_s()
    if math.isnan(interval):
        interval = args.gap + 0.1
    estimate = results[0].render_ms
    if math.isnan(estimate):
        estimate = 100.0
    if args.broker == "sqs":
        results += run_sqs_phases(args, tmp, redis_session, server.url(2))
    elif not args.skip_stock:
        results.append(run_stock(args, server.url(1), tmp, interval, estimate, redis_session))
    return results, interval

if __name__ == "__main__":
    sys.exit(main())
