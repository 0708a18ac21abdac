"""Submit rate: PDFQueueManager.submit_batch next to a naive loop of generate_pdf.delay().

Both publish to a private redis-server and record every job in the job store (so both are
real submissions a worker would run); no worker runs, nothing is rendered. Same data (a
one-page invoice, four priorities round-robin) in the same run.

    python benchmarks/submit_rate.py [--jobs 10000] [--naive 10000]

Target (issue): 10,000 jobs in under 5 s (>= 2,000 jobs/s) with submit_batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RedisServer, print_table, use_pdftasks_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the batch")
    parser.add_argument("--naive", type=int, default=10_000, help="jobs in the naive loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pdftasks-submit-") as tmp, \
            RedisServer(Path(tmp)) as redis_server:
        use_pdftasks_env(Path(tmp), redis_server.url(0))
        import redis

        from pdftasks import PDFQueueManager, RedisBackend, generate_pdf
        from pdftasks.samples import sample_invoice

        prios = ["urgent", "high", "normal", "low"]
        client = redis.Redis.from_url(redis_server.url(0))
        rows = []

        def measure(label: str, n: int, submit) -> float:
            client.flushall()
            started = time.perf_counter()
            submit(n)
            elapsed = time.perf_counter() - started
            queued = sum(client.llen(f"pdf.{p}") for p in prios)
            assert queued == n, f"{label}: {queued} queued, {n} expected"
            rows.append([label, n, f"{elapsed:.2f}", f"{n / elapsed:,.0f}"])
            return n / elapsed

        data = [sample_invoice(i) for i in range(max(args.jobs, args.naive))]
        naive = measure("naive loop of generate_pdf.delay()", args.naive, lambda n: [
            generate_pdf.delay("invoice.html", data[i], f"inv_{i}.pdf", priority=prios[i % 4])
            for i in range(n)])
        manager = PDFQueueManager(backend=RedisBackend(url=redis_server.url(0)))
        batch = measure("PDFQueueManager.submit_batch()", args.jobs, lambda n: manager.submit_batch(
            [{"template": "invoice.html", "data": data[i], "output": f"inv_{i}.pdf",
              "priority": prios[i % 4]} for i in range(n)]))
        print("Submit rate (jobs recorded in the job store and queued on Redis; no worker)\n")
        print_table(["method", "jobs", "seconds", "jobs/s"], rows)
        print(f"\nbatch / naive: {batch / naive:.2f}x; target >= 2,000 jobs/s with "
              f"submit_batch: {'met' if batch >= 2000 else 'NOT met'}")


if __name__ == "__main__":
    main()
