"""Resources running out: an output directory that is read-only or full (a real, small
tmpfs), runaway templates and huge payloads against the time and size limits, and the
temporary files a writer killed mid-write leaves behind."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdftasks.errors import InvalidDataError
from pdftasks.settings import MAX_DATA_BYTES
from pdftasks.storage import _HOST, LocalStorage
from tests.faults.conftest import Tally, make_manager

pytestmark = pytest.mark.integration


class SmallDisk:
    """A 1 MiB tmpfs mounted for the test: it can be made read-only or filled up, and be
    given back. Needs root (CAP_SYS_ADMIN); without it the test fails saying so (as root,
    permissions cannot make a directory unwritable, so there is no honest fallback)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True)
        self._mount("-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(path))
        self.filler = path / "filler.bin"

    @staticmethod
    def _mount(*args: str) -> None:
        proc = subprocess.run(["mount", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs for the disk-full test (root needed): "
                        f"mount {' '.join(args)}: {proc.stderr.strip()}")

    def read_only(self) -> None:
        self._mount("-o", "remount,ro", str(self.path))

    def writable(self) -> None:
        self._mount("-o", "remount,rw", str(self.path))

    def fill(self) -> None:
        with open(self.filler, "wb", buffering=0) as out:
            try:
                while True:
                    out.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        assert shutil.disk_usage(self.path).free < 4096

    def free(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "small-disk")
    yield disk
    disk.unmount()


def storage_phase(name: str, break_disk, mend_disk, match: str, redis_url: str,
                  disk: SmallDisk, workers, manager) -> None:
    """Jobs submitted while the disk is broken: those allowed retries wait (RETRYING) and
    complete once it is mended; those without retries FAIL with a clear error and
    complete when resubmitted."""
    tally = Tally(name, redis_url, disk.path, lambda: workers.logs)
    break_disk()
    patient = [{"template": "escape.html", "data": {"value": f"{name} {i}"},
                "output": f"{name}-{i:04d}.pdf", "max_retries": 8} for i in range(10)]
    hasty = [{"template": "escape.html", "data": {"value": f"{name} now {i}"},
              "output": f"{name}-now-{i:04d}.pdf", "max_retries": 0} for i in range(3)]
    patient_ids = manager.submit_batch(patient)
    hasty_ids = manager.submit_batch(hasty)
    tally.add(patient_ids + hasty_ids, [j["output"] for j in patient + hasty])
    assert tally.wait(timeout=60, job_ids=hasty_ids)
    tally.wait_for(lambda c: c["retrying"] + c["processing"] == 10, timeout=60,
                   what="10 jobs retrying")
    failed = [manager.get_job(i) for i in hasty_ids]
    errors = {j.error for j in failed}
    retried = [manager.get_job(i) for i in patient_ids]
    assert all(j.status.value == "failed" and j.retry_count == 0 for j in failed), failed
    assert all(e.startswith("StorageError: cannot write") and match in e for e in errors), errors
    assert all(j.retry_count >= 1 and match in (j.error or match) for j in retried), retried
    mend_disk()
    assert tally.wait(timeout=60, job_ids=patient_ids)
    for job_id in hasty_ids:
        assert manager.retry_job(job_id)
    finished = tally.wait(timeout=60)
    tally.extra.update(failed_at_once=len(failed),
                       error=repr(sorted(errors)[0].rsplit(": ", 1)[-1]),
                       resubmitted=len(hasty_ids),
                       max_retry_count=max(manager.get_job(i).retry_count for i in patient_ids))
    counts = tally.report()
    assert finished and counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert counts["completed"] == 13


def test_output_dir_read_only_then_full_then_back(redis_client, redis_url, workers,
                                                  small_disk, tmp_path) -> None:
    # Given a worker writing to a small tmpfs, retrying storage errors 1 s, 2 s, 4 s … apart
    workers.start(small_disk.path, concurrency=2, retry_backoff_s=1, retry_jitter="false")
    manager = make_manager(redis_url, small_disk.path, tmp_path / "home")
    # When the output directory is read-only, and later when its disk is full
    storage_phase("6a-output-read-only", small_disk.read_only, small_disk.writable,
                  "Read-only file system", redis_url, small_disk, workers, manager)
    storage_phase("6b-disk-full", small_disk.fill, small_disk.free,
                  "No space left on device", redis_url, small_disk, workers, manager)
    # Then (in each phase) the jobs failed or waited with a clear error and succeeded on
    # retry once space returned, leaving no temporary files


def test_runaway_templates_and_huge_payloads_hit_limits_while_jobs_flow(
        redis_client, redis_url, workers, output_dir, tmp_path) -> None:
    # Given a worker with a 3 s soft and a 6 s hard time limit and 1 GiB per child
    workers.start(output_dir, concurrency=2, soft_time_limit_s=3, hard_time_limit_s=6,
                  render_memory_limit_mb=1024)
    tally = Tally("8-runaway-and-huge", redis_url, output_dir, lambda: workers.logs)
    manager = make_manager(redis_url, output_dir, tmp_path / "home")
    # When a payload above PDFTASKS_MAX_DATA_BYTES is submitted, it is refused at once
    started = time.monotonic()
    with pytest.raises(InvalidDataError, match="above the limit"):
        manager.submit_job("escape.html", {"value": "x" * (MAX_DATA_BYTES + 1)}, "too-big.pdf")
    refused_in = time.monotonic() - started
    assert manager.get_queue_stats()["total_jobs"] == 0
    # And runaway templates (endless loop, endless layout) and a 4 MB payload that is within
    # the size limit but would lay out for minutes go in among 40 ordinary jobs
    huge = ["lorem ipsum dolor sit amet " * 32_000] * 5  # each string within its limit
    bad = [("endless.html", {}), ("runaway.html", {}), ("escape.html", {"value": huge})] * 2
    jobs, bad_names = [], set()
    for i in range(46):
        if i % 8 == 0 and bad:
            template, data = bad.pop()
            name = f"bad-{i:02d}-{template.replace('.html', '')}.pdf"
            bad_names.add(name)
        else:
            template, data, name = "escape.html", {"value": f"good {i}"}, f"good-{i:02d}.pdf"
        jobs.append({"template": template, "data": data, "output": name})
    ids = manager.submit_batch(jobs)
    tally.add(ids, [j["output"] for j in jobs])
    finished = tally.wait(timeout=120)
    # Then each bad job FAILED on the time limit, and the others all completed meanwhile
    by_name = {j.output_filename: j for j in map(manager.get_job, ids)}
    bad_jobs = [by_name[n] for n in bad_names]
    good_jobs = [j for n, j in by_name.items() if n not in bad_names]
    last_bad = max(j.completed_at for j in bad_jobs)
    tally.extra.update(refused_over_size_in_s=round(refused_in, 2),
                       bad_failed=sum(j.status.value == "failed" for j in bad_jobs),
                       max_bad_s=round(max(j.duration_s for j in bad_jobs), 1),
                       good_done_before_last_bad=sum(j.completed_at < last_bad for j in good_jobs))
    counts = tally.report()
    assert finished and counts["lost"] == 0, tally.lost_jobs()
    assert counts["duplicated"] == 0 and counts["tmp"] == 0
    assert counts["completed"] == 40 and counts["failed"] == 6
    for job in bad_jobs:
        assert job.error.startswith("RenderTimeoutError"), (job.output_filename, job.error)
        assert job.duration_s < 6 + 2, (job.output_filename, job.duration_s)
        assert not list(output_dir.rglob(job.output_filename))
    assert refused_in < 5
    assert tally.extra["good_done_before_last_bad"] >= 20


def test_temporary_files_of_dead_writers_are_discarded(output_dir) -> None:
    # Given temporary files left by a writer that died between writing and renaming (a
    # process that really ran and exited), next to files of live or other writers
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = output_dir / f".x.pdf.{_HOST}-{dead.pid}.ab12_z.tmp"
    live = output_dir / f".x.pdf.{_HOST}-{os.getpid()}.cd34.tmp"
    other_host = output_dir / f".x.pdf.elsewhere-{dead.pid}.ef56.tmp"
    other_file = output_dir / f".y.pdf.{_HOST}-{dead.pid}.gh78.tmp"
    for path in (stale, live, other_host, other_file):
        path.write_bytes(b"%PDF-partial")
    # When the job writing x.pdf is delivered again
    removed = LocalStorage(output_dir).discard_stale_temps("x.pdf")
    # Then only the dead writer's file of x.pdf is gone
    assert removed == [stale] and not stale.exists()
    assert live.exists() and other_host.exists() and other_file.exists()
