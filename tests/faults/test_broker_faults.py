"""The broker going away: a Redis restart (graceful and crash) during a 500-job run, and a
broker that cannot be reached when a job is submitted. Real redis-server processes."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time

import pytest
import redis

from pdftasks import JobStatus
from pdftasks.celery_app import GENERATE_PDF, create_app
from pdftasks.errors import BrokerUnavailableError
from pdftasks.settings import Settings
from pdftasks.stores import Job
from tests.conftest import REDIS_URL, TEMPLATES, free_port, wait_for
from tests.faults.conftest import (
    Supervisor,
    Tally,
    kill_tree,
    make_manager,
    record_summary,
    wait_port_closed,
    worker_log_text,
)

pytestmark = pytest.mark.integration


def test_redis_restarts_during_500_jobs(own_redis, workers, output_dir, tmp_path) -> None:
    # Given our own Redis with an append-only file fsynced on every write, 500 queued jobs,
    # and a worker whose visibility timeout is short enough to matter within the test
    server = own_redis()
    tally = Tally("4-redis-restart", server.url, output_dir, lambda: workers.logs)
    manager = make_manager(server.url, output_dir, tmp_path / "home")
    jobs = [{"template": "escape.html", "data": {"value": f"restart {i}"},
             "output": f"restart-{i:04d}.pdf"} for i in range(500)]
    tally.add(manager.submit_batch(jobs), [j["output"] for j in jobs])
    # (supervised: a worker that exits is replaced, as systemd's Restart=always does; see
    # the report of worker exits in the count line)
    supervisor = Supervisor(workers, output_dir=output_dir, concurrency=2,
                            broker_url=server.url, soft_time_limit_s=5, hard_time_limit_s=8,
                            visibility_timeout_s=15)
    supervisor.start()
    # When Redis is stopped (SIGTERM) and later crashes (SIGKILL), each time down for 2 s
    # and started again on the same port while jobs render
    restarts = []
    for threshold, sig in ((100, signal.SIGTERM), (300, signal.SIGKILL)):
        tally.wait_for(lambda c, n=threshold: c["completed"] >= n, timeout=120,
                       what=f"{threshold} completed")
        server.stop(sig)
        wait_port_closed(server.port)
        restarts.append(sig.name)
        time.sleep(2)
        server.start()
    # Then every job reaches a final status, with one whole file each
    finished = tally.wait(timeout=150)
    supervisor.stop()
    log = worker_log_text(workers.logs)
    tally.extra.update(redis_restarts=",".join(restarts), worker_exits=supervisor.restarts,
                       worker_unrecoverable_errors=log.count("Unrecoverable error"),
                       record_updates_retried=log.count("; retrying for up to"),
                       lost_messages_resent=log.count("its message was lost by the broker"))
    counts = tally.report()
    assert finished and counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert counts["completed"] == 500 and counts["failed"] == 0


class CutAfterDelivery:
    """A TCP proxy in front of Redis that plays "Redis went away just after it handed out a
    message": when the reply to a client's ``BRPOP`` carries ``marker``, the proxy passes
    that reply on, closes every connection and refuses new ones for ``down_s`` seconds. The
    client then holds a message that Redis no longer has, and cannot record it as unacked."""

    def __init__(self, upstream_port: int, marker: bytes, down_s: float = 3.0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.marker, self.down_s = marker, down_s
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.cut = threading.Event()
        self.down = False
        self.lock = threading.Lock()
        self.socks: set[socket.socket] = set()
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            with self.lock:
                self.socks |= {client, server}
            sent_brpop = threading.Event()
            for src, dst, to_client in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, to_client, sent_brpop),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool,
              sent_brpop: threading.Event) -> None:
        while True:
            try:
                data = src.recv(1 << 20)
            except OSError:
                data = b""
            if not data or self.down:
                break
            if not to_client and b"BRPOP" in data:
                sent_brpop.set()
            deliver = to_client and sent_brpop.is_set() and self.marker in data
            if deliver and not self.cut.is_set():
                self.down = True  # nothing else passes from here on
                self.cut.set()
                with contextlib.suppress(OSError):
                    dst.sendall(data)
                self._go_down()
                return
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()

    def _go_down(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            socks, self.socks = self.socks, set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        time.sleep(self.down_s)
        self.down = False
        self._listen()

    def close(self) -> None:
        self.down = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for sock in self.socks:
                sock.close()


@pytest.mark.parametrize("worker_exits", [False, True], ids=["worker-reconnects",
                                                         "worker-exits-while-down"])
def test_message_taken_just_before_redis_goes_away_is_delivered_again(
        worker_exits, own_redis, workers, output_dir, tmp_path) -> None:
    # Given a worker whose broker connection passes through a proxy that cuts all its
    # connections, and refuses new ones for a while, right after Redis handed it a job's
    # message (the job store and result backend are reached directly)
    server = own_redis()
    manager = make_manager(server.url, output_dir, tmp_path / "home")
    name = "4b-message-in-flight-at-outage" + ("-worker-exits" if worker_exits else "")
    tally = Tally(name, server.url, output_dir, lambda: workers.logs)
    job_id = manager.submit_job("escape.html", {"value": "in flight"}, "in-flight.pdf")
    tally.add([job_id], ["in-flight.pdf"])
    proxy = CutAfterDelivery(server.port, marker=job_id.encode(),
                             down_s=8.0 if worker_exits else 3.0)
    start = {"concurrency": 1, "broker_url": proxy.url, "result_backend": server.url,
             "job_store_url": server.url}
    try:
        first = workers.start(output_dir, **start)
        # When the worker takes the job and the broker goes away before it recorded it
        assert proxy.cut.wait(60), "the worker never took the job"
        if worker_exits:
            # ... and the worker dies before the broker is back (its message waits in the
            # spool under PDFTASKS_HOME); a new worker starts with the same home
            spool = tmp_path / "home" / "rescued"
            wait_for(lambda: list(spool.glob("*/*.json")), timeout=5,
                     what="the message spooled")
            kill_tree(first.proc.pid)
            workers.start(output_dir, wait=False, **start)
        # Then, once the broker is back, the job is delivered again and completes
        finished = tally.wait(timeout=60)
    finally:
        proxy.close()
    put_back = [log.read_text(errors="replace").count("back on their queues")
                for log in workers.logs]
    log = worker_log_text(workers.logs)
    tally.extra.update(put_back_by_worker=put_back,
                       worker_saw_loss=log.count("broker connection lost while taking"))
    counts = tally.report()
    assert finished and counts["completed"] == 1, (tally.lost_jobs(), log[-3000:])
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert put_back == ([0, 1] if worker_exits else [1])


class Blackhole:
    """A TCP port that accepts connections and never answers (a hung or partitioned
    server): clients find out only through their timeouts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"

    def close(self) -> None:
        self.sock.close()


