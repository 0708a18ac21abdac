"""Celery tasks. Thin: they check, call the renderer, and move the job record along.

Lifecycle of a job record (``pdftasks.stores``), each step an atomic transition:
PENDING → PROCESSING → COMPLETED | FAILED, with RETRYING between attempts and CANCELLED
from PENDING or RETRYING. Every terminal transition happens once and publishes one event.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import sys
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from celery import Celery, Task, states
from celery.exceptions import Ignore, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.result import task_join_will_block
from celery.signals import task_prerun
from kombu.exceptions import OperationalError

from pdftasks.celery_app import GENERATE_PDF
from pdftasks.errors import (
    BrokerUnavailableError,
    DocumentOptionError,
    PermanentError,
    RenderTimeoutError,
    TransientError,
)
from pdftasks.limits import DataLimits, check_data
from pdftasks.models import TENANT_KEY, JobPriority, JobStatus
from pdftasks.options import (
    has_document_options,
    parse_options,
    redact_options,
    redact_task_kwargs,
)
from pdftasks.options.split import check_split
from pdftasks.render import (
    PDFService,
    PDFServiceConfig,
    redact_paths,
    resolve_inside,
    time_limit,
)
from pdftasks.render.service import check_document_inputs
from pdftasks.settings import Settings
from pdftasks.storage import check_output_filename, storage_key
from pdftasks.stores import Job, JobStore, open_store
from pdftasks.worker import early
from pdftasks.worker.request import PdfRequest, SecretOptionsRequest

log = logging.getLogger(__name__)

_RUNNABLE = (JobStatus.PENDING, JobStatus.RETRYING, JobStatus.PROCESSING)

_per_app: weakref.WeakKeyDictionary[Celery, dict[tuple[str, int], Any]] = \
    weakref.WeakKeyDictionary()


def app_settings(app: Celery) -> Settings:
    """``app``'s settings (``app.pdftasks_settings``, given to or read by ``create_app``).

    Raises:
        RuntimeError: ``app`` is not a pdftasks app. Nothing below the entry points reads
            the environment: a host's own app has no pdftasks settings to fall back on.
    """
    settings: Settings | None = getattr(app, "pdftasks_settings", None)
    if settings is None:
        raise RuntimeError(f"{app!r} is not a pdftasks app (made by pdftasks.create_app): "
                           "it has no pdftasks settings")
    return settings


def event_hooks(app: Celery) -> list[Any]:
    """``app``'s job event hooks, called in the worker after each published transition as
    ``fn(app, event, job_id, error)`` (event: completed, failed, retrying). Plugins such as
    webhooks and metrics add theirs when they are installed on the app; each app has its
    own list."""
    hooks = getattr(app, "pdftasks_hooks", None)
    if hooks is None:
        hooks = []
        app.pdftasks_hooks = hooks
    return hooks


def counter_hooks(app: Celery) -> list[Any]:
    """``app``'s counter hooks, ``fn(app, event, job_id) -> [(hash key, field, amount)]``:
    counters a plugin adds to when a job completes, made in the same round trip as the
    transition when the job store keeps counters (``JobStore.finish``). Its event hook then
    sees ``counted_with_transition(job_id)`` True and does not count again."""
    hooks = getattr(app, "pdftasks_counter_hooks", None)
    if hooks is None:
        hooks = []
        app.pdftasks_counter_hooks = hooks
    return hooks


_counted_job: list[str | None] = [None]


def counted_with_transition(job_id: str) -> bool:
    """Whether the event hooks running now are for a transition of ``job_id`` that already
    added the counter hooks' counters."""
    return _counted_job[0] == job_id


def _counters(app: Celery, event: str, job_id: str) -> list[tuple[str, str, float]]:
    if not job_store(app).keeps_counters():
        return []
    out: list[tuple[str, str, float]] = []
    for fn in counter_hooks(app):
        try:
            out += fn(app, event, job_id)
        except Exception:
            log.exception("counter hook %r failed for job %s", fn, job_id)
    return out


def _cached(app: Celery, name: str, factory: Any) -> Any:
    cache = _per_app.setdefault(app, {})
    key = (name, os.getpid())  # nothing crosses a fork: connections are per process
    if key not in cache:
        cache[key] = factory()
    return cache[key]


