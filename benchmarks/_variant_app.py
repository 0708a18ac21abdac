"""pdftasks' Celery app with a few options changed, for ``throughput.py --variant``.

Measures what single options cost per job; not a supported configuration. The worker is
``celery -A _variant_app worker`` with the same queues, concurrency, prefetch and ``-O fair``
as ``pdftasks worker``; ``BENCH_VARIANT`` is a comma-separated list of:

* ``events``: task events sent all the time, as with ``PDFTASKS_TASK_EVENTS=always`` (the
  default, on-demand, sends them only while a monitor asks);
* ``no-events``: ``worker_send_task_events`` and ``task_send_sent_event`` off (Flower and
  other monitors no longer see jobs);
* ``no-track-started``: ``task_track_started`` off (no STARTED result write; the job
  record still goes PROCESSING);
* ``no-extended``: ``result_extended`` off (results without task name, args, kwargs);
* ``warning-logs``: nothing here; the benchmark runs the worker with ``-l WARNING``;
* ``trace``: stock options; every pool process appends ``time.time()`` of the steps of each
  job (``task_prerun``, render start and end, ``on_success`` start, its event, its end,
  ``task_postrun``) to ``BENCH_TRACE_DIR/trace-<pid>.log``, so the benchmark can split the
  time a job costs its process outside the render (``throughput.py`` prints the split);
  the worker's main process marks a message taken in and handed over, a result read back
  and acknowledged, and each write of a message to a pool process's pipe, and a pool
  process the moment it takes a message in, so that the split adds up to the time between
  two renders. Each mark also carries the process's CPU clock (``time.process_time()``), so
  that the benchmark knows the CPU of each render and the pool processes' CPU outside it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import signals

from pdftasks.celery_app import app

_VARIANT = {v for v in os.environ.get("BENCH_VARIANT", "").split(",") if v}

if "events" in _VARIANT:  # task events all the time (PDFTASKS_TASK_EVENTS=always)
    app.conf.worker_send_task_events = True
if "no-events" in _VARIANT:
    app.conf.worker_send_task_events = False
    app.conf.task_send_sent_event = False
if "no-track-started" in _VARIANT:
    app.conf.task_track_started = False
if "no-extended" in _VARIANT:
    app.conf.result_extended = False

if "trace" in _VARIANT:
    import redis.connection

    import pdftasks.worker.tasks as _tasks
    from pdftasks.render import PDFService

    _files: dict[int, Any] = {}
    #: Redis round trips of this process so far: one per command or pipeline sent.
    _trips = [0]
    _send = redis.connection.AbstractConnection.send_packed_command

    def _counted_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        _trips[0] += 1
        return _send(self, *args, **kwargs)

    redis.connection.AbstractConnection.send_packed_command = _counted_send  # type: ignore

    def _mark(step: str, task_id: str | None) -> None:
        pid = os.getpid()
        if pid not in _files:
            path = os.path.join(os.environ["BENCH_TRACE_DIR"], f"trace-{pid}.log")
            _files[pid] = open(path, "a", buffering=1)  # noqa: SIM115 - for the process
        _files[pid].write(f"{time.time():.6f} {step} {task_id} {_trips[0]} "
                          f"{time.process_time():.6f}\n")

    @signals.task_prerun.connect(weak=False)
    def _prerun(task_id: str | None = None, **_: Any) -> None:
        _mark("prerun", task_id)

    @signals.task_postrun.connect(weak=False)
    def _postrun(task_id: str | None = None, **_: Any) -> None:
        _mark("postrun", task_id)

    def _current_id() -> str | None:
        from celery import current_task

        return current_task.request.id if current_task else None

    _generate = PDFService.generate_pdf

    def _traced_generate(self: PDFService, *args: Any, **kwargs: Any) -> Any:
        task_id = _current_id()
        _mark("render_start", task_id)
        try:
            return _generate(self, *args, **kwargs)
        finally:
            _mark("render_end", task_id)

    PDFService.generate_pdf = _traced_generate  # type: ignore[method-assign]

    _on_success = _tasks.PdfTask.on_success

    def _traced_on_success(self: Any, retval: Any, task_id: str, *args: Any) -> None:
        _mark("on_success", task_id)
        try:
            _on_success(self, retval, task_id, *args)
        finally:
            _mark("on_success_end", task_id)

    _tasks.PdfTask.on_success = _traced_on_success  # type: ignore[method-assign]

    _emit = _tasks.emit

    def _traced_emit(app_: Any, event: str, job_id: str, error: str | None = None,
                     **kwargs: Any) -> None:
        _mark("emit", job_id)
        _emit(app_, event, job_id, error, **kwargs)

    _tasks.emit = _traced_emit

    # The worker's main process: a message taken in (strategy) and handed to a pool
    # process; a pool process's result taken back (ack, task events).
    from pdftasks.worker.guard import GuardedStrategy
    from pdftasks.worker.request import PdfRequest

    _strategy_call = GuardedStrategy.__call__

    def _traced_strategy(self: Any, message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        task_id = (message.headers or {}).get("id")
        _mark("m_received", task_id)
        try:
            return _strategy_call(self, message, body, *args, **kwargs)
        finally:
            _mark("m_dispatched", task_id)

    GuardedStrategy.__call__ = _traced_strategy  # type: ignore[method-assign]

    # Celery's request class overrides on_success: mark the ack in it, and the
    # task-succeeded event after it (when events are on).
    _acknowledge = PdfRequest.acknowledge
    _send_event = PdfRequest.send_event

    def _traced_acknowledge(self: Any) -> None:
        _mark("m_result", self.id)
        _acknowledge(self)
        _mark("m_result_end", self.id)

    def _traced_send_event(self: Any, type_: str, **fields: Any) -> None:
        _send_event(self, type_, **fields)
        if type_ == "task-succeeded":
            _mark("m_result_end", self.id)

    PdfRequest.acknowledge = _traced_acknowledge  # type: ignore[method-assign]
    PdfRequest.send_event = _traced_send_event  # type: ignore[method-assign]

    # The hand-over, on both sides: the main process writes a message to a pool process's
    # pipe (marked with that process's pid: the write has no task id at hand), and the
    # pool process takes it in (the entry of Celery's tracer). Celery's private AsynPool
    # names: where they are missing, those marks are too and the split says so.
    from celery.app import trace as _celery_trace
    from celery.concurrency import asynpool as _asynpool

    _make_process = getattr(_asynpool.AsynPool, "_create_worker_process", None)

    def _traced_make_process(self: Any, i: int) -> Any:
        proc = _make_process(self, i)  # type: ignore[misc]
        send = getattr(proc, "send_job_offset", None)
        if send is not None:
            def _send(*args: Any, _pid: int = proc.pid, **kwargs: Any) -> Any:
                _mark("m_write", str(_pid))
                return send(*args, **kwargs)

            proc.send_job_offset = _send
        return proc

    if _make_process is not None:
        _asynpool.AsynPool._create_worker_process = _traced_make_process  # type: ignore

    def _traced_entry(entry: Any) -> Any:
        def traced(task: Any, uuid: str, *args: Any, **kwargs: Any) -> Any:
            _mark("k_in", uuid)
            return entry(task, uuid, *args, **kwargs)

        return traced

    @signals.worker_process_init.connect(weak=False)
    def _trace_entries(**_: Any) -> None:
        # Only in pool processes: the main process pickles these functions by name, and
        # pickle insists that the name still gives the same object there.
        for name in ("fast_trace_task", "trace_task_ret"):
            entry = getattr(_celery_trace, name, None)
            if entry is not None:
                setattr(_celery_trace, name, _traced_entry(entry))

__all__ = ["app"]
