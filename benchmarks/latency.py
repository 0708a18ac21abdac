#!/usr/bin/env python
"""Submit and end-to-end latency of a single job on an idle system.

Issue 8, benchmark 5: single job submit-to-completed p50/p95 on an idle system, with the
split: submit -> started, render, completed -> the client sees it.

Methodology
-----------
* A private ``redis-server``; ``python -m pdftasks worker -c 2`` with stock settings
  (INFO logging, task events, job records). After it answers a ping, ``2 x c`` warm-up
  jobs are rendered (not measured).
* ``--jobs`` (50) one-page invoices (``sample_invoice(i)``) are submitted one at a time
  from this process; each is waited for before the next, then ``--gap`` (0.1 s) passes,
  so the worker is idle at every submit.
* Celery client (``generate_pdf.delay(...).get()``; the Redis result backend notifies the
  client over pub/sub):
  - submit = time ``.delay()`` takes in the client (checks, job record, publish);
  - to start = task start (``started_at``, ``time.time()`` at the top of the task in the
    worker child) - ``.delay()`` returned: Redis, the worker's BRPOP, the hand-over to a
    child, the STARTED result write;
  - render = ``duration_ms`` (checks, Jinja, WeasyPrint, atomic write);
  - task other = result stored (``date_done``) - task start - render: the job record's
    attempt count and PROCESSING transition, building and storing the result;
  - to client = the client's ``.get()`` returned - ``date_done``: the COMPLETED
    transition and its event (``on_success``), the pub/sub notification, decoding;
  - total = ``.get()`` returned - time before ``.delay()`` (the sum of the five);
    submit -> started = submit + to start.
  Same host, same clock (``time.time()``) on both sides.
* Job API (reference): ``PDFQueueManager.submit_job`` + ``wait_for_job`` (polls the job
  record every ``poll_interval``, 0.2 s by default, and again with ``--poll`` 0.01 s):
  total = ``wait_for_job`` returned - time before ``submit_job``. Its polling interval
  dominates; it is the guide's API, not the fast path.
* Percentiles: linear interpolation between closest ranks.

Run: ``.venv/bin/python benchmarks/latency.py`` (about 30 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CpuMonitor,
    RedisServer,
    celery_ping,
    date_done_epoch,
    load_average,
    log,
    machine_description,
    mean,
    pdftasks_worker,
    percentile,
    print_table,
    release_results,
    result_metas_by_id,
    sigterm_as_exit,
    use_pdftasks_env,
)

TEMPLATE = "invoice.html"
PARTS = ["submit", "to start", "render", "task other", "to client", "total",
         "submit -> started"]


def run(args: argparse.Namespace, tmp: Path, server: RedisServer) -> dict[str, Any]:
    from pdftasks import PDFQueueManager, RedisBackend, generate_pdf
    from pdftasks.celery_app import app
    from pdftasks.samples import sample_invoice

    hostname = f"bench-latency-{os.getpid()}@localhost"
    worker = pdftasks_worker(args.concurrency, hostname, tmp / "worker.log", cwd=tmp)
    held: list[Any] = []
    parts: dict[str, list[float]] = {p: [] for p in PARTS}
    manager_totals: dict[float, list[float]] = {}
    try:
        worker.start()
        assert worker.proc is not None and server.proc is not None
        worker.wait_ready(celery_ping(app, hostname), timeout=90)
        warm = [generate_pdf.delay(template=TEMPLATE, data=sample_invoice(900 + i),
                                   output_filename=f"warm_{i}.pdf")
                for i in range(2 * args.concurrency)]
        held.extend(warm)
        for r in warm:
            r.get(timeout=90)
        cpu = CpuMonitor([worker.proc.pid, server.proc.pid])
        cpu.start()
        log(f"celery client: {args.jobs} jobs one at a time")
        for i in range(1, args.jobs + 1):
            t0 = time.time()
            res = generate_pdf.delay(template=TEMPLATE, data=sample_invoice(i),
                                     output_filename=f"inv_{i:04d}.pdf")
            t1 = time.time()
            held.append(res)
            out = res.get(timeout=60)
            t_seen = time.time()
            meta = result_metas_by_id(app, [res.id])[0]
            assert meta is not None
            done = date_done_epoch(meta)
            render = out["duration_ms"] / 1000
            parts["submit"].append(t1 - t0)
            parts["to start"].append(out["started_at"] - t1)
            parts["render"].append(render)
            parts["task other"].append(done - out["started_at"] - render)
            parts["to client"].append(t_seen - done)
            parts["total"].append(t_seen - t0)
            parts["submit -> started"].append(out["started_at"] - t0)
            time.sleep(args.gap)
        manager = PDFQueueManager(backend=RedisBackend(url=server.url(0)))
        for poll in (None, args.poll):
            label = manager.poll_interval if poll is None else poll
            log(f"job API: {args.manager_jobs} jobs, wait_for_job polling every {label:g} s")
            totals = manager_totals.setdefault(label, [])
            for i in range(args.manager_jobs):
                t0 = time.time()
                job_id = manager.submit_job(template=TEMPLATE, data=sample_invoice(5000 + i),
                                            output_filename=f"mgr_{label:g}_{i:04d}.pdf")
                manager.wait_for_job(job_id, timeout=60, poll_interval=poll)
                totals.append(time.time() - t0)
                time.sleep(args.gap)
        other = cpu.foreign_cores()
    finally:
        release_results(app, held)
        held.clear()
        worker.stop()
    return {"parts": parts, "manager": manager_totals, "other_cpu": other}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Single-job submit and submit-to-completed latency on an idle worker.",
        epilog="Methodology: see the docstring at the top of this file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50, help="jobs through the Celery client")
    parser.add_argument("--manager-jobs", type=int, default=15,
                        help="jobs through the job API, per polling interval")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--gap", type=float, default=0.1, help="pause between jobs, in s")
    parser.add_argument("--poll", type=float, default=0.01,
                        help="second wait_for_job polling interval, in s")
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.manager_jobs < 0 or args.concurrency < 1:
        parser.error("--jobs >= 2, --manager-jobs >= 0, --concurrency >= 1")

    begin = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pdftasks-latency-"))
    server = RedisServer(tmp / "redis")
    try:
        with sigterm_as_exit():
            server.start()
            use_pdftasks_env(tmp, server.url(0))
            res = run(args, tmp, server)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"latency: single one-page invoice on an idle worker (-c {args.concurrency}, "
          f"Redis broker), {args.jobs} jobs one at a time")
    print(f"machine: {machine_description()}")
    print()
    rows = []
    for p in PARTS:
        ms = [x * 1000 for x in res["parts"][p]]
        rows.append([p, f"{percentile(ms, 50):.1f}", f"{percentile(ms, 95):.1f}",
                     f"{mean(ms):.1f}", f"{max(ms):.1f}"])
    print_table(["generate_pdf.delay().get()", "p50 ms", "p95 ms", "mean ms", "max ms"], rows)
    print("submit: .delay() in the client; to start: .delay() returned -> task start in the "
          "worker child;\nrender: duration_ms; task other: rest of the task until its result "
          "is stored; to client: result stored ->\n.get() returned; total: the five added up "
          "(before .delay() -> .get() returned); submit -> started = submit + to start")
    if res["manager"]:
        print()
        rows = []
        for poll, totals in res["manager"].items():
            ms = [x * 1000 for x in totals]
            rows.append([f"submit_job + wait_for_job (poll {poll:g} s)", len(ms),
                         f"{percentile(ms, 50):.1f}", f"{percentile(ms, 95):.1f}"])
        print_table(["job API", "n", "p50 ms", "p95 ms"], rows)
    print()
    print(f"CPU used by other programs while measuring: {res['other_cpu']:.2f} cores"
          + (" (WARNING: disturbed run)" if res["other_cpu"] > 0.25 else ""))
    print(f"load average at end: {load_average()}; total run time "
          f"{time.monotonic() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