def job_store(app: Celery) -> JobStore:
    """This process's job store for ``app``."""
    store: JobStore = _cached(app, "store", lambda: open_store(app_settings(app)))
    return store


def render_service(app: Celery) -> PDFService:
    """This process's renderer for ``app``: templates, styles and fonts reused across jobs.

    Its linked stylesheets are cached too (``cache_stylesheets``): the process-wide
    WeasyPrint hook that needs is installed when it first renders (a worker's warm-up), not
    in a process that only checks templates before submitting."""

    def make() -> PDFService:
        service = PDFService(PDFServiceConfig.from_settings(app_settings(app)),
                             cache_stylesheets=True)
        service.interrupts = (SoftTimeLimitExceeded,)
        return service

    service: PDFService = _cached(app, "service", make)
    return service


def submit_checks(app: Celery, template: Any, data: Any, output_filename: Any, priority: Any,
                  css_file: Any = None, service: PDFService | None = None,
                  checked: set[tuple[Any, Any]] | None = None,
                  options: Any = None) -> JobPriority:
    """Checks done before a job is queued; raise a typed ``InvalidJobError``.

    The template's existence and syntax are checked when the templates directory exists
    here (a client machine may not have the templates; the worker checks again).
    ``checked`` remembers templates already checked within one batch.
    """
    s = app_settings(app)
    prio = JobPriority.parse(priority)
    check_data(data, DataLimits.from_settings(s))
    check_output_filename(output_filename)
    opts = parse_options(options)
    check_split(opts, data)  # a list where split.key says
    if opts is not None and has_document_options(opts):
        # The given checker (the API's only looks for files), else the render service where
        # the templates are, else the names only.
        checker = service if service is not None else \
            render_service(app) if s.templates_dir.is_dir() else None
        check_document_inputs(opts, data, s.templates_dir,
                              checker.check_template if checker is not None else None,
                              DataLimits.from_settings(s))
    if checked is not None and (template, css_file) in checked:
        return prio
    if service is not None or s.templates_dir.is_dir():
        (service or render_service(app)).check_template(template, css_file)
    else:
        resolve_inside(s.templates_dir, template, "template")
        if css_file is not None:
            resolve_inside(s.templates_dir, css_file, "css_file")
    if checked is not None:
        checked.add((template, css_file))
    return prio


def job_event(event: str, job_id: str, error: str | None = None) -> dict[str, Any]:
    """The store event of a transition (what ``JobStore.events`` listeners receive)."""
    return {"event": event, "job_id": job_id, "error": error, "ts": time.time()}


def held_results(app: Celery, job_id: str) -> list[tuple[str, str, int]]:
    """Celery's result writes for ``job_id`` held by the result backend, for the job store to
    make along with the record's change (``pdftasks.brokers.redis_results``); [] if none."""
    backend = app.backend
    if not getattr(backend, "defer_jobs", False):
        return []
    held: list[tuple[str, str, int]] = backend.take_held(job_id)
    return held


def emit(app: Celery, event: str, job_id: str, error: str | None = None,
         published: bool = False, counted: bool = False) -> None:
    """Tell listeners about a transition: store event (clients; unless ``published``
    already, with the transition) and worker-side hooks (``counted``: the counter hooks'
    counters went with the transition)."""
    store = job_store(app)
    try:
        if not published:
            store.publish(job_event(event, job_id, error))
    except Exception:  # listeners are best effort; the record is already right
        log.exception("could not publish %s event for %s", event, job_id)
    _counted_job[0] = job_id if counted else None
    try:
        with store.remembered(job_id):
            for fn in event_hooks(app):
                try:
                    fn(app, event, job_id, error)
                except Exception:
                    log.exception("event hook %r failed for job %s", fn, job_id)
    finally:
        _counted_job[0] = None
    s = app_settings(app)
    hook_path = s.on_completed if event == "completed" else s.on_failed
    if not hook_path or event not in ("completed", "failed", "retrying"):
        return
    try:
        module, _, name = hook_path.partition(":")
        hook = getattr(importlib.import_module(module), name)
        job = store.get(job_id)
        hook(job) if event == "completed" else hook(job, error)
    except Exception:
        log.exception("worker-side hook %s failed for job %s", hook_path, job_id)


