#!/usr/bin/env python
"""HTTP API load: POST /api/pdf and GET /api/pdf/{id} on loopback, no PDF workers.

Target (issue 4): on this 2-core machine, >= 500 submits/s with p99 <= 50 ms while workers
are idle. Every submit is a real one (checked, recorded in the job store, queued on Redis);
no worker runs, so nothing is rendered and the queue just grows.

Methodology
-----------
* A private ``redis-server`` (127.0.0.1, free port, no persistence) and ``pdftasks api``
  (uvicorn with uvloop and httptools, ``--no-access-log``) with ``--api-workers`` processes
  are started for the run and stopped at the end. One tenant, rate limit out of the way.
* The client is a small asyncio HTTP/1.1 client on keep-alive connections (raw sockets,
  uvloop), so that the load generator uses as little of the two cores as possible; a
  generic client such as httpx costs more CPU per request than the server.
* Each phase runs for ``--duration`` seconds after a 1 s warm-up (not measured):
  - ``submit max``: closed loop, ``--concurrency`` connections each sending POST /api/pdf
    back to back (the one-page sample invoice data, 4 priorities round-robin): the most the
    server can take; latency here includes queueing behind the other connections.
  - ``submit @rate``: open loop at ``--rate`` requests/s (500 by default, the target):
    requests are scheduled at fixed times, whatever the previous ones are doing, and the
    latency is measured from the scheduled time, so a slow server cannot hide its queueing
    (no coordinated omission).
  - ``status max`` and ``status @rate``: the same for GET /api/pdf/{id} over the submitted
    ids.
* Every response must be 202 (submit) or 200 (status); any other is counted as an error.
* Percentiles: linear interpolation between closest ranks. The CPU time used by other
  programs during each phase is printed (``foreign`` cores): above 0.25 the numbers are
  disturbed (e.g. a test suite running at the same time). ``cpu ms/req`` is the CPU time
  the API processes used per request, which such noise hardly changes.

Run: ``.venv/bin/python benchmarks/api_load.py`` (about a minute per API process count).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    CpuMonitor,
    RedisServer,
    WorkerProcess,
    free_port,
    percentile,
    print_table,
    use_pdftasks_env,
)

KEY = "bench-key"


class Connection:
    """One keep-alive HTTP/1.1 connection: send a prepared request, read the response.

    A connection the server closed while it was idle (uvicorn's keep-alive timeout) is
    opened again and the request sent again: the server never saw it.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, port: int) -> Connection:
        conn = cls(port)
        await conn._connect()
        return conn

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        try:
            return await self._request(raw)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            await self._connect()
            return await self._request(raw)

    async def _request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def post_request(port: int, body: bytes) -> bytes:
    return (f"POST /api/pdf HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def get_request(port: int, job_id: str) -> bytes:
    return (f"GET /api/pdf/{job_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {KEY}\r\n\r\n").encode()


class Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.elapsed = 0.0
        self.foreign = float("nan")
        self.server_cpu_s = float("nan")
        self.requests = 0  # including the warm-up


def session_cpu_s(session: int) -> float:
    """CPU seconds used so far by the processes of one session (the API server and its
    uvicorn workers), from /proc; NaN where that is not available."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    try:
        entries = os.listdir("/proc")
    except OSError:
        return float("nan")
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[3]) == session:
            total += int(rest[11]) + int(rest[12])
    return total / tick


async def closed_loop(port: int, make: Callable[[int], bytes], duration: float,
                      concurrency: int, expect: int, on_body: Callable[[bytes], None],
                      phase: Phase) -> None:
    conns = [await Connection.open(port) for _ in range(concurrency)]
    counter = iter(range(10**9))
    measuring = False
    stop_at = 0.0

    async def run(conn: Connection) -> None:
        while time.perf_counter() < stop_at:
            phase.requests += 1
            raw = make(next(counter))
            started = time.perf_counter()
            status, body = await conn.request(raw)
            if measuring and started < stop_at:
                phase.latencies.append(time.perf_counter() - started)
                phase.statuses[status] += 1
                if status == expect:
                    on_body(body)

    stop_at = time.perf_counter() + 1.0  # warm-up
    await asyncio.gather(*(run(c) for c in conns))
    measuring = True
    begin = time.perf_counter()
    stop_at = begin + duration
    await asyncio.gather(*(run(c) for c in conns))
    phase.elapsed = time.perf_counter() - begin
    for conn in conns:
        conn.close()


async def open_loop(port: int, make: Callable[[int], bytes], duration: float, rate: float,
                    expect: int, on_body: Callable[[bytes], None], phase: Phase,
                    max_connections: int = 256) -> None:
    idle: list[Connection] = [await Connection.open(port) for _ in range(16)]
    opened = len(idle)
    available = asyncio.Condition()
    tasks: set[asyncio.Task[None]] = set()

    async def acquire() -> Connection:
        nonlocal opened
        async with available:
            while not idle:
                if opened < max_connections:
                    opened += 1
                    return await Connection.open(port)
                await available.wait()
            return idle.pop()

    async def release(conn: Connection) -> None:
        async with available:
            idle.append(conn)
            available.notify()

    async def one(i: int, scheduled: float, measured: bool) -> None:
        phase.requests += 1
        conn = await acquire()
        status, body = await conn.request(make(i))
        done = time.perf_counter()
        await release(conn)
        if measured:
            phase.latencies.append(done - scheduled)
            phase.statuses[status] += 1
            if status == expect:
                on_body(body)

    warmup = 1.0
    start = time.perf_counter()
    total = int((warmup + duration) * rate)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, scheduled, scheduled >= start + warmup))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    phase.elapsed = time.perf_counter() - (start + warmup)
    for conn in idle:
        conn.close()


def run_phases(port: int, args: argparse.Namespace, sessions: list[int]) -> list[Phase]:
    from pdftasks.samples import sample_invoice

    prios = ["urgent", "high", "normal", "low"]
    bodies = [json.dumps({"template": "invoice.html", "data": sample_invoice(i),
                          "filename": f"inv_{i}.pdf", "priority": prios[i % 4]}).encode()
              for i in range(64)]
    posts = [post_request(port, b) for b in bodies]
    job_ids: list[str] = []

    def keep_id(body: bytes) -> None:
        if len(job_ids) < 50_000:
            job_ids.append(json.loads(body)["job_id"])

    def submit(i: int) -> bytes:
        return posts[i % len(posts)]

    def status(i: int) -> bytes:
        return get_request(port, job_ids[i % len(job_ids)])

    phases = []
    for name, make, expect, on_body, rate in (
            ("POST /api/pdf  max", submit, 202, keep_id, None),
            (f"POST /api/pdf  @{args.rate:g}/s", submit, 202, keep_id, args.rate),
            ("GET /api/pdf/{id}  max", status, 200, lambda b: None, None),
            (f"GET /api/pdf/{{id}}  @{args.rate:g}/s", status, 200, lambda b: None, args.rate)):
        phase = Phase(name)
        cpu = CpuMonitor(sessions)
        cpu.start()
        server_cpu = session_cpu_s(sessions[0])
        if rate is None:
            coro = closed_loop(port, make, args.duration, args.concurrency, expect, on_body,
                               phase)
        else:
            coro = open_loop(port, make, args.duration, rate, expect, on_body, phase)
        asyncio.run(coro)
        phase.foreign = cpu.foreign_cores()
        phase.server_cpu_s = session_cpu_s(sessions[0]) - server_cpu
        phases.append(phase)
    return phases


def wait_http(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=1).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="connections of the closed-loop phases")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="requests/s of the open-loop phases (the target)")
    parser.add_argument("--api-workers", default="1,2",
                        help="comma-separated API process counts to measure")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdftasks-api-load-") as tmp:
        tmp_path = Path(tmp)
        with RedisServer(tmp_path) as redis_server:
            from hashlib import sha256

            env = use_pdftasks_env(tmp_path, redis_server.url(0),
                                   api_keys=f"bench:{sha256(KEY.encode()).hexdigest()}",
                                   api_rate_limit_per_min=str(10**9))
            for n in (int(x) for x in args.api_workers.split(",")):
                port = free_port()
                server = WorkerProcess(
                    [sys.executable, "-m", "pdftasks", "api", "--port", str(port),
                     "--workers", str(n), "--no-access-log", "--log-level", "warning"],
                    env, tmp_path / f"api-{n}.log", cwd=ROOT)
                with server:
                    wait_http(port)
                    phases = run_phases(port, args, [server.proc.pid,
                                                     redis_server.proc.pid])
                    if not server.alive():
                        raise RuntimeError(f"API server died:\n{server.log_tail()}")
                for p in phases:
                    ok = p.statuses.get(202 if p.name.startswith("POST") else 200, 0)
                    errors = sum(p.statuses.values()) - ok
                    ms = [x * 1000 for x in p.latencies]
                    rows.append([f"{n} API proc  {p.name}", ok, f"{ok / p.elapsed:,.0f}",
                                 f"{percentile(ms, 50):.1f}", f"{percentile(ms, 90):.1f}",
                                 f"{percentile(ms, 99):.1f}", f"{max(ms):.1f}", errors,
                                 f"{p.server_cpu_s * 1000 / max(1, p.requests):.2f}",
                                 f"{p.foreign:.2f}"])
    print(f"HTTP API on loopback, {os.cpu_count()} cores, {args.duration:g} s per phase, "
          f"closed loop with {args.concurrency} connections ('max') or open loop at a fixed "
          "rate ('@'); no PDF workers\n")
    print_table(["phase", "ok", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
                 "cpu ms/req", "foreign"], rows)
    print("\ncpu ms/req: CPU time of the API processes per request (warm-up included), which "
          "other load on the machine hardly changes; foreign: cores used by other programs "
          "during the phase (above 0.25 the latencies are disturbed)")
    verdicts = []
    for r in rows:
        if "POST" not in r[0]:
            continue
        ok = float(r[2].replace(",", "")) >= 0.98 * args.rate and float(r[5]) <= 50
        verdicts.append(f"  {r[0]}: {r[2]} submits/s, p99 {r[5]} ms: "
                        f"{'met' if ok else 'not met'}")
    print(f"\ntarget: >= {args.rate:g} submits/s with p99 <= 50 ms\n" + "\n".join(verdicts))


if __name__ == "__main__":
    main()
