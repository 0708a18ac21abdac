"""Worker-side hooks used by the callback test (PDFTASKS_ON_COMPLETED / PDFTASKS_ON_FAILED)."""

import os


def _record(line: str) -> None:
    with open(os.environ["PDFTASKS_TEST_HOOK_FILE"], "a") as out:
        out.write(line + "\n")


def completed(job) -> None:
    _record(f"completed {job.job_id} {job.status.value}")


def failed(job, error) -> None:
    _record(f"failed {job.job_id} {job.status.value}")


def hold_until_next_taken(job) -> None:
    """For a job with metadata ``{"hold": true}``: wait in the pool process, during the end of
    the job, until the worker's main process has taken another message (kombu's unacked
    record holds two), for up to ``PDFTASKS_TEST_HOLD_S`` seconds; then record how long that
    took ("never" if it did not) and how many messages were taken 0.5 s later."""
    import time

    import redis

    if not (job.metadata or {}).get("hold"):
        return
    client = redis.Redis.from_url(os.environ["PDFTASKS_BROKER_URL"])
    start = time.monotonic()
    deadline = start + float(os.environ["PDFTASKS_TEST_HOLD_S"])
    taken = "never"
    while time.monotonic() < deadline:
        if client.hlen("unacked") >= 2:
            taken = f"{time.monotonic() - start:.3f}"
            break
        time.sleep(0.005)
    time.sleep(0.5)
    _record(f"held {job.job_id} {taken} {client.hlen('unacked')}")
    client.close()