#: How long a worker retries a job record update while the job store is unreachable (a
#: Redis restart), in seconds. Celery's own result writes wait about as long.
STORE_PATIENCE_S = 30.0


def patiently(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, retried while it raises ``BrokerUnavailableError``.

    For the worker's record updates: Celery stores the result and acknowledges the
    message whatever its handlers raise, so an update given up on at once would leave the
    record PROCESSING (or PENDING) for good.
    """
    deadline, delay = time.monotonic() + STORE_PATIENCE_S, 0.1
    while True:
        try:
            return fn(*args, **kwargs)
        except BrokerUnavailableError as exc:
            if time.monotonic() + delay > deadline:
                raise
            if delay == 0.1:
                log.warning("%s; retrying for up to %g s", exc, STORE_PATIENCE_S)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def public_error(app: Celery, error: str) -> str:
    """``error`` as clients may see it (job records, events, webhooks): no server paths."""
    s = app_settings(app)
    return redact_paths(error, {"templates": s.templates_dir, "output": s.output_dir,
                                "home": s.home, "python": Path(sys.prefix)})


def fail_job(app: Celery, job_id: str, error: str) -> None:
    error = public_error(app, error)
    if patiently(job_store(app).transition, job_id, JobStatus.FAILED, _RUNNABLE, error=error,
                 completed_at=dt.datetime.now(dt.UTC)):
        emit(app, "failed", job_id, error)


def store_job_result(app: Celery, job_id: str, result: dict[str, Any] | None,
                     error: str | None = None) -> None:
    """A job's Celery result written outside its own task (a split job's merge, a job
    failed by the lost-message sweep), for ``AsyncResult(job_id).get()``. Best effort: the
    job record is the truth."""
    try:
        if error is None:
            app.backend.store_result(job_id, result, states.SUCCESS)
        else:
            app.backend.store_result(job_id, PermanentError(error), states.FAILURE)
    except Exception:
        log.warning("could not store the Celery result of job %s", job_id, exc_info=True)


def store_failed_result(app: Celery, job_id: str) -> None:
    """The Celery result of a job whose record FAILED (not over a later, completed one)."""
    job = patiently(job_store(app).get, job_id)
    if job is not None and job.status is JobStatus.FAILED:
        store_job_result(app, job_id, None, job.error or "failed")


def task_kwargs(job: Job, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``generate_pdf``'s arguments for ``job``; ``options`` as given (the record's copy
    has its secrets redacted). No ``options`` argument when there are none."""
    kwargs = {"template": job.template, "data": job.data,
              "output_filename": job.output_filename, "priority": job.priority.label,
              "css_file": job.css_file, "max_retries": job.max_retries,
              "metadata": job.metadata}
    if options or job.options:
        kwargs["options"] = dict(options or job.options)
    return kwargs


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def hard_limit_error(timeout: float) -> RenderTimeoutError:
    """What a job killed by Celery's hard time limit (``TimeLimitExceeded``) failed of."""
    return RenderTimeoutError(f"hard time limit of {timeout:g} s exceeded; "
                              "the worker process was killed")


