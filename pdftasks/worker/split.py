"""Split jobs (``options.split``): a long list rendered as parts in parallel, then merged.

WeasyPrint keeps a whole document in memory and gets slower per page as a document grows,
so one 600-page report takes minutes and gigabytes in one process. A split job is cut into
parts of ``size`` items instead; each part is a small document any free worker renders.

How a split job runs (the parent's job record is what users follow):

1. The parent job (``generate_pdf`` with ``options.split``) is queued like any job. The
   worker that takes it finds the list at ``split.key``; one of ``size`` items or fewer is
   rendered at once as an ordinary job (``part`` = 1 of 1). Otherwise it records one part
   job per slice (``<parent>.part0001``, ...; ``Job.parent_id``), sets the parent's
   ``parts_total`` and sends the parts as a Celery ``group`` to the parent's priority queue.
   The parent stays PROCESSING.
2. Each part (``render_part``) renders the template with its slice of the list and
   ``part = {index, count, first, last, start, items}`` to a part file. Transient errors are
   retried with the normal backoff; a part that gives up fails the parent with its error and
   cancels the other parts.
3. Fan-in is counted in the job store (``JobStore.record_part_done``: idempotent per part,
   atomic on Redis), not by a Celery chord: a chord's counter counts a part twice when its
   worker dies after storing the result and before acknowledging the message (the message
   is delivered again), which could start the merge while a part is still missing. The
   part that completes the count sends ``merge_parts``.
4. ``merge_parts`` joins the part files (``pdftasks.documents.merge``: bookmarks of all
   parts in order, the first part's document information), stamps "Page X of Y" on every
   page, writes the parent's PDF atomically, marks the parent COMPLETED (and stores its
   Celery result, so ``AsyncResult(parent).get()`` returns the merged PDF's) and removes the
   part files.

5. ``watch_split`` (Redis broker) looks at the parts every half visibility timeout while
   the parent is PROCESSING. kombu takes a message off its queue (``BRPOP``) and records it
   as unacknowledged in a second round trip: a main process SIGKILLed in between loses the
   message, which neither the visibility timeout nor anything else brings back. When the
   parts made no progress for longer than the visibility timeout, the watch sends again
   the unfinished parts (and the merge) that have no message left in the broker
   (``rescue_split``, ``live_messages``).

Cancelling the parent (``PDFQueueManager.cancel_job``) cancels its parts; a part that finds
its parent final does nothing. Every step can run twice (a worker killed mid-way): part
records, the count and the parent's last transition are idempotent; a part completed by
another delivery is counted in this delivery's run too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery import Celery, Task, group, states
from celery.exceptions import Ignore, SoftTimeLimitExceeded, TimeLimitExceeded

from pdftasks.celery_app import queue_name
from pdftasks.errors import PermanentError, RenderTimeoutError, TransientError
from pdftasks.models import Job, JobPriority, JobStatus, part_job_id
from pdftasks.options import JobOptions, has_document_options, parse_options, redact_options
from pdftasks.options.split import check_split, with_items
from pdftasks.render import time_limit
from pdftasks.storage import storage_key
from pdftasks.worker.lost import live_messages, stall_after, watch_period
from pdftasks.worker.tasks import (
    _RUNNABLE,
    PdfTask,
    PoisonJobError,
    SecretOptionsTask,
    app_settings,
    describe,
    emit,
    fail_job,
    hard_limit_error,
    job_pdf_loader,
    job_store,
    patiently,
    public_error,
    render_service,
    store_failed_result,
    store_job_result,
)

log = logging.getLogger(__name__)

#: Task names of a part's render and of the merge.
RENDER_PART = "pdftasks.render_part"
MERGE_PARTS = "pdftasks.merge_parts"
WATCH_SPLIT = "pdftasks.watch_split"
#: The file name of a part's PDF, in its own storage folder (``storage_key`` of the part).
PART_FILE = "part.pdf"


def part_context(index: int, count: int, start: int, items: int) -> dict[str, Any]:
    """What a template sees as ``part`` (``index`` 0-based; ``start``: the position of the
    part's first item in the whole list of ``items``)."""
    return {"part": {"index": index, "count": count, "first": index == 0,
                     "last": index == count - 1, "start": start, "items": items}}


def split_job(task: Task, job_id: str, template: str, data: Mapping[str, Any],
              output_filename: str, priority: str, css_file: str | None,
              max_retries: int | None, metadata: Mapping[str, Any] | None,
              raw_options: Mapping[str, Any] | None, opts: JobOptions
              ) -> dict[str, Any] | None:
    """Called by ``generate_pdf`` for a job with ``options.split`` once its record is
    PROCESSING. Returns the render context of a list that fits in one part (render it as
    usual with it); otherwise records and queues the parts, and raises ``Ignore``: the
    merge completes the parent's record and its Celery result.

    Raises:
        InvalidOptionsError: no list at ``split.key`` (permanent: the parent FAILS).
    """
    assert opts.split is not None
    items = check_split(opts, data) or []
    size, count = opts.split.size, opts.split.parts(len(items))
    if count == 1:
        return part_context(0, 1, 0, len(items))
    app = task.app
    store = job_store(app)
    s = app_settings(app)
    parent = patiently(store.get, job_id)
    if parent is not None and parent.parts_total:
        # Delivered again after its parts were sent (its worker died before acknowledging).
        log.info("split job %s: parts already queued", job_id)
        raise Ignore()
    prio = JobPriority.parse(priority)
    # Part records afresh (a retried job's parts of its earlier run are replaced), and a
    # new run: the count of parts done starts again.
    ids = [part_job_id(job_id, i) for i in range(count)]
    patiently(store.delete, ids)
    patiently(store.create_many, [
        Job(job_id=part_id, template=template, data={}, output_filename=PART_FILE,
            css_file=css_file, priority=prio,
            max_retries=s.default_max_retries if max_retries is None else max_retries,
            metadata=dict(metadata or {}), parent_id=job_id) for part_id in ids])
    run = uuid.uuid4().hex[:12]
    merge = {"output_filename": output_filename, "options": dict(raw_options or {}),
             "metadata": dict(metadata or {}), "priority": prio.label}
    group([part_signature(app, job_id, run, i, count, template, data, css_file,
                          max_retries, merge, opts) for i in range(count)]).apply_async()
    # The safety net against messages lost by the broker (see _watch_split), sent before
    # parts_total is recorded: a delivery that dies before sends parts and watch again.
    send_watch(app, job_id, run, count, merge, seq=1, seen="", since=time.time())
    # Recorded once the parts are sent: a delivery that died before sends them again (a
    # part delivered twice renders once, or twice into the same file).
    patiently(store.transition, job_id, JobStatus.PROCESSING, (JobStatus.PROCESSING,),
              parts_total=count)
    log.info("split job %s: %d items in %d parts of %d", job_id, len(items), count, size)
    raise Ignore()


def part_signature(app: Celery, parent_id: str, run: str, index: int, count: int,
                   template: str, data: Mapping[str, Any], css_file: str | None,
                   max_retries: int | None, merge: Mapping[str, Any], opts: JobOptions,
                   **options: Any) -> Any:
    """The message of part ``index`` (its slice of the list at ``split.key`` of ``data``,
    the whole job's data)."""
    assert opts.split is not None
    items = check_split(opts, data) or []
    size = opts.split.size
    start = index * size
    prio = JobPriority.parse(merge.get("priority", "normal"))
    return app.tasks[RENDER_PART].signature(
        kwargs={"parent_id": parent_id, "run": run, "index": index, "count": count,
                "start": start, "items": len(items), "template": template,
                "data": with_items(data, opts.split.key, items[start:start + size]),
                "css_file": css_file, "max_retries": max_retries, "merge": dict(merge)},
        task_id=part_job_id(parent_id, index),
        queue=queue_name(prio, app_settings(app).queue_namespace), pdftasks_recorded=True,
        **options)


def part_key(app: Celery, parent_id: str, index: int, metadata: Mapping[str, Any]) -> str:
    from pdftasks.models import TENANT_KEY

    return storage_key(app_settings(app).queue_namespace, part_job_id(parent_id, index),
                       PART_FILE, metadata.get(TENANT_KEY))


def _render_part(self: Task, parent_id: str, run: str, index: int, count: int, start: int,
                 items: int, template: str, data: Mapping[str, Any], css_file: str | None = None,
                 max_retries: int | None = None, merge: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Render part ``index`` of ``count`` of the split job ``parent_id`` to its part file."""
    app, job_id = self.app, self.request.id
    s = app_settings(app)
    store = job_store(app)
    self.override_max_retries = self.max_retries if max_retries is None else max_retries
    attempts = patiently(store.add_attempt, job_id)
    if attempts == 0:
        log.warning("part %s has no record (its parent was deleted?): skipped", job_id)
        raise Ignore()
    crashes = attempts - self.request.retries - 1
    if crashes > s.max_redeliveries:
        raise PoisonJobError(f"the worker process died {crashes} times while rendering part "
                             f"{index + 1} of {count}; not retried")
    parent = patiently(store.get, parent_id)
    if parent is None or parent.status is not JobStatus.PROCESSING:
        patiently(store.transition, job_id, JobStatus.CANCELLED, _RUNNABLE,
                  completed_at=dt.datetime.now(dt.UTC))
        log.info("part %s: parent is %s, not rendering it", job_id,
                 parent.status.value if parent else "gone")
        self.update_state(state=states.REVOKED)
        raise Ignore()
    if not patiently(store.transition, job_id, JobStatus.PROCESSING, _RUNNABLE,
                     started_at=dt.datetime.now(dt.UTC), retry_count=self.request.retries):
        job = store.get(job_id)
        if job is not None and job.status is JobStatus.COMPLETED:
            # Delivered again after it completed (its worker died before acknowledging):
            # the count may not have been taken, nor the merge sent.
            part_done(app, parent_id, run, index, count, dict(merge or {}))
        raise Ignore()
    key = part_key(app, parent_id, index, (merge or {}).get("metadata") or {})
    service = render_service(app)
    if crashes > 0:
        service.storage.discard_stale_temps(key)
    limit = s.soft_time_limit_s
    started = time.perf_counter()
    opts = parse_options((merge or {}).get("options"))
    try:
        with time_limit(limit):
            service.check_template(template, css_file)
            html = service.render_html(template, data, part_context(index, count, start, items))
            # The metadata option is the first part's: the merged PDF takes its information.
            pdf, pages = service.html_to_pdf(html, css_file,
                                             metadata=opts.metadata if opts else None)
    except SoftTimeLimitExceeded as exc:
        raise RenderTimeoutError(
            f"part {index + 1} of {count} exceeded the soft time limit of {limit:g} s and was "
            "stopped; use a smaller split size") from exc
    path = service.storage.write(key, pdf)
    log.info("rendered part %d/%d of %s (%s pages, %.0f ms)", index + 1, count, parent_id,
             pages, (time.perf_counter() - started) * 1000)
    return {"path": str(path), "pages": pages, "bytes": len(pdf), "worker_pid": os.getpid()}


class PartTask(PdfTask):
    """A part's record follows its render; the parent's follows its parts. Events go to the
    parent (``completed``/``failed``), not to webhooks for every part."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if not isinstance(retval, dict) or "path" not in retval:
            return
        store = job_store(self.app)
        if not patiently(store.transition, task_id, JobStatus.COMPLETED,
                         (JobStatus.PROCESSING,), completed_at=dt.datetime.now(dt.UTC),
                         result_path=retval["path"], pages=retval["pages"], error=None):
            # Another delivery of this part completed it first (a message sent twice: the
            # parent's, or the watch's): count it in this delivery's run too, or a count
            # taken only in another run would leave this run's short of one.
            job = patiently(store.get, task_id)
            if job is None or job.status is not JobStatus.COMPLETED:
                return
        part_done(self.app, kwargs["parent_id"], kwargs["run"], kwargs["index"],
                  kwargs["count"], dict(kwargs.get("merge") or {}))

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        patiently(job_store(self.app).transition, task_id, JobStatus.RETRYING,
                  (JobStatus.PROCESSING,), retry_count=self.request.retries + 1,
                  error=public_error(self.app, describe(exc)))

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        if isinstance(exc, TimeLimitExceeded):
            exc = hard_limit_error(exc.args[0] if exc.args
                                   else app_settings(self.app).hard_time_limit_s)
        error = public_error(self.app, describe(exc))
        store = job_store(self.app)
        patiently(store.transition, task_id, JobStatus.FAILED, _RUNNABLE, error=error,
                  completed_at=dt.datetime.now(dt.UTC))
        self.fail_parent(self.app, kwargs["parent_id"], kwargs["index"], kwargs["count"],
                         error, (kwargs.get("merge") or {}).get("metadata") or {})

    @staticmethod
    def fail_parent(app: Celery, parent_id: str, index: int, count: int, error: str,
                    metadata: Mapping[str, Any]) -> None:
        """Part ``index`` FAILED: fail the parent with its error, cancel the other parts."""
        fail_job(app, parent_id, f"part {index + 1} of {count} failed: {error}")
        store_failed_result(app, parent_id)
        discard_parts(app, parent_id, list(range(count)), metadata)
        cancel_parts(app, parent_id, count, metadata)


def part_done(app: Celery, parent_id: str, run: str, index: int, count: int,
              merge: dict[str, Any]) -> None:
    """Count a rendered part; the part that completes the count sends the merge. A part
    whose parent ended meanwhile (cancelled, failed) removes its file."""
    store = job_store(app)
    done = patiently(store.record_part_done, parent_id, run, index, count)
    parent = patiently(store.get, parent_id)
    if parent is None or parent.status is not JobStatus.PROCESSING:
        # Ended meanwhile (cancelled, failed): no part file stays, this one's nor those
        # done before it.
        discard_parts(app, parent_id, list(range(count)), merge.get("metadata") or {})
        return
    store.publish({"event": "progress", "job_id": parent_id, "parts_done": done,
                   "parts_total": count, "ts": time.time()})
    if done >= count:
        send_merge(app, parent_id, count, merge)


def send_merge(app: Celery, parent_id: str, count: int, merge: Mapping[str, Any]) -> None:
    prio = JobPriority.parse(merge.get("priority", "normal"))
    app.tasks[MERGE_PARTS].apply_async(
        kwargs={"parent_id": parent_id, "count": count, **merge},
        queue=queue_name(prio, app_settings(app).queue_namespace),
        task_id=merge_id(parent_id))


def merge_id(parent_id: str) -> str:
    return f"{parent_id}.merge"


def cancel_parts(app: Celery, parent_id: str, count: int,
                 metadata: Mapping[str, Any] | None = None) -> list[str]:
    """Cancel the parts of ``parent_id`` (ended: cancelled or failed) that have not started;
    return their ids. A cleanup is queued that removes the files of parts done (a worker's
    storage, not necessarily this process's); running parts finish, see their parent ended
    and remove theirs."""
    store = job_store(app)
    cancelled = []
    for i in range(count):
        part_id = part_job_id(parent_id, i)
        if patiently(store.transition, part_id, JobStatus.CANCELLED,
                     (JobStatus.PENDING, JobStatus.RETRYING),
                     completed_at=dt.datetime.now(dt.UTC)):
            cancelled.append(part_id)
    if cancelled and not app_settings(app).is_sqs:
        with contextlib.suppress(Exception):
            app.control.revoke(cancelled)
    parent = patiently(store.get, parent_id)
    prio = parent.priority if parent is not None else JobPriority.NORMAL
    app.tasks[MERGE_PARTS].apply_async(
        kwargs={"parent_id": parent_id, "count": count, "metadata": dict(metadata or {})},
        queue=queue_name(prio, app_settings(app).queue_namespace),
        task_id=f"{parent_id}.cleanup")
    return cancelled


def discard_parts(app: Celery, parent_id: str, indexes: list[int],
                  metadata: Mapping[str, Any]) -> None:
    """Remove part files of ``parent_id`` (local folders left empty, S3 objects). Best
    effort: a file left behind is removed by the output cleanup (Beat) later."""
    try:
        render_service(app).storage.delete(
            [part_key(app, parent_id, i, metadata) for i in indexes])
    except Exception:
        log.warning("split job %s: could not remove its part files", parent_id,
                    exc_info=True)


def _merge_parts(self: Task, parent_id: str, count: int, output_filename: str = "",
                 options: Mapping[str, Any] | None = None,
                 metadata: Mapping[str, Any] | None = None, priority: str = "normal"
                 ) -> dict[str, Any]:
    """Join the parts of ``parent_id`` into its PDF and complete its record. For a parent
    that ended otherwise (cancelled, failed: ``cancel_parts``), remove the part files."""
    from pdftasks.documents.merge import merge_pdfs
    from pdftasks.models import TENANT_KEY

    app = self.app
    s = app_settings(app)
    store = job_store(app)
    started = time.perf_counter()
    parent = patiently(store.get, parent_id)
    metadata = dict(metadata or {})
    if parent is None or parent.status is not JobStatus.PROCESSING or not output_filename:
        # Merged already (a second merge), or cancelled/failed meanwhile (or a cleanup).
        if parent is None or not (parent.status is JobStatus.COMPLETED or
                                  parent.status is JobStatus.PROCESSING):
            discard_parts(app, parent_id, list(range(count)), metadata)
        raise Ignore()
    parts = [patiently(store.get, part_job_id(parent_id, i)) for i in range(count)]
    missing = [i + 1 for i, p in enumerate(parts)
               if p is None or p.status is not JobStatus.COMPLETED or not p.result_path]
    if missing:
        raise PermanentError(f"cannot merge: parts {missing} of {count} are not rendered")
    opts = parse_options(options)
    label = opts.split.page_label if opts is not None and opts.split is not None else None
    service = render_service(app)
    key = storage_key(s.queue_namespace, parent_id, output_filename, metadata.get(TENANT_KEY))
    written = _written(service.storage, key, parts)
    if written is not None:
        # An earlier delivery of this merge wrote the PDF and removed the parts, then died
        # before completing the record: complete it with that PDF.
        path, pages, size = written
        return _complete(app, parent_id, key, count, metadata, {
            "path": str(path), "pages": pages, "bytes": size, "parts": count,
            "priority": JobPriority.parse(priority).label, "worker_pid": os.getpid()})
    with tempfile.TemporaryDirectory(prefix="pdftasks-merge-") as tmp:
        inputs = [_local_copy(service.storage, str(p.result_path), Path(tmp) / f"{i}.pdf")
                  for i, p in enumerate(parts) if p is not None]
        merged = Path(tmp) / "merged.pdf"
        limit = s.soft_time_limit_s
        try:
            with time_limit(limit):
                pages = merge_pdfs(inputs, merged, page_label=label)
                pdf = merged.read_bytes()
                if opts is not None and has_document_options(opts):
                    # Watermark, attachments, merge, encryption, signature: on the whole.
                    pdf, pages = service.finish_document(
                        pdf, pages, opts, parent.data,
                        job_pdf=job_pdf_loader(app, metadata.get(TENANT_KEY)))
        except SoftTimeLimitExceeded as exc:
            raise RenderTimeoutError(
                f"merging {count} parts exceeded the soft time limit of {limit:g} s") from exc
    path = service.storage.write(key, pdf)
    result = {"path": str(path), "pages": pages, "bytes": len(pdf), "parts": count,
              "duration_ms": round((time.perf_counter() - started) * 1000, 1),
              "priority": JobPriority.parse(priority).label, "worker_pid": os.getpid()}
    return _complete(app, parent_id, key, count, metadata, result)


def _complete(app: Celery, parent_id: str, key: str, count: int, metadata: dict[str, Any],
              result: dict[str, Any]) -> dict[str, Any]:
    """Remove the part files, then complete the parent: once it is COMPLETED only its PDF
    is left. A parent cancelled meanwhile keeps no PDF either."""
    store = job_store(app)
    discard_parts(app, parent_id, list(range(count)), metadata)
    if not patiently(store.transition, parent_id, JobStatus.COMPLETED,
                     (JobStatus.PROCESSING,), completed_at=dt.datetime.now(dt.UTC),
                     result_path=result["path"], pages=result["pages"], parts_done=count,
                     error=None):
        current = patiently(store.get, parent_id)
        if current is None or current.status is not JobStatus.COMPLETED:
            _remove(render_service(app).storage, key)
        raise Ignore()
    store_job_result(app, parent_id, result)
    emit(app, "completed", parent_id)
    log.info("merged %d parts of %s (%d pages, %s ms)", count, parent_id, result["pages"],
             result.get("duration_ms", "-"))
    return result


def _written(storage: Any, key: str, parts: list[Job | None]
             ) -> tuple[Path, int, int] | None:
    """The parent's merged PDF if an earlier delivery of the merge wrote it and removed the
    part files (local storage): (path, pages, bytes); else None."""
    path_for = getattr(storage, "path_for", None)
    if path_for is None or all(p is not None and p.result_path and
                               Path(p.result_path).is_file() for p in parts):
        return None
    path = Path(path_for(key))
    try:
        import pikepdf

        with pikepdf.open(path) as pdf:
            return path, len(pdf.pages), path.stat().st_size
    except Exception:
        return None


def _remove(storage: Any, key: str) -> None:
    path_for = getattr(storage, "path_for", None)
    if path_for is not None:
        with contextlib.suppress(FileNotFoundError):
            Path(path_for(key)).unlink()


def _local_copy(storage: Any, uri: str, dest: Path) -> Path:
    if uri.startswith("s3://"):
        dest.write_bytes(storage.read(uri))
        return dest
    return Path(uri)


def send_watch(app: Celery, parent_id: str, run: str, count: int, merge: Mapping[str, Any],
               seq: int, seen: str, since: float, secrets: bool = False) -> None:
    """Queue look number ``seq`` of the watch of ``parent_id`` (Redis broker only: an SQS
    message taken by a worker that dies comes back by itself)."""
    s = app_settings(app)
    if s.is_sqs:
        return
    prio = JobPriority.parse(merge.get("priority", "normal"))
    # No secrets in a message that waits in the broker for minutes (see _watch_split).
    options = dict(merge.get("options") or {})
    safe = {**merge, "options": redact_options(options)}
    app.tasks[WATCH_SPLIT].apply_async(
        kwargs={"parent_id": parent_id, "run": run, "count": count, "merge": safe,
                "secrets": secrets or safe["options"] != options,
                "seq": seq, "seen": seen, "since": since},
        countdown=watch_period(app), queue=queue_name(prio, s.queue_namespace),
        task_id=f"{parent_id}.watch{seq}")


def _fingerprint(parent: Job, parts: list[Job | None]) -> str:
    import hashlib
    import json

    state = [parent.parts_done] + [
        None if p is None else [p.status.value, p.attempts, p.retry_count] for p in parts]
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]


def _watch_split(self: Task, parent_id: str, run: str, count: int, merge: Mapping[str, Any],
                 seq: int, seen: str = "", since: float = 0.0, secrets: bool = False
                 ) -> None:
    """The safety net of a split job on a Redis broker: a message taken off its queue by a
    worker killed before kombu recorded it as unacknowledged (``BRPOP``, then the unacked
    record, a second round trip) is gone, and nothing else would ever send it again.

    Every ``watch_period`` while the parent is PROCESSING, this looks at its parts. When
    none of them changed (status, attempts, retries, the count done) for ``stall_after``
    seconds, it sends again each unfinished part, and the merge, whose message is nowhere
    in the broker (queues, unacked), counts parts COMPLETED but not counted, and fails the
    parent of a FAILED part. Ends when the parent does.

    Its message carries the job's options without their secrets (encrypt and sign
    passwords): a job with secrets whose part or merge was lost FAILS with an error saying
    so (resubmit it) instead of being merged without them."""
    app = self.app
    store = job_store(app)
    parent = patiently(store.get, parent_id)
    if parent is None or parent.status is not JobStatus.PROCESSING:
        return
    # A second delivery of this look (its worker died, or kombu restored it) does nothing;
    # the claim expires before a redelivery of a look whose worker died before the next.
    if not patiently(store.claim, f"split-watch:{parent_id}:{run}:{seq}",
                     max(1, int(watch_period(app) / 2))):
        return
    try:
        parts = [patiently(store.get, part_job_id(parent_id, i)) for i in range(count)]
        state, now = _fingerprint(parent, parts), time.time()
        if state != seen:
            seen, since = state, now
        elif now - since > stall_after(app):
            log.warning("split job %s: no progress for %.0f s, looking for lost messages",
                        parent_id, now - since)
            rescue_split(app, parent, parts, run, count, merge, secrets=secrets)
            since = now
    finally:
        send_watch(app, parent_id, run, count, merge, seq + 1, seen, since, secrets)


def rescue_split(app: Celery, parent: Job, parts: list[Job | None], run: str, count: int,
                 merge: Mapping[str, Any], secrets: bool = False) -> list[str]:
    """Send again what a stalled split job waits for and the broker lost; return the ids
    sent. Idempotent: a part or merge whose message still exists is left alone, and the
    count and the merge are idempotent (a part delivered twice renders into the same file)."""
    store = job_store(app)
    parent_id = parent.job_id
    for i, part in enumerate(parts):
        if part is not None and part.status is JobStatus.FAILED:
            # Its worker died before failing the parent.
            PartTask.fail_parent(app, parent_id, i, count, part.error or "failed",
                                 dict(merge.get("metadata") or {}))
            return []
    waiting = {part_job_id(parent_id, i): p for i, p in enumerate(parts)
               if p is not None and p.status in _RUNNABLE}
    done = 0
    for i, part in enumerate(parts):
        if part is not None and part.status is JobStatus.COMPLETED:
            done = patiently(store.record_part_done, parent_id, run, i, count)
    if not waiting and done < count:
        return []
    ids = list(waiting) if waiting else [merge_id(parent_id)]
    missing = set(ids) - live_messages(app, ids)
    if missing:
        time.sleep(0.5)  # one taken off a queue now is in the unacked record after this
        missing -= live_messages(app, sorted(missing))
    if missing and secrets:
        error = (f"the broker lost the message of {sorted(missing)[0]} (a worker was killed "
                 "while taking it) and it cannot be sent again without the job's secret "
                 "options; submit the job again")
        log.error("split job %s: %s", parent_id, error)
        fail_job(app, parent_id, error)
        store_failed_result(app, parent_id)
        metadata = dict(merge.get("metadata") or {})
        discard_parts(app, parent_id, list(range(count)), metadata)
        cancel_parts(app, parent_id, count, metadata)
        return []
    sent = []
    opts = parse_options(merge.get("options")) if not waiting else None
    for job_id in sorted(missing):
        part = waiting.get(job_id)
        if part is None:
            log.warning("split job %s: the merge's message was lost; sending it again",
                        parent_id)
            send_merge(app, parent_id, count, merge)
        else:
            if opts is None:
                opts = parse_options(merge.get("options"))
            assert opts is not None
            index = int(job_id.rsplit(".part", 1)[1]) - 1
            log.warning("split job %s: the message of part %d of %d (%s) was lost; sending "
                        "it again", parent_id, index + 1, count, part.status.value)
            part_signature(app, parent_id, run, index, count, parent.template, parent.data,
                           parent.css_file, parent.max_retries, merge, opts,
                           retries=part.retry_count).apply_async()
        sent.append(job_id)
    return sent


class WatchTask(SecretOptionsTask):
    """Carries the merge's options (secrets): never in logs, events, monitors."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        options.setdefault("argsrepr", "()")
        options.setdefault("kwargsrepr", repr({"parent_id": (kwargs or {}).get("parent_id"),
                                               "seq": (kwargs or {}).get("seq")}))
        return super().apply_async(args, kwargs, **options)


class MergeTask(SecretOptionsTask):
    """A merge that gives up fails the parent."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # Its options may hold secrets (encrypt passwords): never in logs, events, monitors.
        options.setdefault("argsrepr", "()")
        options.setdefault("kwargsrepr", repr({"parent_id": (kwargs or {}).get("parent_id")}))
        return super().apply_async(args, kwargs, **options)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        if isinstance(exc, TimeLimitExceeded):
            exc = hard_limit_error(exc.args[0] if exc.args
                                   else app_settings(self.app).hard_time_limit_s)
        parent_id = kwargs["parent_id"]
        error = f"merging the parts failed: {describe(exc)}"
        fail_job(self.app, parent_id, error)
        store_failed_result(self.app, parent_id)


def register(app: Celery) -> None:
    """Register ``render_part`` and ``merge_parts`` on ``app``, with ``generate_pdf``'s
    retry options."""
    s = app_settings(app)
    retry = {"autoretry_for": (TransientError,), "retry_backoff": s.retry_backoff_s,
             "retry_backoff_max": s.retry_backoff_max_s, "retry_jitter": s.retry_jitter,
             "max_retries": s.default_max_retries}
    app.task(_render_part, bind=True, base=PartTask, name=RENDER_PART, shared=False, **retry)
    app.task(_merge_parts, bind=True, base=MergeTask, name=MERGE_PARTS, shared=False,
             **retry)
    app.task(_watch_split, bind=True, base=WatchTask, name=WATCH_SPLIT, shared=False,
             ignore_result=True)


__all__ = ["MERGE_PARTS", "RENDER_PART", "WATCH_SPLIT", "cancel_parts", "live_messages",
           "part_context", "register", "rescue_split", "split_job"]
