"""The AWS deployment (SQS broker, DynamoDB job records and results, S3 PDFs) against a real
SQS/DynamoDB/S3-compatible endpoint: ``moto_server`` on a free loopback port, reached over
HTTP by boto3, kombu (its SQS transport, pycurl) and pdftasks alike. No in-process mocks.

Each test has its own queue namespace (its own four SQS queues with dead-letter queues and
its own records in the shared table) and real ``pdftasks worker`` processes with WeasyPrint.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdftasks import JobPriority, JobStatus, PDFQueueManager, PDFService, PDFServiceConfig
from pdftasks.client import SQSBackend
from pdftasks.samples import sample_invoice
from pdftasks.settings import Settings, get_settings
from tests.conftest import ROOT, TEMPLATES, Worker, free_port

pytestmark = pytest.mark.integration

TABLE = "pdftasks-tests"
BUCKET = "pdftasks-tests"
#: Long polling in the tests: short, so a worker's polls end quickly at shutdown.
WAIT_S = 1
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def _moto_binary() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if not found:
        pytest.fail("moto_server is not installed: pip install 'moto[server]' (the dev extra)")
    return found


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto_server`` on 127.0.0.1 for the session; fails (never skips) if it cannot run."""
    try:
        import pycurl  # noqa: F401 - kombu's SQS transport polls through it
    except ImportError:
        pytest.fail("pycurl is not installed: install pdftasks[sqs]")
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([_moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"moto_server did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(timeout=10)


def aws_settings(endpoint: str, namespace: str, tmp_path: Path, **overrides: Any) -> Settings:
    values = {**get_settings().model_dump(), "broker_url": "sqs://", "result_backend": None,
              "job_store_url": None, "aws_endpoint_url": endpoint, "aws_region": "us-east-1",
              "queue_namespace": namespace, "dynamodb_table": TABLE,
              "storage": f"s3://{BUCKET}/{namespace}", "sqs_wait_time_s": WAIT_S,
              "home": tmp_path / "home", "output_dir": tmp_path / "out",
              "templates_dir": TEMPLATES, "log_level": "INFO", **overrides}
    return Settings(**values)


@pytest.fixture(scope="session")
def aws_resources(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The table and the bucket, created by pdftasks' own setup."""
    from pdftasks.contrib.aws import ensure_bucket, ensure_table

    s = aws_settings(moto_endpoint, "setup", tmp_path_factory.mktemp("setup"))
    assert ensure_table(s) == TABLE
    assert ensure_bucket(s) == BUCKET
    return moto_endpoint


def aws_client(service: str, endpoint: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_manager(aws_resources: str, namespace: str, tmp_path: Path):
    """``make(start=True, num_workers=2, max_receives=None, **settings)``: a manager on SQS
    with its queues created by ``pdftasks.contrib.aws.ensure_queues``."""
    from pdftasks.contrib.aws import ensure_queues

    managers: list[PDFQueueManager] = []

    def make(start: bool = True, num_workers: int = 2, max_receives: int | None = None,
             storage: str | None = None, **settings: Any) -> PDFQueueManager:
        s = aws_settings(aws_resources, namespace, tmp_path, **settings)
        ensure_queues(s, max_receives=max_receives)
        service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES,
                                              output_dir=tmp_path / "out"))
        backend = SQSBackend(region_name="us-east-1", dynamodb_table=TABLE,
                             queue_name=namespace, endpoint_url=aws_resources,
                             storage=storage or f"s3://{BUCKET}/{namespace}",
                             sqs_wait_time_s=WAIT_S)
        manager = PDFQueueManager(backend=backend, pdf_service=service,
                                  num_workers=num_workers,
                                  settings={"home": tmp_path / "home", **settings})
        managers.append(manager)
        if start:
            manager.start()
        return manager

    yield make
    for manager in managers:
        manager.stop(timeout=15)


def sqs_env(endpoint: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    """Environment of a process configured for AWS only through settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFTASKS_")}
    env.update(AWS_ENV)
    env.update({
        "PDFTASKS_BROKER_URL": "sqs://", "PDFTASKS_AWS_ENDPOINT_URL": endpoint,
        "PDFTASKS_QUEUE_NAMESPACE": namespace, "PDFTASKS_DYNAMODB_TABLE": TABLE,
        "PDFTASKS_STORAGE": f"s3://{BUCKET}/{namespace}",
        "PDFTASKS_SQS_WAIT_TIME_S": str(WAIT_S), "PDFTASKS_TEMPLATES_DIR": str(TEMPLATES),
        "PDFTASKS_HOME": str(tmp_path / "home"), "PDFTASKS_OUTPUT_DIR": str(tmp_path / "out"),
    })
    return env


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def text_of(pdf: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf)).pages)


def test_job_api_on_sqs_dynamodb_and_s3(make_manager, aws_resources, namespace) -> None:
    manager = make_manager()
    assert manager.settings.is_sqs and type(manager.store).__name__ == "DynamoDBJobStore"
    # Submit one job, then a batch with every priority (the guide's examples)
    job_id = manager.submit_job(
        template="invoice.html", data=sample_invoice(1, client="Acme Corp"),
        output_filename="invoice_001.pdf", css_file="invoice_styles.css",
        priority=JobPriority.HIGH, metadata={"user_id": 123}, max_retries=3)
    batch = manager.submit_batch(
        [{"template": "invoice.html", "data": sample_invoice(10 + i),
          "output": f"batch_{i:02d}.pdf", "priority": JobPriority(i % 4)} for i in range(12)],
        priority=JobPriority.NORMAL)
    assert len(set(batch)) == 12
    assert manager.get_job_status(job_id) in (JobStatus.PENDING, JobStatus.PROCESSING,
                                              JobStatus.COMPLETED)
    assert manager.get_job_status("no-such-job") is None
    # Process and follow
    job = manager.wait_for_job(job_id, timeout=60)
    assert (job.status, job.priority, job.metadata, job.retry_count) == (
        JobStatus.COMPLETED, JobPriority.HIGH, {"user_id": 123}, 0)
    assert 0 < job.duration_s < 30 and job.pages == 1
    for i in batch:
        assert manager.wait_for_job(i, timeout=90).status is JobStatus.COMPLETED
    assert [manager.get_job(i).priority for i in batch[:4]] == list(JobPriority)
    # The PDF is an S3 object: s3:// result path, content type, metadata
    key = f"{namespace}/{namespace}/_/{job_id}/invoice_001.pdf"  # prefix, then server's key
    assert job.result_path == f"s3://{BUCKET}/{key}"
    head = aws_client("s3", aws_resources).head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "application/pdf"
    assert head["Metadata"]["generator"] == "pdftasks"
    assert head["Metadata"]["filename"] == "invoice_001.pdf"
    # Presigned download over HTTP from the endpoint: a real PDF with the invoice
    url = manager.download_url(job_id, expires_s=300)
    assert url.startswith(aws_resources) and "X-Amz-Signature=" in url
    status, ctype, body = fetch(url)
    assert (status, ctype) == (200, "application/pdf") and body.startswith(b"%PDF")
    assert "Acme Corp" in text_of(body) and "INV-2026-0001" in text_of(body)
    assert manager.download_url("no-such-job") is None
    # Listing by status, newest first, and exact counts
    completed = manager.backend.get_all_jobs(status=JobStatus.COMPLETED)
    assert {j.job_id for j in completed} == {job_id, *batch}
    assert [j.created_at for j in completed] == sorted((j.created_at for j in completed),
                                                       reverse=True)
    assert manager.backend.get_all_jobs(status=JobStatus.FAILED) == []
    assert len(manager.backend.get_all_jobs(limit=5)) == 5
    stats = manager.get_queue_stats()
    assert (stats["total_jobs"], stats["completed"], stats["pending"]) == (13, 13, 0)
    assert stats["workers"] == 2 and stats["running"] is True
    assert manager.cancel_job(job_id) is False


def test_queue_stats_per_priority_then_cancel(make_manager, aws_resources, namespace) -> None:
    # Given jobs queued with no worker running
    manager = make_manager(start=False)
    per_priority = {JobPriority.URGENT: 1, JobPriority.HIGH: 2, JobPriority.NORMAL: 3,
                    JobPriority.LOW: 4}
    ids = {p: [manager.submit_job("invoice.html", sample_invoice(i), f"{p.label}_{i}.pdf",
                                  priority=p) for i in range(n)]
           for p, n in per_priority.items()}
    # Then the SQS attributes show them per priority queue, as do the job records
    stats = manager.get_queue_stats()
    names = {p: f"{namespace}.{p.label}" for p in JobPriority}
    assert stats["queue_depth"] == {names[p]: n for p, n in per_priority.items()}
    assert stats["pending_by_priority"] == {p.label: n for p, n in per_priority.items()}
    assert stats["sqs"][names[JobPriority.LOW]] == {
        "waiting": 4, "in_flight": 0, "delayed": 0, "dead_letters": 0}
    assert (stats["pending"], stats["workers"], stats["running"]) == (10, 0, False)
    # When a pending job is cancelled (no remote control: through the job table)
    dropped = ids[JobPriority.LOW][1]
    assert manager.cancel_job(dropped) is True
    assert manager.cancel_job(dropped) is False
    assert manager.get_job_status(dropped) is JobStatus.CANCELLED
    assert manager.get_queue_stats()["cancelled"] == 1
    # Then the workers skip it: every other job completes, it never produces a PDF
    manager.start()
    for job_id in (i for group in ids.values() for i in group if i != dropped):
        manager.wait_for_job(job_id, timeout=90)
    with pytest.raises(RuntimeError, match="cancelled"):
        manager.wait_for_job(dropped, timeout=5)
    listing = aws_client("s3", aws_resources).list_objects_v2(Bucket=BUCKET,
                                                              Prefix=f"{namespace}/")
    keys = {o["Key"].split("/", 1)[1] for o in listing.get("Contents", [])}
    assert len(keys) == 9 and "low_1.pdf" not in keys
    deadline = time.monotonic() + 20  # the skipped message is acknowledged too
    while sum(a["waiting"] + a["in_flight"] for a in
              manager.get_queue_stats()["sqs"].values()):
        assert time.monotonic() < deadline, manager.get_queue_stats()["sqs"]
        time.sleep(0.5)
    final = manager.get_queue_stats()
    assert (final["completed"], final["cancelled"], final["total_jobs"]) == (9, 1, 10)
    assert [j.job_id for j in manager.backend.get_all_jobs(status=JobStatus.CANCELLED)] == [
        dropped]


def test_priority_order_over_a_mixed_backlog_on_sqs(make_manager) -> None:
    # Given a backlog of every priority queued before the (single-process) worker starts
    manager = make_manager(start=False, num_workers=1)
    order = [JobPriority.LOW] * 4 + [JobPriority.NORMAL] * 4 + [JobPriority.HIGH] * 4 + \
        [JobPriority.URGENT] * 2
    ids = [manager.submit_job("invoice.html", sample_invoice(i), f"mixed_{i:02d}.pdf",
                              priority=p) for i, p in enumerate(order)]
    # When it drains the backlog
    manager.start()
    jobs = [manager.wait_for_job(i, timeout=90) for i in ids]
    started = [j.priority for j in sorted(jobs, key=lambda j: j.started_at)]
    # Then (priority polling) urgent jobs started before any normal one, and the others
    # in strict order: every high before any normal, every normal before any low
    rest = [p for p in started if p is not JobPriority.URGENT]
    assert rest == sorted(rest), started
    assert max(i for i, p in enumerate(started) if p is JobPriority.URGENT) < \
        started.index(JobPriority.NORMAL), started


def test_transient_s3_error_is_retried_with_backoff(make_manager, aws_resources,
                                                    namespace) -> None:
    # Given a storage bucket that does not exist yet (S3 answers NoSuchBucket)
    bucket = f"late-{namespace}"
    s3 = aws_client("s3", aws_resources)
    manager = make_manager(storage=f"s3://{bucket}/pdfs", retry_backoff_s=1,
                           retry_jitter=False)
    failures: list[tuple[float, int, JobStatus, str]] = []

    def on_job_failed(job, error):
        failures.append((time.monotonic(), job.retry_count, job.status, error))
        if len(failures) == 2:  # the bucket appears after the second failed attempt
            s3.create_bucket(Bucket=bucket)

    manager.on_job_failed = on_job_failed
    job_id = manager.submit_job("invoice.html", sample_invoice(7), "retried.pdf",
                                priority=JobPriority.URGENT, max_retries=4)
    # When the worker retries
    job = manager.wait_for_job(job_id, timeout=60)
    # Then both failed attempts were RETRYING with the storage error, 1 s then 2 s apart
    assert [(n, s) for _, n, s, _ in failures] == [(1, JobStatus.RETRYING),
                                                   (2, JobStatus.RETRYING)]
    assert all(e.startswith("StorageError: cannot write") and "NoSuchBucket" in e
               for *_, e in failures)
    assert 0.8 < failures[1][0] - failures[0][0] < 6
    assert job.status is JobStatus.COMPLETED and job.retry_count == 2
    key = f"pdfs/{manager.settings.queue_namespace}/_/{job_id}/retried.pdf"
    assert job.result_path == f"s3://{bucket}/{key}"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert "INV-2026-0007" in text_of(body)


def test_generate_pdf_delay_cli_and_demo_configured_only_by_settings(
        aws_resources, namespace, tmp_path) -> None:
    from pdftasks.contrib.aws import ensure_queues

    env = sqs_env(aws_resources, namespace, tmp_path)
    ensure_queues(aws_settings(aws_resources, namespace, tmp_path))
    worker = Worker(env, tmp_path / "worker.log", concurrency=2)
    try:
        worker.wait_ready()

        def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "pdftasks", *args], env=env,
                                  cwd=str(ROOT), capture_output=True, text=True,
                                  timeout=timeout)

        # The README's first example: generate_pdf.delay(...).get() (results on DynamoDB)
        script = (
            "from pdftasks import generate_pdf\n"
            "from pdftasks.samples import sample_invoice\n"
            "r = generate_pdf.delay(template='invoice.html', data=sample_invoice(3),\n"
            "                       output_filename='delay.pdf', priority='urgent')\n"
            "import json; print(json.dumps(r.get(timeout=60)))\n")
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=str(ROOT),
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["path"].startswith(f"s3://{BUCKET}/{namespace}/{namespace}/_/")
        assert result["path"].endswith("/delay.pdf")
        assert result["queue"] == f"{namespace}.urgent" and result["pages"] == 1
        # The command line on the same settings: submit --wait, status, jobs, stats
        sub = cli("submit", "invoice.html", "-o", "cli.pdf", "-p", "high", "--wait",
                  "-d", json.dumps(sample_invoice(4)))
        assert sub.returncode == 0, sub.stderr
        cli_id = sub.stdout.split()[0]
        status = json.loads(cli("status", cli_id).stdout)
        assert (status["status"], status["priority"]) == ("completed", "high")
        listed = json.loads(cli("jobs", "--status", "completed", "--json").stdout)
        assert {d["output_filename"] for d in listed} == {"delay.pdf", "cli.pdf"}
        stats = json.loads(cli("stats", "--once", "--json").stdout)
        assert stats["completed"] == 2 and set(stats["sqs"]) == {
            f"{namespace}.{p.label}" for p in JobPriority}
        # The demo, unchanged (it starts its own worker next to ours)
        demo = cli("demo", "-n", "4", "-c", "1", timeout=180)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert demo.stdout.count(f"page(s)  s3://{BUCKET}/{namespace}/{namespace}/_/") == 7, \
            demo.stdout
        assert f"PDFs are in s3://{BUCKET}/{namespace}/{namespace}/_/" in demo.stdout
    finally:
        worker.stop()


def test_dead_lettered_job_lands_in_failed(make_manager, aws_resources, namespace) -> None:
    from pdftasks.contrib.aws import reap_dead_letters

    # Given a queue whose redrive policy dead-letters a message received twice
    manager = make_manager(start=False, max_receives=1)
    job_id = manager.submit_job("invoice.html", sample_invoice(5), "dead.pdf",
                                priority=JobPriority.NORMAL)
    sqs = aws_client("sqs", aws_resources)
    url = sqs.get_queue_url(QueueName=f"{namespace}-normal")["QueueUrl"]
    # When consumers receive it without ever acknowledging it (a worker dying on it)
    for _ in range(3):
        sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)
    assert manager.get_queue_stats()["sqs"][f"{namespace}.normal"]["dead_letters"] == 1
    # Then the reaper records the job as FAILED, listed with the failed jobs
    assert reap_dead_letters(manager.app) == [job_id]
    job = manager.get_job(job_id)
    assert job.status is JobStatus.FAILED and job.error.startswith("DeadLetterError")
    assert [j.job_id for j in manager.backend.get_all_jobs(status=JobStatus.FAILED)] == [
        job_id]
    assert manager.get_queue_stats()["sqs"][f"{namespace}.normal"]["dead_letters"] == 0
    # And it can be resubmitted like any failed job
    manager.start()
    assert manager.retry_job(job_id) is True
    assert manager.wait_for_job(job_id, timeout=60).status is JobStatus.COMPLETED


def test_dynamodb_store_transitions_counts_claims_and_expiry(aws_resources, namespace,
                                                             tmp_path) -> None:
    from pdftasks.stores import Job
    from pdftasks.stores.dynamodb import DynamoDBJobStore

    s = aws_settings(aws_resources, namespace, tmp_path)
    store = DynamoDBJobStore(TABLE, namespace, 3600, s)
    now = dt.datetime.now(dt.UTC)
    jobs = [Job(job_id=f"j{i:03d}", template="t.html", data={"i": i},
                output_filename=f"{i}.pdf", priority=JobPriority(i % 4),
                created_at=now - dt.timedelta(seconds=200 - i)) for i in range(200)]
    store.create_many(jobs)  # three transactions of records + counters
    assert store.pending_count() == 200
    assert store.counts()[JobStatus.PENDING] == {p: 50 for p in JobPriority}
    # A transition re-reads when the job changed between its read and its conditional
    # write (another worker got there first), then applies only if still allowed.
    # (moto does not serialise concurrent requests the way DynamoDB does, so the
    # interleaving is made deterministic here instead of racing threads.)
    other = DynamoDBJobStore(TABLE, namespace, 3600, s)

    class Interleaved(DynamoDBJobStore):
        change: JobStatus | None = None

        def _current(self, job_id):
            item = super()._current(job_id)
            if self.change is not None:
                other.transition(job_id, self.change, (JobStatus.PENDING,))
                self.change = None
            return item

    racer = Interleaved(TABLE, namespace, 3600, s)
    racer.change = JobStatus.CANCELLED
    assert racer.transition("j198", JobStatus.PROCESSING,
                            (JobStatus.PENDING, JobStatus.RETRYING)) is False
    racer.change = JobStatus.RETRYING
    assert racer.transition("j197", JobStatus.PROCESSING,
                            (JobStatus.PENDING, JobStatus.RETRYING)) is True
    assert [store.get(i).status for i in ("j198", "j197")] == [JobStatus.CANCELLED,
                                                               JobStatus.PROCESSING]
    started = [store.transition(j.job_id, JobStatus.PROCESSING, (JobStatus.PENDING,))
               for j in jobs[:40]]
    again = [store.transition(j.job_id, JobStatus.PROCESSING, (JobStatus.PENDING,))
             for j in jobs[:40]]
    assert all(started) and not any(again)
    counts = store.counts()
    assert sum(counts[JobStatus.PROCESSING].values()) == 41
    assert sum(counts[JobStatus.CANCELLED].values()) == 1
    assert sum(counts[JobStatus.RETRYING].values()) == 0
    assert sum(counts[JobStatus.PENDING].values()) == 158
    assert store.transition("j000", JobStatus.COMPLETED, (JobStatus.PROCESSING,),
                            result_path="s3://b/k.pdf", pages=2) is True
    assert store.transition("j000", JobStatus.FAILED, (JobStatus.PROCESSING,)) is False
    assert store.transition("nope", JobStatus.FAILED, (JobStatus.PENDING,)) is False
    done = store.get("j000")
    assert (done.status, done.result_path, done.pages) == (JobStatus.COMPLETED,
                                                           "s3://b/k.pdf", 2)
    assert store.add_attempt("j000") == 1 and store.add_attempt("j000") == 2
    assert store.add_attempt("nope") == 0
    # Listing newest first per status, and by creation time
    newest = store.list(JobStatus.PENDING, limit=3)
    assert [j.job_id for j in newest] == ["j199", "j196", "j195"]
    assert [j.job_id for j in store.list(limit=2)] == ["j199", "j198"]
    cutoff = (now - dt.timedelta(seconds=195)).timestamp()
    assert sorted(store.created_before(cutoff, [JobStatus.COMPLETED, JobStatus.PROCESSING])
                  ) == ["j000", "j001", "j002", "j003", "j004"]
    # Deleting keeps the counters right
    store.delete(["j000", "j199", "missing"])
    counts = store.counts()
    assert (sum(counts[JobStatus.COMPLETED].values()),
            sum(counts[JobStatus.PENDING].values())) == (0, 157)
    assert store.get("j000") is None
    # Claims: first caller only
    assert store.claim("beat:daily:2026-01-01", 60) is True
    assert store.claim("beat:daily:2026-01-01", 60) is False
    # A record past its retention is gone for readers before DynamoDB's TTL removes it
    short = DynamoDBJobStore(TABLE, namespace + "x", 2, s)
    short.create(Job(job_id="old", template="t.html", data={}, output_filename="o.pdf"))
    assert short.get("old") is not None
    time.sleep(3.1)
    assert short.get("old") is None and short.list() == []


def test_s3_cleanup_by_age(aws_resources, namespace, tmp_path) -> None:
    from pdftasks.storage import storage_for
    from pdftasks.storage.s3 import S3Storage

    s = aws_settings(aws_resources, namespace, tmp_path)
    storage = storage_for(s)
    assert isinstance(storage, S3Storage) and storage.prefix == namespace
    for name in ("a.pdf", "b.pdf"):
        assert storage.write(name, b"%PDF-1.4 test") == f"s3://{BUCKET}/{namespace}/{name}"
    s3 = aws_client("s3", aws_resources)
    s3.put_object(Bucket=BUCKET, Key=f"{namespace}/notes.txt", Body=b"x")
    # A job's PDF is deeper, under its server-chosen key; outside the prefix is never touched
    job_key = storage.write("pdf/acme/job-1/c.pdf", b"%PDF-1.4 test")
    s3.put_object(Bucket=BUCKET, Key=f"{namespace}x/other.pdf", Body=b"x")
    assert storage.delete_older_than(time.time() - 3600) == []
    future = time.time() + 60
    found = storage.delete_older_than(future, dry_run=True)
    assert sorted(found) == [f"s3://{BUCKET}/{namespace}/a.pdf",
                             f"s3://{BUCKET}/{namespace}/b.pdf", job_key]
    assert sorted(storage.delete_older_than(future)) == sorted(found)
    left = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{namespace}")["Contents"]
    assert sorted(o["Key"] for o in left) == [f"{namespace}/notes.txt",
                                              f"{namespace}x/other.pdf"]


def test_split_report_on_sqs_dynamodb_and_s3_leaves_only_the_merged_pdf(
        make_manager, aws_resources, namespace) -> None:
    from tests.integration.test_split import report

    # Given a report of 3 parts on SQS, DynamoDB and S3
    manager = make_manager()
    job_id = manager.submit_job("report.html", report(90), "split-s3.pdf",
                                options={"split": {"key": "rows", "size": 30}})
    # When it completes
    job = manager.wait_for_job(job_id, timeout=180)
    assert job.status is JobStatus.COMPLETED, job.error
    assert (job.parts_total, job.parts_done) == (3, 3)
    # Then its merged PDF holds every row, in order, and is the only object the job left
    # (the part files are deleted from the bucket after the merge)
    assert job.result_path.endswith("/split-s3.pdf")
    objects = aws_client("s3", aws_resources).list_objects_v2(
        Bucket=BUCKET, Prefix=f"{namespace}/").get("Contents", [])
    assert [o["Key"] for o in objects] == [job.result_path.split(f"s3://{BUCKET}/", 1)[1]]
    status, _ctype, body = fetch(manager.download_url(job_id, expires_s=300))
    text = text_of(body)
    assert status == 200 and "Monthly sales" in text and "End of report." in text
    positions = [text.index(f"2026-11-{1 + i % 30:02d}") for i in (0, 29)]
    assert positions == sorted(positions)
