"""Integration test: acknowledgements deferred by the worker's Redis channel
(``pdftasks.brokers.redis.QoS.ack``) reach Redis, with a backlog and once the worker is idle.
Real Redis, a real ``pdftasks worker``, real WeasyPrint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pdftasks import JobStatus
from tests.faults.conftest import Workers, make_manager

pytestmark = pytest.mark.integration


def test_every_acknowledgement_is_written_when_the_worker_goes_idle(
        redis_client, redis_url, output_dir: Path, tmp_path: Path) -> None:
    # Given a worker that renders a backlog of 12 jobs
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    ids = manager.submit_batch([{"template": "escape.html", "data": {"value": f"ack {i}"},
                                 "output": f"ack-{i}.pdf"} for i in range(12)])
    pool = Workers(tmp_path)
    try:
        pool.start(output_dir, concurrency=2, broker_url=redis_url)
        for job_id in ids:
            assert manager.wait_for_job(job_id, timeout=90).status is JobStatus.COMPLETED
        # Then, with the worker still running and idle, no message stays unacknowledged
        # in Redis (the last ones are written by the event loop's timer within 0.2 s)
        deadline = time.monotonic() + 5
        while redis_client.hlen("unacked") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert redis_client.hlen("unacked") == 0, redis_client.hkeys("unacked")
        assert redis_client.zcard("unacked_index") == 0
        # And nothing was delivered twice
        assert [manager.get_job(i).attempts for i in ids] == [1] * 12
    finally:
        pool.reap()
