#!/usr/bin/env python
"""Worker memory: RSS over 2,000 consecutive renders, and the per-child memory ceiling.

Issue 8, benchmark 4: worker RSS over 2,000 consecutive renders, sampled; growth after
warm-up <= 10%; the per-child memory ceiling recycles a child cleanly when a pathological
template exceeds it.

Methodology
-----------
* A private ``redis-server``; ``python -m pdftasks worker -c 1`` (one pool child, so every
  render happens in the same process) with stock settings.
* Growth: ``--renders`` (2,000) one-page invoices (``sample_invoice(i)``, all different) are
  queued with ``submit_batch`` before the worker starts. While the child renders them this
  process polls every 0.1 s the number of COMPLETED job records and the child's RSS
  (``VmRSS`` in /proc), and keeps the first sample at or after every ``--sample-every``
  (100) renders. Warm-up = the first 100 renders (templates compiled, stylesheets parsed,
  caches filled); growth = (RSS at the end - RSS after warm-up) / RSS after warm-up.
  The child's pid is checked at every sample: a recycled child would void the run.
* Ceiling: a second worker (``-c 1``) runs with ``PDFTASKS_MAX_MEMORY_PER_CHILD_MB`` set
  low (``--ceiling-mb``; default: the RSS measured at the end of the growth run + 50 MiB,
  so normal jobs stay below it). The templates directory of both runs is a copy of the
  sample templates plus ``heavy.html``, a pathological template: a table of
  ``--heavy-rows`` (3,000) rows, about 110 pages, which takes the child's RSS about
  150 MiB up. Steps: 3 invoices; the heavy
  job; wait for the pool to replace its child; 3 invoices. Each row shows the job's
  status, the pid that ran it and the child's RSS afterwards. "Clean" = the heavy job
  COMPLETED (the pool checks the ceiling after a job, so the job is not lost), a new
  child with a new pid served the next jobs, and no job failed.

Run: ``.venv/bin/python benchmarks/memory.py`` (about 3 minutes with defaults;
``--renders 300`` for a quick check).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    CpuMonitor,
    RedisServer,
    WorkerProcess,
    celery_ping,
    child_pids,
    load_average,
    log,
    machine_description,
    pdftasks_worker,
    print_table,
    release_results,
    rss_mib,
    sigterm_as_exit,
    use_pdftasks_env,
)

TARGET_GROWTH = 0.10
HEAVY_TEMPLATE = """<!DOCTYPE html>
<html><head><link rel="stylesheet" href="base.css"></head><body>
<h1>Pathological report</h1>
<table class="data">
{%- for i in range(rows) %}
<tr><td>Row {{ i }}</td><td>{{ filler }}</td></tr>
{%- endfor %}
</table>
</body></html>
"""


def only_child(worker: WorkerProcess, timeout: float = 30.0) -> int:
    """The pid of the worker's single pool child (waits until there is exactly one)."""
    assert worker.proc is not None
    deadline = time.monotonic() + timeout
    while True:
        kids = child_pids(worker.proc.pid)
        if len(kids) == 1:
            return kids[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected one pool child, found {kids}:\n{worker.log_tail()}")
        time.sleep(0.05)


def completed_count(store: Any) -> int:
    from pdftasks.models import JobStatus

    return sum(store.counts().get(JobStatus.COMPLETED, {}).values())


def failed_count(store: Any) -> int:
    from pdftasks.models import JobStatus

    return sum(store.counts().get(JobStatus.FAILED, {}).values())


def run_growth(args: argparse.Namespace, tmp: Path, server: RedisServer) -> dict[str, Any]:
    from pdftasks import PDFQueueManager, RedisBackend
    from pdftasks.celery_app import app
    from pdftasks.samples import sample_invoice
    from pdftasks.worker.tasks import job_store

    manager = PDFQueueManager(backend=RedisBackend(url=server.url(0)))
    log(f"growth: queueing {args.renders} invoices")
    manager.submit_batch([{"template": "invoice.html", "data": sample_invoice(i),
                           "output": f"inv_{i:05d}.pdf"} for i in range(1, args.renders + 1)])
    store = job_store(app)
    hostname = f"bench-memory-{os.getpid()}@localhost"
    worker = pdftasks_worker(1, hostname, tmp / "growth-worker.log", cwd=tmp)
    samples: list[tuple[int, float]] = []
    pids: set[int] = set()
    try:
        worker.start()
        assert worker.proc is not None and server.proc is not None
        cpu = CpuMonitor([worker.proc.pid, server.proc.pid])
        cpu.start()
        started = time.monotonic()
        next_mark = args.sample_every
        deadline = started + args.timeout
        while next_mark <= args.renders:
            done = completed_count(store)
            if done >= next_mark:
                pid = only_child(worker)
                pids.add(pid)
                samples.append((done, rss_mib(pid)))
                next_mark += args.sample_every
                continue
            if not worker.alive():
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"growth run not done after {args.timeout:.0f} s "
                                   f"({done}/{args.renders})")
            time.sleep(0.1)
        seconds = time.monotonic() - started
        other = cpu.foreign_cores()
        failed = failed_count(store)
    finally:
        worker.stop()
    return {"samples": samples, "pids": pids, "seconds": seconds, "other_cpu": other,
            "failed": failed}


