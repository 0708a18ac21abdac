"""Prometheus metrics of the HTTP API (:class:`ApiMetrics`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pdftasks.models import JobPriority

if TYPE_CHECKING:
    from pdftasks.api.state import ApiState


class ApiMetrics:
    """Prometheus metrics of the API: the queue's own metrics (``pdftasks.contrib.monitoring``:
    job records per status and priority, completed and failed jobs per priority, queue
    depth per priority; exact for all processes and workers, read from Redis at each
    scrape), jobs submitted through the API per priority (Redis counters), workers
    answering, and the request latency of this process (aggregated across
    ``pdftasks api --workers N`` through prometheus_client's multiprocess mode)."""

    def __init__(self, state: ApiState) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        from pdftasks.contrib.monitoring import PdfTasksCollector

        self.state = state
        self.queue = PdfTasksCollector(state.manager.app)
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "pdftasks_api_request_duration_seconds", "HTTP API request latency",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=None if self.multiprocess else self.registry)
        self.registry.register(self)

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = self.state
        yield from self.queue.collect()  # says pdftasks_up 0 when Redis does not answer
        try:
            raw = state.redis.hgetall(f"{state.ns}:submitted")
        except Exception:
            return
        submitted = CounterMetricFamily("pdftasks_api_jobs_submitted",
                                        "Jobs submitted through the HTTP API",
                                        labels=["priority"])
        for prio in JobPriority:
            submitted.add_metric([prio.label], int(raw.get(prio.label, 0)))
        yield submitted
        yield GaugeMetricFamily("pdftasks_workers", "Worker processes answering on the broker",
                                value=state.manager.worker_count())

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(self)
        return generate_latest(registry), CONTENT_TYPE_LATEST
