"""Worker-side hooks used by the callback test (PDFTASKS_ON_COMPLETED / PDFTASKS_ON_FAILED)."""

import os


def _record(line: str) -> None:
    with open(os.environ["PDFTASKS_TEST_HOOK_FILE"], "a") as out:
        out.write(line + "\n")


def completed(job) -> None:
    _record(f"completed {job.job_id} {job.status.value}")


def failed(job, error) -> None:
    _record(f"failed {job.job_id} {job.status.value}")
