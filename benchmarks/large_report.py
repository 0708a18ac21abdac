#!/usr/bin/env python
"""Large reports: one render in one process next to a split job on a 2-process worker.

Issue 14: a table report of 2,000 / 8,000 / 32,000 rows rendered (a) in one piece by one
process without limits and (b) as a split job (``options={"split": {"key": "rows",
"size": S}}``) by ``pdftasks worker -c 2`` with its default limits; rows, pages, time,
peak RSS of every process, ms/page and the ratios, in one run. Targets (2 cores): the
32,000-row report completes with the default limits; split wall <= 0.4 x the single
render; peak RSS <= 400 MB in every worker process; split ms/page at 32,000 rows <= 1.1 x
its figure at 500 rows.

Methodology
-----------
* Document: ``templates/report.html`` with ``title``, ``period``, ``summary``, a short
  ``sections`` block and ``rows`` (``--rows``: 5 columns; about 46 rows an A4 page, a
  repeated table header and a "Page X of Y" footer on every page), ``totals`` and
  ``closing``; the same data for both setups.
* Single render: a fresh ``python`` process per size (``--single N``, run by this
  script) builds a worker's ``PDFService`` (``cache_stylesheets``, ``warm_up()``), renders
  the whole report once with ``render_pdf`` (no time or memory limit) and reports the
  seconds of that render and its peak RSS (``VmHWM``).
* Part sizes: the same single render for the ``--part-sizes`` row counts (a part is such a
  document): ms/page as the document grows, which is what splitting wins from.
* Split job: a private ``redis-server``; a fresh ``python -m pdftasks worker -c 2`` per size
  with stock settings (soft time limit 60 s, memory ceiling per child); the job is submitted
  with ``PDFQueueManager.submit_job`` and followed in the job store (every 0.1 s) until
  COMPLETED. Wall = submit to COMPLETED (parts, merge, page stamps, atomic write). Peak RSS
  = the largest ``VmHWM`` of each worker process (main process and every pool child, read
  every 0.1 s). ``worker ms/page`` = the parts' render times (their records'
  started/completed) plus the merge, over pages: the work per page whatever the number of
  processes. ``wall ms/page`` = wall / pages with 2 processes.
* The 500-row split job is one part (a list no longer than ``size`` is an ordinary job):
  the reference of the ms/page target.
* No split when it does not pay: ``--small-jobs`` jobs of 40 rows, alternately without
  options and with ``split`` of size 1000 (one part: an ordinary job), one at a time,
  submit to COMPLETED in the job store; p50 of each and the ratio.
* Fleet: from the measured part times of the largest split job, the time N worker processes
  would take = the fan-out (submit to the first part's start) + the longest-first schedule
  of the parts on N processes + the merge (last part done to COMPLETED).
* ``other CPU`` = CPUs used by other programs while measuring (/proc); above 0.25 the
  numbers are inflated.

Run: ``.venv/bin/python benchmarks/large_report.py`` (about 15 minutes with defaults: the
single render of 32,000 rows takes minutes and ~3 GB). ``--rows 2000,8000 --quick`` for a
short check.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import heapq
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    RedisServer,
    child_pids,
    load_average,
    log,
    log_ready,
    machine_description,
    pdftasks_worker,
    print_table,
    use_pdftasks_env,
)

REGIONS = ("North America", "EMEA", "APAC", "LATAM")
#: The split job's part size by default (rows): see the part-size table.
DEFAULT_SIZE = 500
TARGET_WALL_RATIO = 0.4
TARGET_RSS_MB = 400
TARGET_MS_PAGE_RATIO = 1.1


def report(rows: int) -> dict[str, Any]:
    """The benchmark's report: ``rows`` table rows and a title page and totals."""
    return {
        "title": "Monthly sales", "period": "2026-11",
        "summary": "All transactions of the month, one line each.",
        "sections": [{"heading": "Key figures", "rows": [
            {"label": "Transactions", "value": rows}, {"label": "Regions", "value": 4}]}],
        "table_title": "Transactions",
        "rows": [{"line": i + 1, "date": f"2026-11-{1 + i % 30:02d}", "region": REGIONS[i % 4],
                  "quantity": 1 + (i * 7) % 40, "amount": round((i + 1) * 12.5, 2)}
                 for i in range(rows)],
        "totals": {"quantity": sum(1 + (i * 7) % 40 for i in range(rows)),
                   "amount": round(sum((i + 1) * 12.5 for i in range(rows)), 2)},
        "closing": "End of report.",
    }


