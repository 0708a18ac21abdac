"""The Celery app: four priority queues, routing by the job's priority, reliability options.

Module named ``celery_app`` so that ``pdftasks.app`` is the Celery instance itself.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from pdftasks.models import JobPriority
from pdftasks.settings import Settings, get_settings

#: Name of the PDF task; routed by its ``priority`` argument.
GENERATE_PDF = "pdftasks.generate_pdf"

#: ``PDFTASKS_QUEUE_NAMESPACE``'s default (the field's default, not the environment).
DEFAULT_NAMESPACE: str = Settings.model_fields["queue_namespace"].default


def queue_name(priority: object, namespace: str | None = None) -> str:
    """``pdf.urgent`` … ``pdf.low`` for a priority (name, number or JobPriority).

    ``namespace``: the settings' ``queue_namespace`` (pass it: None is the default
    namespace, ``pdf``, whatever the environment says; the environment is read by entry
    points, not here)."""
    ns = namespace or DEFAULT_NAMESPACE
    return f"{ns}.{JobPriority.parse(priority).label}"


def queue_names(namespace: str | None = None) -> list[str]:
    """All four queues, most urgent first: the order workers consume them in
    (``namespace`` as in ``queue_name``)."""
    return [queue_name(p, namespace) for p in JobPriority]


class PriorityRouter:
    """Celery router: ``generate_pdf`` goes to the queue of its ``priority`` argument."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def __call__(self, name: str, args: Any, kwargs: Any, options: dict[str, Any],
                 task: Any = None, **kw: Any) -> dict[str, Any] | None:
        if name != GENERATE_PDF:
            return None
        args, kwargs = args or (), kwargs or {}
        priority = kwargs.get("priority", args[3] if len(args) > 3 else JobPriority.NORMAL)
        return {"queue": queue_name(priority, self.namespace)}


