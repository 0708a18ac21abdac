"""Operations: worker heartbeat file, task events on demand, JSON logs, Prometheus metrics.

``install(app)`` (called by ``create_app``) adds four things to every pdftasks app:

- **Heartbeat**: a worker bootstep that rewrites ``PDFTASKS_HEARTBEAT_FILE`` every
  ``PDFTASKS_HEARTBEAT_INTERVAL_S`` from the worker's own timer (the event loop of the main
  process). A worker whose main loop is stuck, or which is stopped, stops beating; container
  probes compare the file's age with a threshold. The file holds a JSON document saying
  whether the worker is consuming (connected and ready), which the readiness probe reads.
- **Task events on demand** (``PDFTASKS_TASK_EVENTS=on-demand``, the default): Celery's
  task events only while a monitor such as Flower asks for them (``TaskEventsOnDemand``),
  and task-sent events only while something listens to the event stream
  (``OnDemandSentEvents``, the app's event dispatcher).
- **JSON logs** (``PDFTASKS_LOG_FORMAT=json``): every log line is one JSON object; each job
  that ends an attempt logs one line with ``job_id``, ``priority``, ``template``,
  ``duration_s`` and ``outcome``.
- **Worker-side observations** for Prometheus: the worker that moves a job to completed,
  failed or retrying adds to a few counters in one Redis hash (``{namespace}:metrics``) of
  the job store. ``pdftasks metrics`` (``PdfTasksCollector``) reads them at scrape time along
  with queue depth (the priority lists) and job counts per status and priority.

A little over 500 lines because the three share one install hook and one set of names (the
metric names are read by the Grafana dashboard and the alert rules in ``deploy/``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery, bootsteps, signals
from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher

from pdftasks.celery_app import is_pdftasks_app

if TYPE_CHECKING:
    from pdftasks.settings import Settings

log = logging.getLogger(__name__)

#: Liveness: a heartbeat older than this (s) means the worker's main loop is stuck or stopped.
HEARTBEAT_LIVENESS_MAX_AGE_S = 60.0
#: Readiness: the heartbeat must be this recent (s) and say the worker is consuming.
HEARTBEAT_READINESS_MAX_AGE_S = 30.0

#: Upper bounds (s) of the render duration histogram's buckets (+Inf is added).
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 90.0)

#: Job events that end an attempt, and the outcome label each is counted under.
_OUTCOMES = {"completed": "completed", "failed": "failed", "retrying": "retrying"}

#: kombu's Redis transport defaults: a queue is one list per priority step.
KOMBU_DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
KOMBU_DEFAULT_SEP = "\x06\x16"


# Heartbeat.


def write_heartbeat(path: Path, document: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically with ``document`` as JSON (a new mtime every time)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, separators=(",", ":")))
    os.replace(tmp, path)


def read_heartbeat(path: Path) -> tuple[float, dict[str, Any]]:
    """(age in seconds from the file's mtime, its JSON document). Raises OSError if absent."""
    age = time.time() - path.stat().st_mtime
    try:
        document = json.loads(path.read_text())
    except ValueError:
        document = {}
    return age, document


class Heartbeat(bootsteps.StartStopStep):
    """Worker bootstep: rewrite the heartbeat file every interval from the worker's timer.

    The timer is the one the worker's event loop fires (no thread of our own), so the file
    only stays fresh while the main process really runs its loop: SIGSTOP, a deadlock or a
    broker reconnect loop all make it go stale. It is removed when the worker stops.
    """

    label = "pdftasks-heartbeat"
    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        from pdftasks.worker.tasks import app_settings

        s = app_settings(worker.app)
        self.path: Path | None = s.heartbeat_file
        self.interval = s.heartbeat_interval_s
        self.worker: Any = None
        self.tref: Any = None
        super().__init__(worker, **kwargs)

    def include_if(self, worker: Any) -> bool:
        return self.path is not None

    def create(self, worker: Any) -> Heartbeat:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A file left by a previous container (emptyDir survives restarts) must not make a
        # worker that has not started yet look alive.
        self.path.unlink(missing_ok=True)
        worker.pdftasks_heartbeat = self
        return self

    def start(self, worker: Any) -> None:
        self.worker = worker
        self.beat()
        self.tref = worker.timer.call_repeatedly(self.interval, self.beat, priority=10)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def consuming(self) -> bool:
        consumer = getattr(self.worker, "consumer", None)
        blueprint = getattr(consumer, "blueprint", None)
        return bool(blueprint is not None and blueprint.state == bootsteps.RUN
                    and getattr(consumer, "task_consumer", None) is not None)

    def beat(self) -> None:
        assert self.path is not None
        try:
            write_heartbeat(self.path, {
                "ts": time.time(), "pid": os.getpid(),
                "hostname": getattr(self.worker, "hostname", None),
                "consuming": self.consuming(),
            })
        except OSError:
            log.exception("cannot write the heartbeat file %s", self.path)


@signals.worker_ready.connect
def _ready_heartbeat(sender: Any = None, **_: Any) -> None:
    # Beat as soon as the consumer is ready, so readiness does not wait one interval.
    if not is_pdftasks_app(getattr(sender, "app", None)):
        return
    step = getattr(getattr(sender, "controller", None), "pdftasks_heartbeat", None)
    if step is not None:
        step.beat()


# Task events on demand.

#: ``PDFTASKS_TASK_EVENTS=on-demand``: how long a monitor's ``enable_events`` keeps task
#: events on, and how long a new worker sends them before any monitor asked, in seconds.
#: Flower asks every 5 s: three of its requests may be lost before events stop.
TASK_EVENTS_LEASE_S = 15.0
#: How often a worker checks whether the lease ran out, in seconds.
TASK_EVENTS_CHECK_S = 1.0


def _enable_events(state: Any) -> dict[str, str]:
    """Celery's ``enable_events`` remote control command (what Flower sends every 5 s),
    plus: it renews the task events lease of a pdftasks worker (``TaskEventsOnDemand``)."""
    consumer = state.consumer
    lease = getattr(consumer, "pdftasks_task_events", None)
    if lease is not None:
        lease.renew()
    dispatcher = consumer.event_dispatcher
    if dispatcher is None:
        return {"error": "event dispatcher unavailable"}
    if dispatcher.groups and "task" not in dispatcher.groups:
        dispatcher.groups.add("task")
        log.info("Events of group {task} enabled by remote.")
        return {"ok": "task events enabled"}
    return {"ok": "task events already enabled"}


class TaskEventsOnDemand(bootsteps.StartStopStep):
    """Consumer bootstep (``PDFTASKS_TASK_EVENTS=on-demand``): task events only while a
    monitor wants them.

    Celery sends a task-received, task-started and task-succeeded event per job from the
    worker's main process, between two jobs of a pool process, whether anyone listens or
    not. Monitors that show jobs (Flower) ask workers to send them with the
    ``enable_events`` remote control command, Flower every 5 s. Here a worker starts with
    task events on for ``TASK_EVENTS_LEASE_S`` (a monitor already running asks within that
    time), each ``enable_events`` renews that lease, and when it runs out the worker's
    timer turns task events off again. Worker events (heartbeats) are left alone.
    """

    label = "pdftasks-task-events"
    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.consumer: Any = None
        self.until = 0.0
        self.tref: Any = None
        super().__init__(c, **kwargs)

    def include_if(self, c: Any) -> bool:
        from pdftasks.worker.tasks import app_settings

        return bool(app_settings(c.app).task_events == "on-demand"
                    and c.app.conf.worker_enable_remote_control and c.timer is not None)

    def start(self, c: Any) -> None:
        from celery.worker.control import control_command

        # Registered when a pdftasks worker starts (the registry is Celery's, per process):
        # the same command for every app, with the lease renewal for ours.
        control_command(name="enable_events")(_enable_events)
        self.consumer = c
        c.pdftasks_task_events = self
        self.renew()
        self._set(True)
        self.tref = c.timer.call_repeatedly(TASK_EVENTS_CHECK_S, self.check, priority=10)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def renew(self) -> None:
        self.until = time.monotonic() + TASK_EVENTS_LEASE_S

    def check(self) -> None:
        if time.monotonic() > self.until and self._set(False):
            log.info("task events off: no monitor asked for them in the last %g s "
                     "(PDFTASKS_TASK_EVENTS=on-demand)", TASK_EVENTS_LEASE_S)

    def _set(self, on: bool) -> bool:
        """Task events on or off; True if that changed anything."""
        dispatcher = getattr(self.consumer, "event_dispatcher", None)
        groups = getattr(dispatcher, "groups", None)
        if not groups or on == ("task" in groups):
            return False
        groups.add("task") if on else groups.discard("task")
        return True


# Task-sent events on demand.

#: ``PDFTASKS_TASK_EVENTS=on-demand``: how long a submitting process goes by what it last
#: learnt of the event stream's listeners before asking Redis again, in seconds. A monitor
#: that starts listening gets the task-sent events of every job submitted after that.
SENT_EVENTS_PROBE_S = 1.0


class _Listeners:
    """What this process last learnt of one Redis event stream: any listener, and until
    when that holds (``time.monotonic``)."""

    __slots__ = ("any", "until")

    def __init__(self) -> None:
        self.any, self.until = True, 0.0


#: Per broker (URL without password) and event exchange, in this process.
_listeners: dict[tuple[str, str], _Listeners] = {}


def sent_events_wanted(producer: Any, exchange: str) -> bool:
    """Whether a task-sent event published with ``producer`` would reach anyone: asked of
    Redis at most every ``SENT_EVENTS_PROBE_S`` per broker (one ``PUBLISH`` of an empty
    message, ``compat.kombu.fanout_listeners``). True where that cannot be told (another
    broker, an untested kombu, an error: the publish itself then reports it)."""
    from kombu.transport import redis as kombu_redis

    from pdftasks.compat import kombu as compat_kombu

    if not compat_kombu.supported(compat_kombu.REDIS_EVENT_PROBE):
        return True
    try:
        channel = producer.channel
        if not isinstance(channel, kombu_redis.Channel):
            return True
        key = (channel.connection.client.as_uri(), exchange)
    except Exception:  # never in the way of a publish
        return True
    state = _listeners.get(key) or _listeners.setdefault(key, _Listeners())
    now = time.monotonic()
    if now >= state.until:
        try:
            state.any = compat_kombu.fanout_listeners(channel, exchange, "task.sent") > 0
        except Exception:
            state.any = True
        state.until = now + SENT_EVENTS_PROBE_S
    return state.any


class OnDemandSentEvents(EventDispatcher):
    """Celery's event dispatcher, except that with ``PDFTASKS_TASK_EVENTS=on-demand`` a
    pdftasks app's task-sent events are published only while something listens to the
    event stream (Flower, ``celery events``): on Redis, Celery serializes and publishes
    one per job submitted whether anyone listens or not (a quarter of what
    ``submit_batch`` costs per job). Other events are Celery's."""

    def publish(self, type: str, fields: Any, producer: Any, *args: Any, **kwargs: Any
                ) -> Any:
        if type == "task-sent" and producer is not None and _sent_on_demand(self.app) \
                and not sent_events_wanted(producer, self.exchange.name):
            return None
        return super().publish(type, fields, producer, *args, **kwargs)


def _sent_on_demand(app: Any) -> bool:
    from pdftasks.worker.tasks import app_settings

    return is_pdftasks_app(app) and app_settings(app).task_events == "on-demand"


class Events(CeleryEvents):
    """``app.events`` of a pdftasks app: Celery's, with ``OnDemandSentEvents``."""

    dispatcher_cls = OnDemandSentEvents


# JSON logs.

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job id, and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        from pdftasks.compat.celery import get_current_task

        task = get_current_task()
        if task is not None and task.request.id:
            doc["job_id"] = task.request.id
            doc["task"] = task.name
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def _json_logs_wanted(app: Any) -> bool:
    """JSON logs by ``app``'s settings (``PDFTASKS_LOG_FORMAT``)."""
    from pdftasks.worker.tasks import app_settings

    return app_settings(app).log_format == "json"


def _current_pdftasks_app() -> Any:
    """The current Celery app if it is a pdftasks app (a worker's), else None: Celery sets
    up logging and runs tasks for the worker's app, which it made current."""
    from celery.app import app_or_default

    app = app_or_default(None)  # the current app itself, not Celery's proxy of it
    return app if is_pdftasks_app(app) else None


def use_json_format(logger: logging.Logger) -> None:
    """Give every handler of ``logger`` the JSON formatter."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def configure_logging(settings: Settings, level: str | int | None = None) -> None:
    """Logging for pdftasks processes that Celery does not set up (exporter, API), by the
    caller's ``settings``: text or JSON by ``log_format``, at ``level`` (default
    ``log_level``)."""
    logging.basicConfig(level=level or settings.log_level,
                        format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    if settings.log_format == "json":
        use_json_format(logging.getLogger())


@signals.after_setup_logger.connect
def _json_root_logger(logger: logging.Logger, **_: Any) -> None:
    app = _current_pdftasks_app()
    if app is not None and _json_logs_wanted(app):
        use_json_format(logger)


@signals.after_setup_task_logger.connect
def _json_task_logger(logger: logging.Logger, **_: Any) -> None:
    app = _current_pdftasks_app()
    if app is not None and _json_logs_wanted(app):
        use_json_format(logger)


# Job events: one log line and the worker-side metrics per finished attempt.

_started: dict[str, float] = {}


@signals.task_prerun.connect
def _attempt_started(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    if task_id and is_pdftasks_app(getattr(sender, "app", None)):
        _started[task_id] = time.monotonic()


@signals.task_postrun.connect
def _attempt_ended(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started.pop(task_id, None)


def _attempt_facts(app: Celery, job_id: str) -> tuple[str | None, str | None, float | None]:
    """(priority label, template, duration s) of the attempt that just ended."""
    from pdftasks.compat.celery import get_current_task
    from pdftasks.models import JobPriority
    from pdftasks.worker.tasks import job_store

    task = get_current_task()
    if task is not None and task.request.id == job_id:
        kwargs = task.request.kwargs or {}
        started = _started.get(job_id)
        priority = kwargs.get("priority")
        return (JobPriority.parse(priority).label if priority is not None else None,
                kwargs.get("template"),
                time.monotonic() - started if started is not None else None)
    # Outside the task (the main process records a hard time limit): ask the job store.
    job = job_store(app).get(job_id)
    if job is None:
        return None, None, None
    duration = None
    if job.started_at is not None:
        duration = (dt.datetime.now(dt.UTC) - job.started_at).total_seconds()
    return job.priority.label, job.template, duration


def redis_of(store: Any) -> Any:
    """The Redis client of a Redis job store; None for other stores (no worker counters)."""
    from pdftasks.stores import RedisJobStore

    return store.client if isinstance(store, RedisJobStore) else None


def metrics_key(namespace: str) -> str:
    """The Redis hash holding the worker-side counters of ``namespace``."""
    return f"{namespace}:metrics"


def bucket_for(seconds: float) -> str:
    """The histogram bucket (upper bound) ``seconds`` falls in, as a label string."""
    for bound in DURATION_BUCKETS_S:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


def attempt_counters(namespace: str, outcome: str, priority: str, duration_s: float | None
                     ) -> list[tuple[str, str, float]]:
    """The counters one ended attempt adds to: (hash key, field, amount)."""
    key = metrics_key(namespace)
    out: list[tuple[str, str, float]] = [
        (key, f"retries|{priority}", 1) if outcome == "retrying"
        else (key, f"finished|{outcome}|{priority}", 1)]
    if duration_s is not None:
        out += [(key, f"duration_bucket|{priority}|{outcome}|{bucket_for(duration_s)}", 1),
                (key, f"duration_sum|{priority}|{outcome}", float(duration_s))]
    return out


def record_attempt(client: Any, namespace: str, outcome: str, priority: str,
                   duration_s: float | None) -> None:
    """Add one ended attempt to the counters in Redis (one pipelined round trip)."""
    pipe = client.pipeline(transaction=False)
    for key, name, amount in attempt_counters(namespace, outcome, priority, duration_s):
        if isinstance(amount, float):
            pipe.hincrbyfloat(key, name, amount)
        else:
            pipe.hincrby(key, name, amount)
    pipe.execute()


def counters_with_transition(app: Celery, event: str, job_id: str
                             ) -> list[tuple[str, str, float]]:
    """Counter hook (``pdftasks.worker.tasks.counter_hooks``): the counters of the attempt
    that ends with this transition, made by the job store along with it."""
    outcome = _OUTCOMES.get(event)
    if outcome is None:
        return []
    from pdftasks.worker.tasks import app_settings, job_store

    if redis_of(job_store(app)) is None:
        return []
    priority, _, duration = _attempt_facts(app, job_id)
    if priority is None:
        return []
    return attempt_counters(app_settings(app).queue_namespace, outcome, priority, duration)


def on_job_event(app: Celery, event: str, job_id: str, error: str | None) -> None:
    """Job event hook (``pdftasks.worker.tasks.event_hooks``): log the attempt and count it."""
    outcome = _OUTCOMES.get(event)
    if outcome is None:
        return
    from pdftasks.worker.tasks import app_settings, job_store

    priority, template, duration = _attempt_facts(app, job_id)
    fields = {"job_id": job_id, "priority": priority, "template": template,
              "duration_s": None if duration is None else round(duration, 4),
              "outcome": outcome, "error": error}
    level = logging.INFO if outcome == "completed" else logging.WARNING
    took = "" if duration is None else f" in {duration:.3f} s"
    log.log(level, "job %s %s%s (priority %s, template %s)%s", job_id, outcome, took,
            priority, template, f": {error}" if error else "", extra=fields)
    client = redis_of(job_store(app))
    if client is None or priority is None:
        return  # worker-side counters need the Redis job store
    from pdftasks.worker.tasks import counted_with_transition

    if counted_with_transition(job_id):
        return  # counted by the job store with the transition (counters_with_transition)
    try:
        record_attempt(client, app_settings(app).queue_namespace, outcome, priority, duration)
    except Exception:
        log.warning("could not record metrics for job %s", job_id, exc_info=True)


def install(app: Any) -> None:
    """Add monitoring to ``app``: heartbeat bootstep, job event hook (logs and metrics)."""
    from pdftasks.worker.tasks import event_hooks

    app.steps["worker"].add(Heartbeat)
    app.steps["consumer"].add(TaskEventsOnDemand)
    if "events" not in vars(app):  # not made yet (Celery makes it on first use)
        app.events_cls = Events
    elif app.conf.task_send_sent_event and _sent_on_demand(app) \
            and not isinstance(app.events, Events):
        log.warning("app.events was made before pdftasks' monitoring was installed: "
                    "task-sent events are sent for every job (PDFTASKS_TASK_EVENTS=always)")
    if on_job_event not in event_hooks(app):
        event_hooks(app).append(on_job_event)
    from pdftasks.worker.tasks import counter_hooks

    if counters_with_transition not in counter_hooks(app):
        counter_hooks(app).append(counters_with_transition)


# Prometheus.


def redis_list_names(queue: str, transport_options: Mapping[str, Any]) -> list[str]:
    """The Redis lists kombu keeps ``queue`` in, as kombu's Redis transport names them.

    One list per priority step: ``queue`` for step 0, ``queue + sep + step`` for the others,
    all under ``global_keyprefix``. With pdftasks' ``priority_steps=[0]`` this is
    ``[queue]``: the list named exactly like the queue.
    """
    steps = transport_options.get("priority_steps", KOMBU_DEFAULT_PRIORITY_STEPS)
    sep = transport_options.get("sep", KOMBU_DEFAULT_SEP)
    prefix = transport_options.get("global_keyprefix", "") or ""
    return [prefix + (f"{queue}{sep}{step}" if step else queue) for step in steps]


def queue_depths(app: Celery, redis_client: Any = None) -> dict[str, int]:
    """Jobs waiting in each priority queue, most urgent first.

    A job a worker has reserved is no longer in its list (late acks and a prefetch
    multiplier of 1: at most one reserved job per worker process), so this counts jobs
    that no worker has taken yet: the number KEDA scales on.
    """
    from pdftasks.celery_app import queue_names
    from pdftasks.worker.tasks import app_settings

    names = queue_names(app_settings(app).queue_namespace)
    options = app.conf.broker_transport_options or {}
    if redis_client is not None:
        pipe = redis_client.pipeline(transaction=False)
        lists = [redis_list_names(name, options) for name in names]
        for group in lists:
            for key in group:
                pipe.llen(key)
        replies = iter(pipe.execute())
        return {name: sum(int(next(replies)) for _ in group) for name, group in
                zip(names, lists, strict=True)}
    out = {}
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for name in names:
            try:
                out[name] = int(channel.queue_declare(name, passive=True).message_count)
            except conn.channel_errors:
                out[name] = 0  # not declared yet: nothing was ever sent to it
    return out


def _split(field: str) -> list[str]:
    return field.split("|")


class PdfTasksCollector:
    """Prometheus collector: read at each scrape, nothing cached between scrapes.

    - ``pdftasks_queue_depth{queue,priority}``: jobs waiting in each priority queue.
    - ``pdftasks_jobs{status,priority}``: job records per status (within the retention).
    - ``pdftasks_jobs_finished_total{outcome,priority}``: jobs that completed or failed.
    - ``pdftasks_job_retries_total{priority}``: attempts that failed and were retried.
    - ``pdftasks_render_duration_seconds{priority,outcome}``: histogram of attempts.
    - ``pdftasks_up``: 1 when the broker and the job store answered this scrape.
    """

    def __init__(self, app: Celery) -> None:
        from pdftasks.worker.tasks import app_settings

        self.app = app
        self.settings = app_settings(app)
        self._lock = threading.Lock()
        self._store: Any = None
        self._broker_redis: Any = None

    def _clients(self) -> tuple[Any, Any]:
        from pdftasks.stores import open_store

        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings)
            url = self.settings.effective_broker_url
            if self._broker_redis is None and url.startswith(("redis://", "rediss://")):
                import redis

                self._broker_redis = redis.Redis.from_url(url, socket_timeout=5,
                                                          socket_connect_timeout=5)
            return self._store, self._broker_redis

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        from pdftasks.models import JobPriority

        up = 1
        priorities = [p.label for p in JobPriority]
        try:
            store, broker_redis = self._clients()
            depths = queue_depths(self.app, broker_redis)
            counts = store.counts()
            client = redis_of(store)
            raw = client.hgetall(metrics_key(self.settings.queue_namespace)) if client else {}
        except Exception as exc:  # a scrape must answer; pdftasks_up says what happened
            log.warning("cannot read the queues and job store: %s", exc)
            up, depths, counts, raw = 0, {}, {}, {}

        depth = GaugeMetricFamily(
            "pdftasks_queue_depth",
            "Jobs waiting in a priority queue, not yet reserved by any worker.",
            labels=["queue", "priority"])
        for name, value in depths.items():
            depth.add_metric([name, name.rsplit(".", 1)[-1]], value)
        yield depth

        jobs = GaugeMetricFamily(
            "pdftasks_jobs", "Job records by status and priority (kept for the retention).",
            labels=["status", "priority"])
        for status, by_priority in counts.items():
            for priority, value in by_priority.items():
                jobs.add_metric([status.value, priority.label], value)
        yield jobs

        finished = CounterMetricFamily(
            "pdftasks_jobs_finished", "Jobs that reached a final status, by outcome.",
            labels=["outcome", "priority"])
        retries = CounterMetricFamily(
            "pdftasks_job_retries", "Attempts that failed and were retried.",
            labels=["priority"])
        # Every series exists from the first scrape (at 0), so rate() and increase() see
        # the first job too. Not when Redis did not answer: counters that fell to 0 would
        # look like a reset, and the next scrape like a burst of jobs.
        series = priorities if up else []
        finished_by: dict[tuple[str, str], float] = {
            (o, p): 0.0 for o in ("completed", "failed") for p in series}
        retries_by = dict.fromkeys(series, 0.0)
        buckets: dict[tuple[str, str], dict[str, int]] = {
            (p, o): {} for p in series for o in _OUTCOMES.values()}
        sums: dict[tuple[str, str], float] = {}
        for field, value in raw.items():
            parts = _split(field)
            if parts[0] == "finished" and len(parts) == 3 and parts[2] in priorities:
                finished_by[(parts[1], parts[2])] = float(value)
            elif parts[0] == "retries" and len(parts) == 2 and parts[1] in priorities:
                retries_by[parts[1]] = float(value)
            elif parts[0] == "duration_bucket" and len(parts) == 4:
                buckets.setdefault((parts[1], parts[2]), {})[parts[3]] = int(value)
            elif parts[0] == "duration_sum" and len(parts) == 3:
                sums[(parts[1], parts[2])] = float(value)
        for (outcome, priority), total in finished_by.items():
            finished.add_metric([outcome, priority], total)
        for priority, total in retries_by.items():
            retries.add_metric([priority], total)
        yield finished
        yield retries

        histogram = HistogramMetricFamily(
            "pdftasks_render_duration_seconds",
            "Duration of job attempts in the worker (render and bookkeeping), by outcome.",
            labels=["priority", "outcome"])
        for key in sorted(buckets):
            counts_by_le = buckets[key]
            cumulative, cumulated = 0, []
            for bound in (*DURATION_BUCKETS_S, math.inf):
                label = "+Inf" if bound == math.inf else repr(bound)
                cumulative += counts_by_le.get(label, 0)
                cumulated.append((label, cumulative))
            histogram.add_metric(list(key), cumulated, sums.get(key, 0.0))
        yield histogram

        yield GaugeMetricFamily(
            "pdftasks_up", "1 if the broker and the job store answered this scrape.", value=up)


def metrics_registry(app: Celery) -> Any:
    """A registry with ``PdfTasksCollector`` for ``app`` (serve it with prometheus_client)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PdfTasksCollector(app))
    return registry