class ForeignCpu:
    """CPUs used by other programs: all busy CPU time on the host (/proc/stat) minus this
    process's and its waited-for descendants' (workers, their pool children, single
    renders, redis-server: ``os.times``)."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / self.tick
        t = os.times()
        return time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system

    def cores(self) -> float:
        now = self._snapshot()
        wall = now[0] - self.start[0]
        return max(0.0, ((now[1] - self.start[1]) - (now[2] - self.start[2])) / wall)


def worker_cpu_s(main_pid: int) -> float:
    """CPU seconds of a worker so far: its main process, its pool children alive, and
    those it has reaped (``cutime``/``cstime``)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in [main_pid, *child_pids(main_pid)]:
        with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in rest[11:15 if pid == main_pid else 13]) / tick
    return total


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set size of ``pid`` so far (``VmHWM``), in MiB; 0 if unknown."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# The single render, in its own process.


def single(rows: int) -> None:
    """``--single N``: render the report of N rows in one piece; print a JSON line."""
    from pdftasks.render import PDFService, PDFServiceConfig

    service = PDFService(PDFServiceConfig(templates_dir=ROOT / "templates",
                                          output_dir=Path(tempfile.gettempdir())),
                         cache_stylesheets=True)
    service.warm_up()
    data = report(rows)
    started = time.perf_counter()
    _, pages = service.render_pdf("report.html", data)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "pages": pages, "seconds": seconds,
                      "rss": vm_hwm_mib(os.getpid())}), flush=True)


