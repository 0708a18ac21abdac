#!/usr/bin/env python
"""Run every benchmark in benchmarks/ and print all their tables (``make bench``).

Each benchmark runs as its own process, one after the other (never two at once: they
measure CPU time on the same cores), with the sizes below. They start and stop their own
private redis-server and workers; this script only runs them, echoes their tables (stdout;
progress lines go to stderr) and ends with a summary of run times. A benchmark that
overruns its time limit is stopped (SIGTERM, so it cleans up; SIGKILL of its process group
30 s later) and reported as such.

Sizes (chosen so that everything fits in about 25 minutes on a 2-core machine):

================  ===============================================  ======================
benchmark         arguments                                        vs its defaults
================  ===============================================  ======================
throughput        --variant trace                                  + 1 informative row
render_cost       (defaults: 40 per row, 10 stock no-subset,       same
                  30 through a worker)
multipage         (defaults: 200-line invoice, 15 + 5 documents)   same
memory            (defaults: 2,000 renders, then the ceiling)      same
latency           (defaults: 50 jobs, then 2 x 15 job API)         same
priority_latency  --low 400 --urgent 10                            1000 low, 20 urgent
submit_rate       --jobs 10000 --naive 2000                        naive loop 10,000
local_broker      --jobs 200 --max-seconds 10 --pdfs 40            500 jobs, 40 s, 100
api_load          --duration 4                                     10 s per phase
document_options  (defaults)                                       same
large_report      --rows 2000,8000 --part-sizes 250,500            + 32,000 rows, 4 sizes
================  ===============================================  ======================

Any other ``benchmarks/*.py`` script (not starting with ``_``) is run with its defaults
and flagged, so a new benchmark is never silently left out; register it here with sizes.
``charts.py`` is not a benchmark: it draws the documentation's charts.

``--quick`` runs everything with small sizes (a smoke test, about 3 minutes; numbers are
not meant to be quoted). ``--only`` / ``--skip`` select benchmarks by name; ``--output``
also writes the tables to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, load_average, machine_description, print_table  # noqa: E402

#: Time budget of the whole run on the reference machine (2 cores), in seconds.
BUDGET_S = 1500

#: name -> (arguments, --quick arguments, time limit in seconds)
BENCHMARKS: dict[str, tuple[list[str], list[str], float]] = {
    # The two naive rows (stock Celery, plain pool) add 2-3 minutes.
    "throughput": (["--variant", "trace"], ["--jobs", "60", "--rounds", "3"], 600),
    "render_cost": ([], ["--n", "6", "--n-stock-nosubset", "3", "--rounds", "3",
                         "--worker-jobs", "5"], 240),
    "multipage": ([], ["--n", "3", "--n-stock", "1"], 180),
    "memory": ([], ["--renders", "200"], 420),
    "latency": ([], ["--jobs", "10", "--manager-jobs", "3"], 180),
    "priority_latency": (["--low", "400", "--urgent", "10"], ["--low", "60", "--urgent", "3"],
                         300),
    "submit_rate": (["--jobs", "10000", "--naive", "2000"], ["--jobs", "1000", "--naive", "200"],
                    180),
    "local_broker": (["--jobs", "200", "--max-seconds", "10", "--pdfs", "40"],
                     ["--jobs", "50", "--max-seconds", "5", "--pdfs", "10"], 300),
    "api_load": (["--duration", "4"], ["--duration", "2"], 240),
    "document_options": ([], ["--n", "3", "--rounds", "1"], 300),
    # The 32,000-row report (a single render of minutes and gigabytes) is run on its own:
    # `python benchmarks/large_report.py`.
    "large_report": (["--rows", "2000,8000", "--part-sizes", "250,500"],
                     ["--rows", "2000", "--part-sizes", "500", "--small-jobs", "5"], 600),
}
#: Scripts in benchmarks/ that are not benchmarks (charts.py draws the docs' charts).
NOT_BENCHMARKS = {"run_all", "charts"}
#: Time limit of a discovered, unregistered benchmark, in seconds.
UNREGISTERED_LIMIT_S = 300


def discover() -> list[str]:
    """Registered benchmarks that exist, in the order above, then unregistered scripts."""
    present = {p.stem for p in BENCH_DIR.glob("*.py")
               if not p.name.startswith("_") and p.stem not in NOT_BENCHMARKS}
    return [n for n in BENCHMARKS if n in present] + sorted(present - BENCHMARKS.keys())


class Tee:
    """Echo a child's stdout line by line to our stdout (and an optional file)."""

    def __init__(self, stream: IO[str], sinks: list[IO[str]]) -> None:
        self.thread = threading.Thread(target=self._run, args=(stream, sinks), daemon=True)
        self.thread.start()

    @staticmethod
    def _run(stream: IO[str], sinks: list[IO[str]]) -> None:
        for line in stream:
            for sink in sinks:
                sink.write(line)
                sink.flush()


