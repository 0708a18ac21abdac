"""Unit tests (no services): priorities, routing, settings."""

from __future__ import annotations

import pytest

from pdftasks import JobPriority, errors
from pdftasks.celery_app import GENERATE_PDF, PriorityRouter, queue_names
from pdftasks.settings import Settings


@pytest.mark.parametrize("value,expected", [
    ("urgent", JobPriority.URGENT), ("HIGH", JobPriority.HIGH), (2, JobPriority.NORMAL),
    (JobPriority.LOW, JobPriority.LOW), (" low ", JobPriority.LOW),
])
def test_priority_parse(value, expected) -> None:
    assert JobPriority.parse(value) is expected


@pytest.mark.parametrize("value", ["asap", 7, -1, None, True, 1.5])
def test_unknown_priority_is_a_typed_error(value) -> None:
    with pytest.raises(errors.InvalidPriorityError, match="unknown priority"):
        JobPriority.parse(value)


def test_queues_are_in_strict_order() -> None:
    assert queue_names("pdf") == ["pdf.urgent", "pdf.high", "pdf.normal", "pdf.low"]


@pytest.mark.parametrize("args,kwargs,queue", [
    ((), {"priority": "urgent"}, "pdf.urgent"),
    (("t", {}, "o.pdf", "high"), {}, "pdf.high"),
    ((), {}, "pdf.normal"),
    (None, None, "pdf.normal"),
    ((), {"priority": JobPriority.LOW}, "pdf.low"),
])
def test_router_follows_the_priority_argument(args, kwargs, queue) -> None:
    route = PriorityRouter("pdf")
    assert route(GENERATE_PDF, args, kwargs, {}) == {"queue": queue}
    assert route("other.task", args, kwargs, {}) is None
    assert PriorityRouter("acme")(GENERATE_PDF, args, kwargs, {}) == {
        "queue": queue.replace("pdf.", "acme.")}


def test_settings_refuse_a_visibility_timeout_shorter_than_a_render() -> None:
    with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT"):
        Settings(hard_time_limit_s=700, soft_time_limit_s=600, visibility_timeout_s=600)


def test_settings_default_to_local_files(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PDFTASKS_BROKER_URL", raising=False)
    s = Settings(home=tmp_path)
    assert s.is_local and s.effective_broker_url == "filesystem://"
    assert s.effective_result_backend == f"file://{tmp_path}/results"
    redis = Settings(broker_url="redis://h:6379/3")
    assert redis.effective_result_backend == "redis://h:6379/3"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0"])
def test_a_redis_broker_uses_the_transport_that_puts_back_in_flight_messages(url) -> None:
    from celery import signals

    from pdftasks.brokers.redis import Transport
    from pdftasks.celery_app import create_app

    class Worker:  # what Celery sends with worker_init: the worker, which has an app
        pass

    app = create_app(Settings(broker_url=url, result_backend="redis://127.0.0.1:1/1"))
    # Installed when a pdftasks worker starts (never on import or in a client)
    worker = Worker()
    worker.app = app
    signals.worker_init.send(sender=worker)
    connection = app.connection_for_write()
    # kombu's Redis transport with pdftasks' fix, and the URL keeps its scheme (Flower
    # picks its broker client by it)
    assert connection.get_transport_cls() is Transport
    assert connection.as_uri().startswith(url.split("://")[0] + "://")


def test_task_sent_events_dispatcher(caplog) -> None:
    from pdftasks.celery_app import create_app
    from pdftasks.contrib import monitoring

    # A pdftasks app's dispatcher decides on task-sent events (on demand by default)
    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0"))
    assert isinstance(app.events.Dispatcher(enabled=False), monitoring.OnDemandSentEvents)
    assert app.conf.task_send_sent_event is True
    # An app whose events were made before the plugin: left alone, and said so
    early = create_app(Settings(broker_url="redis://127.0.0.1:1/0"), plugins=())
    assert not isinstance(early.events, monitoring.Events)
    monitoring.install(early)
    assert not isinstance(early.events, monitoring.Events)
    assert any("task-sent events are sent for every job" in r.getMessage()
               for r in caplog.records)