def run_single(rows: int) -> dict[str, Any]:
    log(f"single render of {rows} rows (one process, no limits)")
    out = subprocess.run([sys.executable, __file__, "--single", str(rows)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# The split job, on a worker of two processes.


class PeakRss:
    """Largest VmHWM of every process of a worker (main and pool children), polled."""

    def __init__(self, main_pid: int) -> None:
        self.main_pid = main_pid
        self.peaks: dict[int, float] = {}

    def poll(self) -> None:
        for pid in [self.main_pid, *child_pids(self.main_pid)]:
            peak = vm_hwm_mib(pid)
            if peak:
                self.peaks[pid] = max(peak, self.peaks.get(pid, 0.0))


def run_split(tmp: Path, rows: int, size: int, timeout: float) -> dict[str, Any]:
    from pdftasks import PDFQueueManager, RedisBackend
    from pdftasks.models import JobStatus, part_job_id

    log(f"split job of {rows} rows in parts of {size} (worker -c 2, default limits)")
    worker = pdftasks_worker(2, f"large-{rows}@%h", tmp / f"worker-{rows}.log", ROOT,
                             loglevel="INFO")
    worker.start()
    try:
        worker.wait_ready(log_ready(worker), timeout=120)
        assert worker.proc is not None
        rss = PeakRss(worker.proc.pid)
        manager = PDFQueueManager(backend=RedisBackend(url=os.environ["PDFTASKS_BROKER_URL"]))
        data = report(rows)
        time.sleep(1.0)  # the pool's children warm up (a warm-up render each) before
        cpu_before = worker_cpu_s(worker.proc.pid)
        started = time.time()
        job_id = manager.submit_job("report.html", data, f"report-{rows}.pdf",
                                    options={"split": {"key": "rows", "size": size}})
        deadline = time.monotonic() + timeout
        while True:
            rss.poll()
            job = manager.get_job(job_id)
            if job is not None and job.status.is_final:
                break
            if time.monotonic() > deadline or not worker.alive():
                raise RuntimeError(f"split job of {rows} rows not done: "
                                   f"{job and job.status.value}\n{worker.log_tail()}")
            time.sleep(0.1)
        rss.poll()
        cpu_used = worker_cpu_s(worker.proc.pid) - cpu_before
        if job.status is not JobStatus.COMPLETED:
            raise RuntimeError(f"split job of {rows} rows {job.status.value}: {job.error}")
        assert job.completed_at is not None and job.pages
        wall = job.completed_at.timestamp() - started
        parts = [manager.get_job(part_job_id(job_id, i)) for i in range(job.parts_total or 0)]
        spans = [(p.started_at.timestamp(), p.completed_at.timestamp()) for p in parts
                 if p is not None and p.started_at and p.completed_at]
        if spans:
            first_start, last_done = min(s for s, _ in spans), max(e for _, e in spans)
            fan_out, merge = first_start - started, job.completed_at.timestamp() - last_done
            part_times = [e - s for s, e in spans]
        else:  # one part: an ordinary job
            assert job.started_at is not None
            fan_out, merge = job.started_at.timestamp() - started, 0.0
            part_times = [job.completed_at.timestamp() - job.started_at.timestamp()]
        leftovers = [p for p in (Path(os.environ["PDFTASKS_OUTPUT_DIR"])).rglob("part.pdf")]
        return {"rows": rows, "pages": job.pages, "seconds": wall, "parts": len(part_times),
                "part_times": part_times, "fan_out": fan_out, "merge": merge,
                "rss": rss.peaks, "leftovers": len(leftovers),
                "worker_ms_page": cpu_used * 1000 / job.pages}
    finally:
        worker.stop()


def run_small_jobs(tmp: Path, n: int) -> dict[str, list[float]]:
    """Latency of 40-row reports without options and with a split that does not cut."""
    from pdftasks import PDFQueueManager, RedisBackend

    log(f"{n} small reports, alternately without options and with split (no cut)")
    worker = pdftasks_worker(2, "large-small@%h", tmp / "worker-small.log", ROOT,
                             loglevel="INFO")
    worker.start()
    out: dict[str, list[float]] = {"plain": [], "split, no cut": []}
    try:
        worker.wait_ready(log_ready(worker), timeout=120)
        manager = PDFQueueManager(backend=RedisBackend(url=os.environ["PDFTASKS_BROKER_URL"]))
        data = report(40)
        for i in range(n + 4):
            for name, options in (("plain", None),
                                  ("split, no cut", {"split": {"key": "rows", "size": 1000}})):
                started = time.perf_counter()
                job_id = manager.submit_job("report.html", data, f"small-{i}.pdf",
                                            options=options)
                manager.wait_for_job(job_id, timeout=60, poll_interval=0.005)
                if i >= 4:  # 4 warm-up rounds: templates compiled in both children
                    out[name].append((time.perf_counter() - started) * 1000)
    finally:
        worker.stop()
    return out


def fleet(part_times: list[float], fan_out: float, merge: float, n: int) -> float:
    """Wall time of ``part_times`` on ``n`` processes, longest first, plus fan-out and merge."""
    loads = [0.0] * n
    for t in sorted(part_times, reverse=True):
        heapq.heapreplace(loads, loads[0] + t)
    return fan_out + max(loads) + merge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A large table report: single render next to a split job.",
        epilog="Methodology: see the docstring at the top of this file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rows", default="2000,8000,32000", help="report sizes (rows)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="split part size")
    parser.add_argument("--part-sizes", default="100,250,500,1000",
                        help="document sizes of the part-size table (rows)")
    parser.add_argument("--reference", type=int, default=500,
                        help="rows of the split job whose ms/page is the reference")
    parser.add_argument("--small-jobs", type=int, default=20,
                        help="small jobs of each kind for the no-split overhead")
    parser.add_argument("--timeout", type=float, default=1800, help="per split job, s")
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single is not None:
        single(args.single)
        return 0
    sizes = [int(x) for x in args.rows.split(",") if x]
    part_sizes = [int(x) for x in args.part_sizes.split(",") if x]

    begin = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pdftasks-large-"))
    cpu = ForeignCpu()
    try:
        with RedisServer(tmp / "redis") as redis:
            use_pdftasks_env(tmp, broker_url=redis.url())
            split_runs = {n: run_split(tmp, n, args.size, args.timeout)
                          for n in [args.reference, *sizes]}
            small = run_small_jobs(tmp, args.small_jobs)
        singles = {n: run_single(n) for n in sorted({*part_sizes, *sizes})}
        other = cpu.cores()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"large_report: report.html table report, single render (1 process, no limits) "
          f"next to a split job (size {args.size}, pdftasks worker -c 2, default limits)")
    print(f"machine: {machine_description()}")
    print()
    print("Part sizes: one document of N rows, one process (what a part costs)")
    print_table(["rows", "pages", "time s", "ms/page", "peak RSS MiB"], [
        [n, singles[n]["pages"], f"{singles[n]['seconds']:.1f}",
         f"{singles[n]['seconds'] * 1000 / singles[n]['pages']:.0f}",
         f"{singles[n]['rss']:.0f}"] for n in part_sizes])
    print()
    ref = split_runs[args.reference]
    ref_wall_mp = ref["seconds"] * 1000 / ref["pages"]
    ref_work_mp = ref["worker_ms_page"]
    rows_out = []
    for n in sizes:
        one, sp = singles[n], split_runs[n]
        peak = max(sp["rss"].values())
        rows_out.append([
            n, one["pages"], f"{one['seconds']:.1f}", f"{one['rss']:.0f}",
            f"{one['seconds'] * 1000 / one['pages']:.0f}",
            sp["pages"], sp["parts"], f"{sp['seconds']:.1f}", f"{peak:.0f}",
            f"{sp['seconds'] * 1000 / sp['pages']:.0f}", f"{sp['worker_ms_page']:.0f}",
            f"{sp['seconds'] / one['seconds']:.2f}x"])
    print("Single render vs split job")
    print_table(["rows", "pages", "single s", "single RSS MiB", "single ms/page",
                 "split pages", "parts", "split s", "split peak RSS MiB/proc",
                 "split wall ms/page", "split worker CPU ms/page", "split/single time"],
                rows_out)
    print(f"split job of {args.reference} rows (reference, {ref['parts']} part): "
          f"{ref['pages']} pages, {ref['seconds']:.1f} s, wall {ref_wall_mp:.0f} ms/page, "
          f"worker CPU {ref_work_mp:.0f} ms/page")
    print()
    largest = split_runs[max(sizes)]
    print(f"Where the split job's time goes ({max(sizes)} rows): fan-out "
          f"{largest['fan_out']:.1f} s, {largest['parts']} parts of "
          f"{statistics.mean(largest['part_times']):.1f} s each on average "
          f"(max {max(largest['part_times']):.1f} s), merge + page stamps "
          f"{largest['merge']:.1f} s; part files left after the merge: "
          f"{sum(r['leftovers'] for r in split_runs.values())}")
    print()
    one_big = singles[max(sizes)]["seconds"]
    print(f"A fleet of N worker processes ({max(sizes)} rows, from the measured part times)")
    print_table(["processes", "estimated wall s", "vs single render"], [
        [n, f"{fleet(largest['part_times'], largest['fan_out'], largest['merge'], n):.1f}",
         f"{fleet(largest['part_times'], largest['fan_out'], largest['merge'], n) / one_big:.2f}x"]
        for n in (1, 2, 4, 8, 16, 32, 64)])
    print()
    plain, nocut = (statistics.median(small["plain"]), statistics.median(small["split, no cut"]))
    print(f"No split when it does not pay ({args.small_jobs} 40-row reports each, one at a "
          "time, submit to COMPLETED)")
    print_table(["job", "n", "p50 ms", "vs plain"], [
        ["plain", len(small["plain"]), f"{plain:.0f}", "1.00x"],
        ["split, list <= size", len(small["split, no cut"]), f"{nocut:.0f}",
         f"{nocut / plain:.2f}x"]])
    print()
    big = split_runs[max(sizes)]
    checks = [
        (f"{max(sizes)} rows complete with default limits", True),
        (f"split wall <= {TARGET_WALL_RATIO} x single at {max(sizes)} rows "
         f"({big['seconds'] / one_big:.2f}x)", big["seconds"] / one_big <= TARGET_WALL_RATIO),
        (f"peak RSS <= {TARGET_RSS_MB} MiB in every worker process "
         f"(max {max(max(r['rss'].values()) for r in split_runs.values()):.0f})",
         all(max(r["rss"].values()) <= TARGET_RSS_MB for r in split_runs.values())),
        (f"split wall ms/page at {max(sizes)} <= {TARGET_MS_PAGE_RATIO} x at {args.reference} "
         f"({big['seconds'] * 1000 / big['pages'] / ref_wall_mp:.2f}x)",
         big["seconds"] * 1000 / big["pages"] <= TARGET_MS_PAGE_RATIO * ref_wall_mp),
        (f"split worker CPU ms/page at {max(sizes)} <= {TARGET_MS_PAGE_RATIO} x at "
         f"{args.reference} ({big['worker_ms_page'] / ref_work_mp:.2f}x)",
         big["worker_ms_page"] <= TARGET_MS_PAGE_RATIO * ref_work_mp),
    ]
    for label, ok in checks:
        print(f"[{'ok' if ok else 'MISSED'}] {label}")
    print(f"CPU used by other programs while measuring: {other:.2f} cores"
          + (" (WARNING: disturbed run, times inflated)" if other > 0.25 else ""))
    print(f"load average at end: {load_average()}; total run time "
          f"{time.monotonic() - begin:.0f} s; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