def broker_transport_options(s: Settings) -> dict[str, Any]:
    if s.is_local:
        folder = s.home / "broker"
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "polling_interval": s.local_polling_interval_s,
        }
    if s.effective_broker_url.startswith(("redis://", "rediss://", "sentinel://")):
        return {
            # BRPOP lists in -Q order: a free worker process takes urgent before high, etc.
            "queue_order_strategy": "priority",
            # No per-message priorities: one Redis list per queue, nothing reorders it.
            "priority_steps": [0],
            # Unacked (late-ack) jobs come back only after this: longer than any render.
            "visibility_timeout": s.visibility_timeout_s,
            # kombu looks for such jobs every interval x throttle seconds (10 x 10 by
            # default): look every tenth of the timeout (1-10 s) instead, so a job held by a
            # worker that died comes back about one visibility timeout later, not 100 s.
            "unacked_restore_interval": max(1, min(10, s.visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1,
            # A worker killed while holding the sweep lock blocks sweeps until it expires.
            "unacked_mutex_expire": min(300, s.visibility_timeout_s),
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            # pdftasks.brokers.redis: messages taken just as Redis went away wait here
            # until they are put back on their queues.
            "rescue_dir": str(s.home / "rescued"),
        }
    if s.is_sqs:
        from pdftasks.brokers.sqs import transport_options

        return transport_options(s)
    return {"visibility_timeout": s.visibility_timeout_s}


def celery_soft_time_limit(s: Settings) -> float:
    """Celery's soft time limit: a second after pdftasks' own (the alarm in the render
    process, ``render.time_limit``), and before the hard limit. Our alarm stops a runaway
    render with ``RenderTimeoutError``; Celery's ``SoftTimeLimitExceeded``, arriving at the
    same moment, could otherwise replace it while it unwinds. Celery's is the backstop."""
    return min(s.soft_time_limit_s + 1.0, (s.soft_time_limit_s + s.hard_time_limit_s) / 2)


def result_backend_url(s: Settings) -> str:
    """Celery's ``result_backend``: on Redis,
    ``pdftasks.brokers.redis_results.RedisBackend`` (Celery's backend, which batch submits
    can tell not to follow results; see the module)."""
    url = s.effective_result_backend
    if url.startswith(("redis://", "rediss://")):
        return f"pdftasks.brokers.redis_results.RedisBackend+{url}"
    return url


def _results_can_hide_secrets() -> bool:
    from pdftasks.compat.celery import REQUEST_CONTEXT, supported

    return supported(REQUEST_CONTEXT)


def configure(app: Celery, s: Settings) -> None:
    """Apply ``s`` to ``app``: broker, queues, routing, limits, acknowledgements."""
    ns = s.queue_namespace
    exchange = Exchange(ns, type="direct")
    if s.is_local:
        (s.home / "results").mkdir(parents=True, exist_ok=True)
    app.conf.update(
        broker_url=s.effective_broker_url,
        result_backend=result_backend_url(s),
        broker_transport_options=broker_transport_options(s),
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(q, exchange, routing_key=q) for q in queue_names(ns)],
        task_default_queue=f"{ns}.normal",
        task_default_exchange=ns,
        task_default_routing_key=f"{ns}.normal",
        task_routes=(PriorityRouter(ns),),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Reliability: a job is acknowledged only when it ended; a worker child that dies
        # mid-render puts its job back; each process reserves at most one job.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A lost process's job is not resent by Celery from the request it kept (whose
        # kwargs hold the secret options redacted): the redelivery of its message does it.
        task_retry_on_worker_lost=False,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_soft_time_limit=celery_soft_time_limit(s),
        task_time_limit=s.hard_time_limit_s,
        worker_max_memory_per_child=s.max_memory_per_child_mb * 1024 or None,
        worker_concurrency=s.concurrency,
        task_track_started=True,
        # Task arguments in results, with the job's secrets redacted (in the pool process
        # and in the worker's main process: compat.celery.REQUEST_CONTEXT).
        result_extended=_results_can_hide_secrets(),
        result_expires=s.result_expires_s,
        # Bounded I/O on the Redis result store, as on the broker (Celery waits 120 s).
        redis_socket_timeout=10,
        redis_socket_connect_timeout=5,
        task_publish_retry_policy={
            "max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1,
        },
        # Events from the moment a job is sent: Flower and monitors see every job. Workers
        # send theirs on demand by default (PDFTASKS_TASK_EVENTS; the rest is in
        # pdftasks.contrib.monitoring.TaskEventsOnDemand): while a monitor asks for them.
        worker_send_task_events=s.task_events == "always",
        task_send_sent_event=True,
        # Bad messages (unknown task, undecodable, broken) are dead-lettered and
        # acknowledged, never requeued for ever nor allowed to stop the worker.
        worker_consumer="pdftasks.worker.guard:GuardedConsumer",
        timezone=s.timezone,
        enable_utc=True,
    )
    if s.is_sqs:
        app.conf.update(
            # pdftasks.brokers.sqs.Transport: kombu's SQS transport, queues polled urgent first.
            broker_transport="pdftasks.brokers.sqs:Transport",
            # SQS has no broadcast: no remote control, and no event stream for Flower
            # (kombu would publish them through SNS). Jobs are followed in the job store.
            worker_enable_remote_control=False,
            worker_send_task_events=False,
            task_send_sent_event=False,
        )
        # The dead-letter reaper: worker_ready/worker_shutting_down receivers connected on
        # import of pdftasks.contrib.aws (a layer above: named here, not imported).
        importlib.import_module("pdftasks.contrib.aws")


#: Plugins every app gets unless told otherwise: ``module:function(app)``, installed in
#: order. They live in ``pdftasks.contrib``, a layer above this one, so they are named here,
#: not imported.
DEFAULT_PLUGINS = (
    "pdftasks.contrib.beat:register",        # beat schedule, reports, cleanup
    "pdftasks.contrib.webhooks:install",     # signed callbacks (task + event hook)
    "pdftasks.contrib.monitoring:install",   # heartbeat bootstep, attempt logs and metrics
)


def create_app(settings: Settings | None = None,
               plugins: Sequence[str | Callable[[Celery], Any]] = DEFAULT_PLUGINS) -> Celery:
    r"""A Celery app for ``settings`` (default: the environment), with ``generate_pdf``
    registered and ``plugins`` installed (each ``fn(app)`` or a ``"module:function"`` name).

    An entry point: the only place an app's settings are read from the environment. The
    app keeps them (``app.pdftasks_settings``); its tasks, plugins and signal receivers
    take them from there (``pdftasks.worker.tasks.app_settings``).

    Not made Celery's current app (``set_as_current=False``): a host application's own app
    and its ``@shared_task``\ s keep theirs. Follow results with ``app.AsyncResult(id)`` or
    ``generate_pdf.AsyncResult(id)``. Each app has its own settings, event hooks and plugins.
    """
    from pdftasks.worker import tasks

    app = Celery("pdftasks", set_as_current=False)
    app.pdftasks_settings = settings or get_settings()
    app.pdftasks_hooks = []  # see tasks.event_hooks
    configure(app, app.pdftasks_settings)
    tasks.register(app)
    for plugin in plugins:
        if isinstance(plugin, str):
            module, _, name = plugin.partition(":")
            plugin = getattr(importlib.import_module(module), name)
        plugin(app)
    return app


_default_app: Celery | None = None
_default_lock = threading.Lock()


def get_app() -> Celery:
    """The process's default pdftasks app (settings from the environment), built on first
    use: importing pdftasks builds nothing, creates no file and contacts no broker."""
    global _default_app
    if _default_app is None:
        with _default_lock:
            if _default_app is None:
                _default_app = create_app()
    return _default_app


def is_pdftasks_app(app: object) -> bool:
    """Whether ``app`` is a Celery app made by ``create_app`` (signal receivers use it to
    leave other apps in the same process alone)."""
    return getattr(app, "pdftasks_settings", None) is not None


def __getattr__(name: str) -> Any:
    # ``pdftasks.celery_app.app`` (and ``celery -A pdftasks``): the default app, lazily.
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
