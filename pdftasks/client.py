"""The guide's job API on Celery: ``PDFQueueManager`` and its backends.

A backend names where jobs are queued and recorded (a Redis server, local files, SQS);
the manager submits through Celery, reads the job store, starts local worker processes
if asked, and delivers lifecycle callbacks from workers anywhere to this process.

Longer than 500 lines because it is the guide's whole public job API in one place: the
manager's methods and the four small backends read best side by side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from celery import Celery

from pdftasks.brokers.redis_results import untracked
from pdftasks.celery_app import GENERATE_PDF, create_app, queue_names
from pdftasks.errors import InvalidOptionsError, JobNotFoundError
from pdftasks.models import JobPriority, JobStatus
from pdftasks.options import redacted_paths
from pdftasks.render import PDFService
from pdftasks.settings import Settings, get_settings
from pdftasks.stores import Job, JobStore
from pdftasks.worker.tasks import (
    check_broker,
    job_store,
    make_job,
    submit_checks,
    task_kwargs,
)

log = logging.getLogger(__name__)

__all__ = ["PDFQueueManager", "QueueBackend", "RedisBackend", "LocalBackend",
           "InMemoryBackend", "SQSBackend", "Job", "JobStatus", "JobPriority"]


class QueueBackend:
    """Where jobs are queued and recorded. After binding, also the guide's job listing API."""

    def __init__(self, queue_name: str = "pdf") -> None:
        self.queue_name = queue_name
        self.store: JobStore | None = None

    def settings_overrides(self) -> dict[str, Any]:
        return {"queue_namespace": self.queue_name}

    def bind(self, store: JobStore) -> None:
        self.store = store

    def _store(self) -> JobStore:
        if self.store is None:
            raise RuntimeError("the backend is not attached to a PDFQueueManager yet")
        return self.store

    def get_job(self, job_id: str) -> Job | None:
        return self._store().get(job_id)

    def get_all_jobs(self, status: JobStatus | None = None, limit: int | None = None
                     ) -> list[Job]:
        """Jobs newest first, optionally only those with ``status``."""
        return self._store().list(status, limit)

    def get_pending_count(self) -> int:
        return self._store().pending_count()


class RedisBackend(QueueBackend):
    """Redis as broker, result backend and job store.

    ``queue_name`` namespaces the queues (``{queue_name}.urgent`` …) and the job records, so
    two managers with different names on one Redis do not see each other's jobs. The default
    ``"pdf"`` is what ``pdftasks worker`` consumes without further settings.
    """

    def __init__(self, host: str = "localhost", port: int = 6379, db: int = 0,
                 password: str | None = None, queue_name: str = "pdf",
                 url: str | None = None) -> None:
        super().__init__(queue_name)
        auth = f":{quote(password, safe='')}@" if password else ""
        self.url = url or f"redis://{auth}{host}:{port}/{db}"

    def settings_overrides(self) -> dict[str, Any]:
        return {**super().settings_overrides(), "broker_url": self.url,
                "result_backend": self.url, "job_store_url": self.url}