class SecretOptionsTask(Task):
    """A task whose kwargs may hold job options with secrets (``options``, or
    ``merge.options``): Celery keeps them redacted (``hide_secret_options`` in the pool
    process, ``SecretOptionsRequest`` for what the worker's main process writes) and a
    retry sends the real ones on."""

    Request = SecretOptionsRequest

    def retry(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        # The request's kwargs lost their secrets (hide_secret_options): retry with the
        # real ones, which the message carried.
        if kwargs is None:
            kwargs = getattr(self.request, "pdftasks_kwargs", None)
        return super().retry(args, kwargs, *rest, **options)


class PdfTask(SecretOptionsTask):
    """Checks a job and records it before it is queued; keeps its record up to date."""

    Request = PdfRequest

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if options.get("retries") or options.pop("pdftasks_recorded", False):
            return self._publish(args, kwargs, options)
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        names = ("template", "data", "output_filename", "priority", "css_file",
                 "max_retries", "metadata", "options")
        bound = dict(zip(names, args, strict=False))
        bound.update(kwargs)
        missing = {"template", "data", "output_filename"} - bound.keys()
        if missing:
            raise TypeError(f"generate_pdf() missing arguments: {', '.join(sorted(missing))}")
        prio = submit_checks(self.app, bound["template"], bound["data"],
                             bound["output_filename"], bound.get("priority", JobPriority.NORMAL),
                             bound.get("css_file"), options=bound.get("options"))
        bound["priority"] = prio.label
        if not bound.get("options"):
            bound.pop("options", None)
        job = make_job(self.app, options.get("task_id"), bound)
        options["task_id"] = job.job_id
        check_broker(self.app)
        store = job_store(self.app)
        store.create(job)
        try:
            return self._publish((), bound, options)
        except BaseException:
            store.delete([job.job_id])  # nothing half-recorded
            raise

    def _publish(self, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
        # A short, data-free repr for logs and monitors: data may be large or private,
        # and Celery's saferepr of it is the slowest part of a publish.
        kw = kwargs or {}
        options.setdefault("argsrepr", "()")
        options.setdefault("kwargsrepr", repr({k: kw.get(k) for k in (
            "template", "output_filename", "priority") if k in kw}))
        try:
            return super().apply_async(args, kwargs, **options)
        except OperationalError as exc:
            raise BrokerUnavailableError(f"cannot reach the broker: {exc}") from exc
        except RuntimeError as exc:
            # How Celery's Redis result backend gives up reconnecting to the result store.
            if not isinstance(exc.__cause__, _connection_errors(self.app)):
                raise
            raise BrokerUnavailableError(
                f"cannot reach the result store: {exc.__cause__}") from exc

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if not isinstance(retval, dict) or "path" not in retval:
            return
        # One round trip: the record, its event, the counters and Celery's SUCCESS (held
        # until now).
        counters = _counters(self.app, "completed", task_id)
        if patiently(job_store(self.app).finish,
                     task_id, JobStatus.COMPLETED, (JobStatus.PROCESSING,),
                     event=job_event("completed", task_id),
                     results=held_results(self.app, task_id), counters=counters,
                     completed_at=dt.datetime.now(dt.UTC), result_path=retval["path"],
                     pages=retval["pages"], error=None):
            emit(self.app, "completed", task_id, published=True, counted=bool(counters))

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        # A SUCCESS held by the result backend that on_success did not write: write it now.
        flush = getattr(self.app.backend, "flush", None)
        if flush is not None and getattr(self.app.backend, "defer_jobs", False):
            flush(task_id)

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        error = public_error(self.app, describe(exc))
        if patiently(job_store(self.app).transition, task_id, JobStatus.RETRYING,
                     (JobStatus.PROCESSING,), retry_count=self.request.retries + 1, error=error):
            emit(self.app, "retrying", task_id, error)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        if isinstance(exc, TimeLimitExceeded):  # Celery's hard limit killed the child
            exc = hard_limit_error(exc.args[0] if exc.args
                                   else app_settings(self.app).hard_time_limit_s)
        fail_job(self.app, task_id, describe(exc))


def _connection_errors(app: Celery) -> tuple[type[BaseException], ...]:
    return tuple(getattr(app.backend, "connection_errors", ()))


def check_broker(app: Celery) -> None:
    """Raise ``BrokerUnavailableError`` at once if the Redis result store (by default the
    broker's server) does not answer; called before a job is recorded.

    Celery subscribes to a job's result before publishing it, and its Redis backend retries
    a failed subscription 20 times, a second apart, then raises an untyped RuntimeError:
    without this check an unreachable broker held the caller for 20 s, and one that accepts
    connections but never answers for many minutes. One PING, bounded by the socket
    timeouts set in ``celery_app``.
    """
    ping = getattr(getattr(app.backend, "client", None), "ping", None)
    if task_join_will_block() or not callable(ping):
        return  # worker children do not subscribe; other backends do not either
    try:
        ping()
    except _connection_errors(app) as exc:
        raise BrokerUnavailableError(f"cannot reach the broker: {exc}") from exc


def make_job(app: Celery, job_id: str | None, bound: Mapping[str, Any]) -> Job:
    """A new PENDING job record from ``generate_pdf`` arguments."""
    from celery.utils import uuid

    max_retries = bound.get("max_retries")
    return Job(
        job_id=job_id or uuid(), template=bound["template"], data=dict(bound["data"]),
        output_filename=bound["output_filename"], css_file=bound.get("css_file"),
        priority=JobPriority.parse(bound.get("priority", JobPriority.NORMAL)),
        max_retries=app_settings(app).default_max_retries if max_retries is None
        else max_retries,
        metadata=dict(bound.get("metadata") or {}),
        options=redact_options(bound.get("options")),
    )


class PoisonJobError(PermanentError):
    """The job crashed its worker process too many times."""


def adopt_job(app: Celery, job_id: str, bound: Mapping[str, Any]) -> bool:
    """Record a job whose message came without a record (queued by a client that bypassed
    pdftasks, e.g. ``send_task``; its arguments were checked by ``pdftasks.worker.guard``): a
    PENDING record from its arguments, made once. True if it was made here."""
    store = job_store(app)
    if not patiently(store.claim, f"adopt:{job_id}", app_settings(app).job_retention_s):
        return False
    patiently(store.create, make_job(app, job_id, bound))
    log.warning("job %s came without a record (queued around pdftasks): recorded it", job_id)
    return True


def _generate_pdf(self: Task, template: str, data: Mapping[str, Any], output_filename: str,
                  priority: str = "normal", css_file: str | None = None,
                  max_retries: int | None = None, metadata: Mapping[str, Any] | None = None,
                  options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Render ``template`` with ``data`` to ``<namespace>/<tenant or _>/<job id>/<output_filename>``
    in the storage (``pdftasks.storage.storage_key``).

    Returns ``{"path", "pages", "bytes", "duration_ms", "started_at", "priority",
    "worker_pid", "queue"}``. Permanent errors (bad template, data, path, time limit) fail at once;
    transient ones (storage) are retried with exponential backoff and jitter, up to
    ``max_retries``. A cancelled job is skipped and never produces a file.
    """
    started_at = time.time()
    app, job_id = self.app, self.request.id
    s = app_settings(app)
    store = job_store(app)
    # Celery's autoretry reads the retry budget from the task object, which all jobs of this
    # process share (and never clears it once a retry raised): set it for every job, or a
    # job without max_retries would get the budget of the last one that had it.
    self.override_max_retries = self.max_retries if max_retries is None else max_retries
    # One round trip: the attempt count, PROCESSING and Celery's STARTED (held until now).
    begin = (job_id, self.request.retries, s.max_redeliveries, _RUNNABLE,
             held_results(app, job_id))
    attempts, moved = patiently(store.begin, *begin, started_at=dt.datetime.now(dt.UTC),
                                retry_count=self.request.retries)
    if attempts == 0 and adopt_job(app, job_id, {
            "template": template, "data": data, "output_filename": output_filename,
            "priority": priority, "css_file": css_file, "max_retries": max_retries,
            "metadata": metadata, "options": options}):
        attempts, moved = patiently(store.begin, *begin, started_at=dt.datetime.now(dt.UTC),
                                    retry_count=self.request.retries)
    crashes = attempts - self.request.retries - 1
    if crashes > s.max_redeliveries:
        raise PoisonJobError(f"the worker process died {crashes} times while rendering this "
                             "job (out of memory or a crash in a native library); not retried")
    if not moved:
        job = store.get(job_id)
        if job is not None:
            log.info("job %s is %s: not rendering it", job_id, job.status.value)
            if job.status is JobStatus.CANCELLED:
                self.update_state(state=states.REVOKED)
            raise Ignore()
    # The server chooses where the PDF goes: the caller's name is only its last part.
    key = storage_key(s.queue_namespace, job_id, output_filename,
                      (metadata or {}).get(TENANT_KEY))
    if crashes > 0:
        # An earlier delivery died, perhaps between writing its temporary file and
        # renaming it: remove that file before rendering again.
        render_service(app).storage.discard_stale_temps(key)
    job_options = parse_options(options)  # checked at the door; again here
    context = None
    if job_options is not None and job_options.split is not None:
        from pdftasks.worker.split import split_job  # queues the parts, or: one part

        context = split_job(self, job_id, template, data, output_filename, priority,
                            css_file, max_retries, metadata, options, job_options)
    limit = s.soft_time_limit_s
    try:
        # Our own alarm as well as Celery's soft limit: the child enforces it even when the
        # main process's timer is late, and the message is the same either way.
        with time_limit(limit):
            result = render_service(app).generate_pdf(
                template, data, output_filename, css_file, key=key, options=job_options,
                context=context, job_pdf=job_pdf_loader(app, (metadata or {}).get(TENANT_KEY)))
    except SoftTimeLimitExceeded as exc:
        raise RenderTimeoutError(
            f"render exceeded the soft time limit of {limit:g} s and was stopped "
            "(runaway template?)") from exc
    early.render_ended(job_id)  # the main process may take this process's next job
    result.extra.update(started_at=started_at, priority=JobPriority.parse(priority).label,
                        worker_pid=os.getpid(),
                        queue=(self.request.delivery_info or {}).get("routing_key"))
    log.info("rendered %s (%s pages, %.0f ms)", Path(result.path).name, result.pages,
             result.duration_ms)
    return result.as_dict()


def job_pdf_loader(app: Celery, tenant: str | None) -> Callable[[str], bytes]:
    """``job_id -> pdf bytes`` of a completed job of ``tenant`` (the ``merge`` option's job
    parts). A job of another tenant is "not found", exactly like a missing one."""

    def load(job_id: str) -> bytes:
        job = patiently(job_store(app).get, job_id)
        if job is None or (job.metadata or {}).get(TENANT_KEY) != tenant:
            raise DocumentOptionError(f"options.merge: no job {job_id!r} of this tenant")
        if job.status is not JobStatus.COMPLETED or not job.result_path:
            raise DocumentOptionError(f"options.merge: job {job_id!r} is "
                                      f"{job.status.value}, not completed")
        service = render_service(app)
        if job.result_path.startswith("s3://"):
            data: bytes = service.storage.read(job.result_path)
            return data
        path = Path(job.result_path).resolve()
        if not path.is_relative_to(service.output_dir) or not path.is_file():
            raise DocumentOptionError(f"options.merge: the PDF of job {job_id!r} is gone")
        return path.read_bytes()

    return load


def hide_secret_options(sender: Any = None, task: Any = None, **_: Any) -> None:
    """``task_prerun`` receiver: the request's ``options`` without their secrets.

    With ``result_extended`` Celery stores the request's kwargs with every state it records
    (STARTED, RETRY, SUCCESS, FAILURE) in the result backend, and this runs before the
    first of them. The task itself still receives the real options, and
    ``SecretOptionsTask.retry`` sends them on; only what Celery keeps is redacted. Tasks of
    other classes are left alone: a retry of theirs would lose the secrets.
    """
    if not isinstance(task, SecretOptionsTask):
        return
    request = task.request
    hidden = redact_task_kwargs(request.kwargs)
    if hidden is not None:
        request.pdftasks_kwargs = dict(request.kwargs)
        request.kwargs = hidden


def register(app: Celery) -> Task:
    """Register ``generate_pdf`` on ``app`` with retry options from its settings (and connect
    the worker's signal receivers, ``pdftasks.worker.signals``)."""
    from pdftasks.worker import (
        lost,
        signals,  # noqa: F401  # connects the receivers
        split,
    )

    s = app_settings(app)
    split.register(app)  # a split job's parts and merge (options.split)
    lost.install(app)  # Redis broker: jobs whose message was lost are sent again
    early.install(app)  # a process's next message is taken when its render ends
    task_prerun.connect(hide_secret_options, weak=False,
                        dispatch_uid="pdftasks.worker.tasks.hide_secret_options")
    return app.task(
        _generate_pdf,
        bind=True,
        base=PdfTask,
        name=GENERATE_PDF,
        shared=False,  # each app (one per manager) registers its own
        autoretry_for=(TransientError,),
        retry_backoff=s.retry_backoff_s,
        retry_backoff_max=s.retry_backoff_max_s,
        retry_jitter=s.retry_jitter,
        max_retries=s.default_max_retries,
        # The worker's main process checks each message (size, shape, data limits) before
        # Celery builds its request; a bad one fails its job instead of stopping the worker.
        Strategy="pdftasks.worker.guard:job_strategy",
    )