def submit_outcome(submit, store_client: redis.Redis, namespace: str) -> tuple[str, float]:
    def snapshot() -> dict[bytes, object]:
        return {key: store_client.dump(key) for key in store_client.keys(f"{namespace}:*")}

    before = snapshot()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as caught:
        submit()
    elapsed = time.monotonic() - started
    # Nothing half-recorded: the job store is exactly as before
    assert snapshot() == before
    return type(caught.value).__name__, elapsed


@pytest.mark.parametrize("kind", ["refused", "stopped", "blackhole", "broker-only"])
def test_unreachable_broker_fails_submit_fast_and_records_nothing(
        kind, redis_client, own_redis, tmp_path, output_dir) -> None:
    # Given a broker (and result store) that cannot be reached, while the job store on the
    # test Redis can: a job is recorded before it is published, so a failed publish must
    # remove the record again. "stopped": a broker that worked for this client, then stopped;
    # "broker-only": the result store (on the test Redis) answers, the broker does not.
    blackhole = Blackhole() if kind == "blackhole" else None
    server = own_redis() if kind == "stopped" else None
    broker = (blackhole.url if blackhole else server.url if server
              else f"redis://127.0.0.1:{free_port()}/0")
    namespace = f"f5{kind}"
    stores = {"job_store_url": REDIS_URL, "queue_namespace": namespace}
    if kind == "broker-only":
        stores["result_backend"] = REDIS_URL
    settings = Settings(broker_url=broker, templates_dir=TEMPLATES, output_dir=output_dir,
                        home=tmp_path / "home", **stores)
    task = create_app(settings).tasks[GENERATE_PDF]
    manager = make_manager(broker, output_dir, tmp_path / "home", **stores)
    manager.store.create(Job(job_id="dead-letter", template="escape.html", data={"value": "z"},
                             output_filename="z.pdf", status=JobStatus.FAILED,
                             error="StorageError: disk full"))
    if server:
        task.delay("escape.html", {"value": "w"}, "w.pdf")
        manager.submit_job("escape.html", {"value": "v"}, "v.pdf")
        server.stop(signal.SIGKILL)
    submits = {
        "delay": lambda: task.delay("escape.html", {"value": "x"}, "x.pdf"),
        "submit_job": lambda: manager.submit_job("escape.html", {"value": "y"}, "y.pdf"),
        "submit_batch": lambda: manager.submit_batch(
            [{"template": "escape.html", "data": {"value": i}, "output": f"b{i}.pdf"}
             for i in range(20)]),
        "retry_job": lambda: manager.retry_job("dead-letter"),
    }
    if blackhole:  # each costs one socket timeout; the others take the same path
        submits = {k: submits[k] for k in ("delay", "submit_job")}
    try:
        # When jobs are submitted through generate_pdf.delay and the job API
        outcomes = {name: submit_outcome(submit, redis_client, namespace)
                    for name, submit in submits.items()}
    finally:
        if blackhole:
            blackhole.close()
    # Then each raised BrokerUnavailableError within a bounded time and recorded nothing
    tried = sum(20 if name == "submit_batch" else 1 for name in outcomes)
    record_summary(f"[faults] 5-broker-unreachable-{kind}: submitted={tried} recorded=0 "
                   "lost=0 duplicated=0 | " + " ".join(f"{k}={name}@{t:.1f}s"
                                                       for k, (name, t) in outcomes.items()))
    assert all(elapsed < 15 for _, elapsed in outcomes.values()), outcomes
    assert manager.get_job("dead-letter").status is JobStatus.FAILED