class LocalBackend(QueueBackend):
    """The zero-setup default: queue, results and job records in files under ``home``.

    Worker processes on the same machine share it; nothing survives deleting ``home``.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None,
                 queue_name: str = "pdf") -> None:
        super().__init__(queue_name)
        self.home = Path(home) if home else None

    def settings_overrides(self) -> dict[str, Any]:
        out = {**super().settings_overrides(), "broker_url": None, "result_backend": None,
               "job_store_url": None}
        if self.home:
            out["home"] = self.home.expanduser().resolve()
        return out


#: The guide's development backend. Workers are separate processes, so "in memory" is
#: served by the local files backend: same zero setup, and jobs survive a restart.
InMemoryBackend = LocalBackend


class SQSBackend(QueueBackend):
    """Amazon SQS as broker, DynamoDB for job records and results (the guide's backend).

    One SQS queue per priority (``{queue_name}-urgent`` … ``-low`` after kombu's naming,
    behind ``PDFTASKS_SQS_QUEUE_PREFIX``); cancellation and status go through the job
    table, since SQS has no remote control. ``pdftasks aws-setup`` creates the queues
    (with dead-letter queues), the table and the bucket.

    Args:
        queue_url: Optional existing queues: one URL naming the family (``…/pdf`` means
            ``…/pdf-urgent``, ``…/pdf-high``, ``…/pdf-normal``, ``…/pdf-low``), or a mapping
            {priority: URL}. None: the queues are found (or created) by name.
        region_name: AWS region of SQS, DynamoDB (and S3).
        dynamodb_table: Table of job records and results (default ``PDFTASKS_DYNAMODB_TABLE``).
        queue_name: Namespace of the queues and records (as for ``RedisBackend``).
        endpoint_url: One endpoint for SQS, DynamoDB and S3 (a local test server).
        queue_prefix: Prefix of the SQS queue names.
        storage: ``s3://bucket/prefix`` for the PDFs (default ``PDFTASKS_STORAGE``).
        broker_url: ``sqs://`` (default; credentials from boto3's chain) or
            ``sqs://KEY:SECRET@``.
        **options: Further ``Settings`` fields, e.g. ``sqs_wait_time_s=5``.
    """

    def __init__(self, queue_url: str | Mapping[Any, str] | None = None,
                 region_name: str = "us-east-1", dynamodb_table: str | None = None,
                 queue_name: str = "pdf", endpoint_url: str | None = None,
                 queue_prefix: str | None = None, storage: str | None = None,
                 broker_url: str | None = None, **options: Any) -> None:
        super().__init__(queue_name)
        self.broker_url = broker_url or "sqs://"
        self.queue_url = queue_url
        self.region_name = region_name
        self.dynamodb_table = dynamodb_table
        self.endpoint_url = endpoint_url
        self.queue_prefix = queue_prefix
        self.storage = storage
        self.options = options

    def settings_overrides(self) -> dict[str, Any]:
        import json

        out = {**super().settings_overrides(), "broker_url": self.broker_url,
               "result_backend": None,
               "job_store_url": None, "aws_region": self.region_name, **self.options}
        if self.queue_url is not None:
            out["sqs_predefined_queues"] = self.queue_url if isinstance(self.queue_url, str) \
                else json.dumps({JobPriority.parse(k).label: v
                                 for k, v in self.queue_url.items()})
        for name, value in (("dynamodb_table", self.dynamodb_table),
                            ("aws_endpoint_url", self.endpoint_url),
                            ("sqs_queue_prefix", self.queue_prefix),
                            ("storage", self.storage)):
            if value is not None:
                out[name] = value
        return out


#: Jobs recorded and published per pipeline in ``submit_batch``.
_BATCH = 500

JobCallback = Callable[[Job], Any]
FailureCallback = Callable[[Job, str], Any]


class PDFQueueManager:
    """Submit, follow and manage PDF jobs (the guide's API), executed by Celery workers.

    Args:
        backend: Where jobs go; default: the ``PDFTASKS_*`` environment (local files when no
            broker is configured).
        pdf_service: Templates and output directories (``PDFService``); default: from the
            environment. Local workers started by ``start()`` use it too.
        num_workers: Worker processes ``start()`` runs on this machine.
        poll_interval: Default seconds between status checks in ``wait_for_job``.
        max_retries: Default retries of transient failures per job.
        settings: Further ``Settings`` fields for this manager and its local workers
            (e.g. ``{"soft_time_limit_s": 30}``); the environment supplies the rest. Or a
            whole ``Settings``: then it is all of them, and the environment is not read.

    An entry point: without a ``Settings``, the environment is read here, once; the app,
    job store and workers get the resulting ``self.settings``.
    """

    def __init__(self, backend: QueueBackend | None = None,
                 pdf_service: PDFService | None = None, num_workers: int = 2,
                 poll_interval: float = 0.2, max_retries: int | None = None,
                 settings: Mapping[str, Any] | Settings | None = None) -> None:
        if isinstance(settings, Settings):
            base, settings = settings, settings.model_dump()
        else:
            base = get_settings()
        self.backend = backend or _backend_from_settings(base)
        self.pdf_service = pdf_service
        self.num_workers = num_workers
        self.poll_interval = poll_interval
        overrides = self.backend.settings_overrides()
        if pdf_service is not None:
            overrides.update(templates_dir=pdf_service.templates_dir,
                             output_dir=pdf_service.output_dir,
                             allowed_url_prefixes=",".join(
                                 pdf_service.config.allowed_url_prefixes))
            if pdf_service.config.storage is not None:
                overrides["storage"] = pdf_service.config.storage
        if max_retries is not None:
            overrides["default_max_retries"] = max_retries
        overrides.update(settings or {})
        self.settings: Settings = Settings(**{**base.model_dump(), **overrides})
        self.app: Celery = create_app(self.settings)
        self.task = self.app.tasks[GENERATE_PDF]
        self.store: JobStore = job_store(self.app)
        self.backend.bind(self.store)
        self._worker: subprocess.Popen[bytes] | None = None
        self._worker_log: Path | None = None
        self._callbacks: dict[str, Callable[..., Any] | None] = {"completed": None,
                                                                 "failed": None}
        self._listener: threading.Thread | None = None
        self._stop_listener = threading.Event()
        self._workers_cache: tuple[float, int] = (0.0, 0)

    # Submitting.

    def submit_job(self, template: str, data: Mapping[str, Any], output_filename: str,
                   css_file: str | None = None,
                   priority: JobPriority | str | int = JobPriority.NORMAL,
                   metadata: Mapping[str, Any] | None = None,
                   max_retries: int | None = None,
                   options: Mapping[str, Any] | None = None) -> str:
        """Queue one job; return its id. Bad input raises a typed ``InvalidJobError``.

        ``options``: the job's options (``pdftasks.options.JobOptions``: split, metadata,
        pdf_variant, einvoice, watermark, encrypt, sign, attachments, merge)."""
        return self.submit_batch([{"template": template, "data": data,
                                   "output": output_filename, "css_file": css_file,
                                   "priority": priority, "metadata": metadata,
                                   "max_retries": max_retries, "options": options}])[0]

    def submit_batch(self, jobs: Iterable[Mapping[str, Any]],
                     priority: JobPriority | str | int = JobPriority.NORMAL) -> list[str]:
        """Queue many jobs over one connection; return their ids in order.

        Each item has ``template``, ``data``, ``output`` (or ``output_filename``) and
        optionally ``priority``, ``css_file``, ``metadata``, ``max_retries``, ``options``.
        Every item is checked before anything is queued: one bad item raises and queues
        nothing.
        """
        return submit_jobs(self.app, jobs, priority, service=self.pdf_service)

    # Following.

    def get_job(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def get_job_status(self, job_id: str) -> JobStatus | None:
        """The job's status, or None for an unknown id."""
        job = self.store.get(job_id)
        return job.status if job else None

    def wait_for_job(self, job_id: str, timeout: float | None = None,
                     poll_interval: float | None = None) -> Job:
        """Block until the job completed and return it.

        Raises:
            TimeoutError: not finished within ``timeout`` seconds.
            RuntimeError: the job FAILED (its error is the message) or was CANCELLED.
            JobNotFoundError: no such job.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval or self.poll_interval
        while True:
            job = self.store.get(job_id)
            if job is None:
                raise JobNotFoundError(f"no job {job_id}")
            if job.status is JobStatus.COMPLETED:
                return job
            if job.status is JobStatus.FAILED:
                raise RuntimeError(f"Job {job_id} failed: {job.error}")
            if job.status is JobStatus.CANCELLED:
                raise RuntimeError(f"Job {job_id} was cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Job {job_id} not finished after {timeout} s "
                                   f"(status: {job.status.value})")
            time.sleep(interval if deadline is None
                       else max(0.0, min(interval, deadline - time.monotonic())))

    # Managing.

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a PENDING or RETRYING job. False if it is processing, finished or unknown.

        The worker checks the record before rendering, so this works on any broker; a
        revoke is sent as well where the broker supports remote control.
        """
        if not self.store.transition(job_id, JobStatus.CANCELLED,
                                     (JobStatus.PENDING, JobStatus.RETRYING),
                                     completed_at=_now()) and not self._cancel_split(job_id):
            return False
        if not self.settings.is_sqs:  # SQS has no broadcast: the worker's check suffices
            with contextlib.suppress(Exception):
                self.app.control.revoke(job_id)
        with contextlib.suppress(Exception):
            self.store.publish({"event": "cancelled", "job_id": job_id, "error": None,
                                "ts": time.time()})
        return True

    def _cancel_split(self, job_id: str) -> bool:
        """A split job rendering its parts (PROCESSING, ``parts_total`` set) is cancelled too,
        with its parts: those not started never render, running ones drop their files."""
        from pdftasks.worker.split import cancel_parts

        job = self.store.get(job_id)
        if job is None or not job.parts_total or not self.store.transition(
                job_id, JobStatus.CANCELLED, (JobStatus.PROCESSING,), completed_at=_now()):
            return False
        cancel_parts(self.app, job_id, job.parts_total, job.metadata)
        return True

    def retry_job(self, job_id: str) -> bool:
        """Queue a FAILED (or CANCELLED) job again under the same id; False otherwise."""
        job = self.store.get(job_id)
        if job is None:
            return False
        secrets = redacted_paths(job.options)
        if secrets:
            raise InvalidOptionsError(
                f"job {job_id} cannot be retried: its {', '.join(secrets)} option is not "
                "kept (secrets are never stored); submit it again")
        check_broker(self.app)
        if not self.store.transition(
                job_id, JobStatus.PENDING, (JobStatus.FAILED, JobStatus.CANCELLED),
                error=None, started_at=None, completed_at=None, retry_count=0, attempts=0,
                parts_total=None, parts_done=0):
            return False
        try:
            self.task.apply_async(kwargs=task_kwargs(job), task_id=job_id,
                                  pdftasks_recorded=True)
        except BaseException:
            # Not queued: it stays what it was, not a PENDING job that nothing will run.
            with contextlib.suppress(Exception):
                self.store.transition(job_id, job.status, (JobStatus.PENDING,),
                                      error=job.error, started_at=job.started_at,
                                      completed_at=job.completed_at,
                                      retry_count=job.retry_count, attempts=job.attempts)
            raise
        return True

    def get_queue_stats(self) -> dict[str, Any]:
        """Counts from the job store, queue depth from the broker, and workers.

        On SQS, ``queue_depth`` is ``ApproximateNumberOfMessages`` per priority queue and
        ``sqs`` adds, per queue, ``in_flight`` (``…NotVisible``: received, not yet
        acknowledged), ``delayed`` and ``dead_letters`` (messages in its dead-letter queue).
        """
        counts = self.store.counts()
        totals = {s.value: sum(by_prio.values()) for s, by_prio in counts.items()}
        sqs = self._sqs_attributes() if self.settings.is_sqs else None
        stats = {
            "total_jobs": sum(totals.values()),
            **totals,
            "pending_by_priority": {p.label: counts[JobStatus.PENDING][p] for p in JobPriority},
            "queue_depth": self.queue_depth() if sqs is None else {
                name: None if a is None else a.waiting for name, a in sqs.items()},
            "workers": self.worker_count(),
            "running": self.running,
        }
        if sqs is not None:
            stats["sqs"] = {name: None if a is None else {
                "waiting": a.waiting, "in_flight": a.in_flight, "delayed": a.delayed,
                "dead_letters": a.dead_letters} for name, a in sqs.items()}
        return stats

    def _sqs_attributes(self) -> dict[str, Any]:
        from pdftasks.brokers.sqs import queue_attributes

        try:
            return dict(queue_attributes(self.settings))
        except Exception:
            log.warning("cannot read the SQS queue attributes", exc_info=True)
            return {name: None for name in queue_names(self.settings.queue_namespace)}

    def download_url(self, job_id: str, expires_s: int | None = None) -> str | None:
        """Where to download a completed job's PDF: a presigned HTTPS URL on S3 (valid
        ``expires_s``, default ``PDFTASKS_S3_PRESIGN_EXPIRES_S``), a ``file://`` URL for
        local storage; None if the job has no PDF."""
        job = self.store.get(job_id)
        if job is None or job.status is not JobStatus.COMPLETED or not job.result_path:
            return None
        if job.result_path.startswith("s3://"):
            from pdftasks.storage import make_storage

            storage = make_storage(job.result_path, self.settings)
            return str(storage.presigned_url(
                job.result_path, expires_s or self.settings.s3_presign_expires_s,
                download_name=job.output_filename))
        return Path(job.result_path).as_uri()

    def queue_depth(self) -> dict[str, int | None]:
        """Messages waiting in each priority queue (None where the broker cannot tell)."""
        if self.settings.is_sqs:
            return {name: None if a is None else a.waiting
                    for name, a in self._sqs_attributes().items()}
        out: dict[str, int | None] = {}
        try:
            with self.app.connection_for_read() as conn:
                channel = conn.default_channel
                for name in queue_names(self.settings.queue_namespace):
                    try:
                        out[name] = channel.queue_declare(name, passive=True).message_count
                    except Exception:
                        out[name] = 0
        except Exception:
            out = {name: None for name in queue_names(self.settings.queue_namespace)}
        return out

    def worker_count(self) -> int:
        """Worker processes answering on the broker (cached 5 s); local ones if none answer."""
        stamp, count = self._workers_cache
        if self.settings.is_sqs:  # no remote control on SQS: only workers started here
            return self.num_workers if self.running else 0
        if time.monotonic() - stamp >= 5:
            count = 0
            with contextlib.suppress(Exception):
                replies = self.app.control.inspect(timeout=0.5).stats() or {}
                count = sum(int(r.get("pool", {}).get("max-concurrency", 0))
                            for r in replies.values())
            self._workers_cache = (time.monotonic(), count)
        return count or (self.num_workers if self.running else 0)

    # Local workers.

    @property
    def running(self) -> bool:
        """True while workers started by ``start()`` run. Set False to kill them at once."""
        return self._worker is not None and self._worker.poll() is None

    @running.setter
    def running(self, value: bool) -> None:
        if value:
            self.start()
        else:
            self.stop(timeout=0)

    def start(self, timeout: float = 60) -> None:
        """Start ``num_workers`` worker processes here, configured like this manager."""
        if self.running:
            return
        # The workers need none of the host application's framework: without this, Celery's
        # Django fix-up would set Django up in each worker (and its ready() start workers).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PDFTASKS_") and k != "DJANGO_SETTINGS_MODULE"}
        env.update(self.settings.to_env())
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self._worker_log = self.settings.home / f"worker-{os.getpid()}-{id(self)}.log"
        with open(self._worker_log, "ab") as log_file:
            self._worker = subprocess.Popen(
                [sys.executable, "-m", "pdftasks", "worker", "-c", str(self.num_workers),
                 "-l", "INFO", "-n", f"manager-{os.getpid()}-{id(self)}@%h"],
                env=env, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while " ready." not in self._worker_log.read_text(errors="replace"):
            if self._worker.poll() is not None or time.monotonic() > deadline:
                self.stop(timeout=0)
                raise RuntimeError(f"workers did not start; see {self._worker_log}")
            time.sleep(0.1)
        log.info("started %d worker processes (log: %s)", self.num_workers, self._worker_log)

    def stop(self, timeout: float = 30) -> None:
        """Stop local workers: running jobs may finish within ``timeout``, then they are killed.

        Jobs still queued stay queued (late acknowledgement puts reserved ones back).
        """
        self._stop_listener.set()
        worker, self._worker = self._worker, None
        if worker is None or worker.poll() is not None:
            return
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=timeout if timeout > 0 else 0.001)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    def __enter__(self) -> PDFQueueManager:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # Callbacks.

    @property
    def on_job_completed(self) -> JobCallback | None:
        """``fn(job)``, called in this process once for each job that completes."""
        return self._callbacks["completed"]

    @on_job_completed.setter
    def on_job_completed(self, fn: JobCallback | None) -> None:
        self._callbacks["completed"] = fn
        self._listen()

    @property
    def on_job_failed(self) -> FailureCallback | None:
        """``fn(job, error)``, for each failed attempt (``job.retry_count`` tells which;
        ``job.status`` is RETRYING when another attempt follows, FAILED when final)."""
        return self._callbacks["failed"]

    @on_job_failed.setter
    def on_job_failed(self, fn: FailureCallback | None) -> None:
        self._callbacks["failed"] = fn
        self._listen()

    def _listen(self) -> None:
        if self._listener is not None and self._listener.is_alive():
            return
        self._stop_listener.clear()
        ready = threading.Event()
        self._listener = threading.Thread(target=self._dispatch, args=(ready,),
                                          name="pdftasks-events", daemon=True)
        self._listener.start()
        ready.wait(5)

    def _dispatch(self, ready: threading.Event) -> None:
        events = self.store.events(self._stop_listener)
        ready.set()
        for event in events:
            kind = event.get("event")
            callback = self._callbacks["completed" if kind == "completed" else "failed"]
            if callback is None or kind not in ("completed", "failed", "retrying"):
                continue
            job = self.store.get(event["job_id"])
            if job is None:
                continue
            try:
                callback(job) if kind == "completed" else callback(job, event.get("error"))
            except Exception:
                log.exception("job callback failed for %s", job.job_id)


def submit_jobs(app: Celery, jobs: Iterable[Mapping[str, Any]],
                priority: JobPriority | str | int = JobPriority.NORMAL,
                service: PDFService | None = None) -> list[str]:
    """``submit_batch`` for any pdftasks Celery app (also used by scheduled tasks)."""
    task = app.tasks[GENERATE_PDF]
    store = job_store(app)
    records: list[Job] = []
    #: Each job's options as given (its record keeps them with secrets redacted).
    options: dict[str, Any] = {}
    checked: set[tuple[Any, Any]] = set()
    for item in jobs:
        bound = {
            "template": item.get("template"), "data": item.get("data"),
            "output_filename": item.get("output", item.get("output_filename")),
            "css_file": item.get("css_file"),
            "priority": item.get("priority") if item.get("priority") is not None
            else priority,
            "metadata": item.get("metadata"), "max_retries": item.get("max_retries"),
            "options": item.get("options"),
        }
        prio = submit_checks(app, bound["template"], bound["data"], bound["output_filename"],
                             bound["priority"], bound["css_file"], service=service,
                             checked=checked, options=bound["options"])
        bound["priority"] = prio.label
        records.append(make_job(app, None, bound))
        if bound["options"]:
            options[records[-1].job_id] = dict(bound["options"])
    check_broker(app)
    published = 0
    try:
        # Not followed for results (job ids are returned, the job store follows them): no
        # result-channel subscription per job on Redis (pdftasks.brokers.redis_results).
        with untracked(), app.producer_or_acquire() as producer:
            for start in range(0, len(records), _BATCH):
                chunk = records[start:start + _BATCH]
                store.create_many(chunk)
                # One Redis pipeline per chunk (kombu >= 5.7 publish batches).
                with producer.batch(max_size=_BATCH + 1):
                    for job in chunk:
                        task.apply_async(kwargs=task_kwargs(job, options.get(job.job_id)),
                                         task_id=job.job_id,
                                         producer=producer, pdftasks_recorded=True)
                published += len(chunk)
    except BaseException:
        # Nothing half-recorded: jobs that were not queued lose their records.
        store.delete(j.job_id for j in records[published:])
        raise
    return [job.job_id for job in records]


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _backend_from_settings(s: Settings) -> QueueBackend:
    if s.is_local:
        return LocalBackend(queue_name=s.queue_namespace)
    if s.effective_broker_url.startswith(("redis://", "rediss://")):
        return RedisBackend(url=s.effective_broker_url, queue_name=s.queue_namespace)
    if s.is_sqs:  # everything else (region, endpoint, table…) comes from the settings
        return SQSBackend(region_name=s.aws_region, dynamodb_table=s.dynamodb_table,
                          queue_name=s.queue_namespace, broker_url=s.broker_url)
    raise ValueError(f"no PDFQueueManager backend for broker {s.effective_broker_url!r}")