def run_one(name: str, argv: list[str], limit_s: float, sinks: list[IO[str]]
            ) -> tuple[float, str]:
    """Run one benchmark; return (seconds, outcome)."""
    cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    header = f"\n{'=' * 100}\n== {name}: {' '.join(['benchmarks/' + name + '.py', *argv])}\n"
    for sink in sinks:
        sink.write(header)
        sink.flush()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    tee = Tee(proc.stdout, sinks)
    outcome = "ok"
    try:
        proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        outcome = f"TIMEOUT after {limit_s:.0f} s"
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    tee.thread.join(timeout=10)
    if outcome == "ok" and proc.returncode:
        outcome = f"exit code {proc.returncode}"
    return time.monotonic() - started, outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run every benchmark in benchmarks/ and print all tables.",
        epilog="Sizes and method: see the docstring at the top of this file.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: a smoke test of every benchmark (~3 minutes)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)

    names = discover()
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(names)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(names)}")
    selected = [n for n in names if (not only or n in only) and n not in skip]
    if args.list:
        for n in names:
            sizes = BENCHMARKS.get(n, ([], [], UNREGISTERED_LIMIT_S))
            note = "" if n in BENCHMARKS else "  (not registered: defaults)"
            print(f"{n:<18} {' '.join(sizes[1 if args.quick else 0]) or '(defaults)'}{note}")
        return 0

    out_file = open(args.output, "w") if args.output else None  # noqa: SIM115
    sinks: list[IO[str]] = [sys.stdout] + ([out_file] if out_file else [])
    begin = time.monotonic()
    summary = []
    try:
        quick_note = " (--quick: smoke sizes, do not quote)" if args.quick else ""
        intro = (f"pdftasks benchmarks{quick_note}"
                 f"\nmachine: {machine_description()}\nload average at start: {load_average()}"
                 f"\nstarted {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        for sink in sinks:
            sink.write(intro)
        for name in selected:
            full, quick, limit = BENCHMARKS.get(name, ([], [], UNREGISTERED_LIMIT_S))
            sizes = quick if args.quick else full
            seconds, outcome = run_one(name, sizes, limit, sinks)
            if name not in BENCHMARKS:
                outcome += " (unregistered: run with its defaults)"
            summary.append([name, " ".join(sizes) or "(defaults)", f"{seconds:.0f}", outcome])
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        total = time.monotonic() - begin
        lines: list[str] = []
        if summary:
            import io

            buf = io.StringIO()
            print_table(["benchmark", "arguments", "seconds", "outcome"], summary, file=buf)
            lines.append(f"\n{'=' * 100}\nsummary\n\n{buf.getvalue()}")
            within = total <= BUDGET_S
            lines.append(f"total run time {total:.0f} s ({total / 60:.1f} min; budget "
                         f"{BUDGET_S / 60:.0f} min: {'within' if within else 'OVER'}); load "
                         f"average at end: {load_average()}\n")
        for sink in sinks:
            sink.write("\n".join(lines))
            sink.flush()
        if out_file:
            out_file.close()
    return 0 if all(row[3].startswith("ok") for row in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