def run_ceiling(args: argparse.Namespace, tmp: Path, server: RedisServer,
                ceiling_mb: int) -> dict[str, Any]:
    from pdftasks import generate_pdf
    from pdftasks.celery_app import app
    from pdftasks.samples import sample_invoice

    hostname = f"bench-ceiling-{os.getpid()}@localhost"
    worker = pdftasks_worker(
        1, hostname, tmp / "ceiling-worker.log", cwd=tmp,
        extra_env={"PDFTASKS_MAX_MEMORY_PER_CHILD_MB": str(ceiling_mb)})
    steps: list[list[Any]] = []
    held: list[Any] = []
    recycled_pid: int | None = None
    try:
        worker.start()
        worker.wait_ready(celery_ping(app, hostname), timeout=90)

        def job(label: str, template: str, data: dict[str, Any], timeout: float) -> None:
            res = generate_pdf.apply_async(kwargs={
                "template": template, "data": data,
                "output_filename": f"{label.replace(' ', '_')}.pdf"})
            held.append(res)
            try:
                out = res.get(timeout=timeout)
                status, pid, pages = "COMPLETED", out["worker_pid"], out["pages"]
            except Exception as exc:  # reported in the table
                status, pid, pages = f"FAILED: {type(exc).__name__}", None, "-"
            time.sleep(0.3)  # let a recycle (after the job) happen before reading RSS
            kids = child_pids(worker.proc.pid) if worker.proc else []
            rss = rss_mib(pid) if pid in kids else math.nan
            steps.append([label, status, pages, pid, "gone" if math.isnan(rss)
                          else f"{rss:.0f}"])

        for i in range(3):
            job(f"invoice {i + 1}", "invoice.html", sample_invoice(i + 1), 60)
        heavy_data = {"rows": args.heavy_rows, "filler": "lorem ipsum dolor sit amet " * 3}
        log(f"ceiling: heavy job ({args.heavy_rows} rows), ceiling {ceiling_mb} MiB")
        job("heavy.html", "heavy.html", heavy_data, 180)
        heavy_pid = steps[-1][3]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            kids = child_pids(worker.proc.pid) if worker.proc else []
            if len(kids) == 1 and kids[0] != heavy_pid:
                recycled_pid = kids[0]
                break
            time.sleep(0.1)
        for i in range(3):
            job(f"invoice {i + 4}", "invoice.html", sample_invoice(i + 4), 60)
        log_text = worker.log_path.read_text(errors="replace")
        recycle_logged = "exceeding memory limit" in log_text
    finally:
        release_results(app, held)
        held.clear()
        worker.stop()
    return {"steps": steps, "recycled_pid": recycled_pid, "recycle_logged": recycle_logged,
            "heavy_pid": heavy_pid}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Worker RSS over consecutive renders, and the per-child memory ceiling.",
        epilog="Methodology: see the docstring at the top of this file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--renders", type=int, default=2000, help="consecutive renders")
    parser.add_argument("--sample-every", type=int, default=100, help="renders between samples")
    parser.add_argument("--ceiling-mb", type=int, default=0,
                        help="per-child ceiling for the recycle test (0 = final RSS + 50)")
    parser.add_argument("--heavy-rows", type=int, default=3000,
                        help="rows of the pathological template")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="bound on the growth run, in seconds")
    parser.add_argument("--skip-ceiling", action="store_true", help="only the growth run")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.sample_every < 1 or args.renders < 2 * args.sample_every:
        parser.error("--renders must be at least twice --sample-every")

    begin = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pdftasks-memory-"))
    server = RedisServer(tmp / "redis")
    ceiling: dict[str, Any] | None = None
    try:
        with sigterm_as_exit():
            server.start()
            # The sample templates plus the pathological one (client and workers).
            templates = tmp / "templates"
            shutil.copytree(ROOT / "templates", templates)
            (templates / "heavy.html").write_text(HEAVY_TEMPLATE)
            use_pdftasks_env(tmp, server.url(0), templates=templates)
            growth = run_growth(args, tmp, server)
            final_rss = growth["samples"][-1][1]
            ceiling_mb = args.ceiling_mb or int(math.ceil((final_rss + 50) / 10) * 10)
            if not args.skip_ceiling:
                import redis

                redis.Redis.from_url(server.url(0)).flushall()
                ceiling = run_ceiling(args, tmp, server, ceiling_mb)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    samples = growth["samples"]
    warm_rss = samples[0][1]
    final = samples[-1][1]
    growth_pct = (final - warm_rss) / warm_rss
    ok = growth_pct <= TARGET_GROWTH and len(growth["pids"]) == 1 and not growth["failed"]
    print()
    print(f"memory: RSS of one worker child (python -m pdftasks worker -c 1) over "
          f"{args.renders} consecutive one-page invoices")
    print(f"machine: {machine_description()}")
    print()
    print_table(["renders", "RSS MiB", "vs warm-up"],
                [[n, f"{rss:.1f}", f"{(rss - warm_rss) / warm_rss:+.1%}"] for n, rss in samples])
    print()
    print(f"after warm-up ({samples[0][0]} renders) {warm_rss:.1f} MiB; after {samples[-1][0]} "
          f"{final:.1f} MiB; max {max(r for _, r in samples):.1f} MiB; growth "
          f"{growth_pct:+.1%} (target <= {TARGET_GROWTH:.0%}: {'met' if ok else 'NOT met'}); "
          f"{growth['seconds']:.0f} s, {args.renders / growth['seconds']:.1f} renders/s; "
          f"child pids seen {len(growth['pids'])}; failed jobs {growth['failed']}; "
          f"other CPU {growth['other_cpu']:.2f}")
    if ceiling is not None:
        print()
        print(f"per-child ceiling: worker -c 1 with PDFTASKS_MAX_MEMORY_PER_CHILD_MB="
              f"{ceiling_mb}, pathological template heavy.html ({args.heavy_rows} rows)")
        print()
        print_table(["job", "status", "pages", "child pid", "child RSS after MiB"],
                    ceiling["steps"])
        statuses = [s[1] for s in ceiling["steps"]]
        after = {s[3] for s in ceiling["steps"][4:]}
        all_done = all(s == "COMPLETED" for s in statuses)
        new_pid = ceiling["recycled_pid"]
        clean = all_done and new_pid is not None and after == {new_pid}
        print()
        print(f"child {ceiling['heavy_pid']} replaced after the heavy job: "
              f"{f'yes, by {new_pid}' if new_pid else 'NO'}; later jobs served by the new "
              f"child: {'yes' if after == {new_pid} else 'NO'}; all jobs completed: "
              f"{'yes' if all_done else 'NO'} -> {'clean' if clean else 'NOT clean'}")
        logged = "yes" if ceiling["recycle_logged"] else "no"
        print(f"billiard's 'exceeding memory limit' warning in the worker log: {logged}")
        ok = ok and clean
    print(f"load average at end: {load_average()}; total run time "
          f"{time.monotonic() - begin:.0f} s")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
