"""`pdftasks metrics` against real Redis and workers: queue depth per priority, jobs by
status and priority, finished jobs, retries and the render duration histogram, scraped over
HTTP and parsed as Prometheus text; and the JSON log line of each job attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pdftasks import generate_pdf
from pdftasks.contrib.monitoring import DURATION_BUCKETS_S
from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, free_port, wait_for
from tests.deploy.test_monitoring_config import grafana_exprs, selectors

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]




class Exporter:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self._log = open(log, "wb")  # noqa: SIM115
        self.log_path = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pdftasks", "metrics", "--port", str(self.port),
             "--address", "127.0.0.1"], env=env, cwd=ROOT, stdout=self._log,
            stderr=subprocess.STDOUT)
        wait_for(self._answers, 30, f"the exporter on port {self.port}")

    def _answers(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()
        try:
            self.text()
            return True
        except OSError:
            return False

    def text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            assert r.status == 200
            return r.read().decode()

    def scrape(self) -> Samples:
        out: Samples = {}
        for family in text_string_to_metric_families(self.text()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def exporter(redis_client, tmp_path: Path) -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def start(**overrides: str) -> Exporter:
        env = dict(os.environ)
        env.update({f"PDFTASKS_{k.upper()}": str(v) for k, v in overrides.items()})
        started.append(Exporter(env, tmp_path / f"exporter{len(started)}.log"))
        return started[-1]

    yield start
    for e in started:
        e.stop()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def submit(priority: str, name: str, template: str = "invoice.html", data: Any = None,
           **kw: Any) -> str:
    return generate_pdf.delay(template=template, data=sample_invoice(1) if data is None
                              else data, output_filename=name, priority=priority, **kw).id


def test_queue_depth_and_job_counts_per_priority(exporter, redis_client) -> None:
    # Given jobs waiting with no worker: 3 urgent, 1 high, 2 low
    e = exporter()
    for priority, n in {"urgent": 3, "high": 1, "low": 2}.items():
        for i in range(n):
            submit(priority, f"{priority}{i}.pdf")
    # When Prometheus scrapes the exporter
    samples = e.scrape()
    # Then it sees each priority's backlog, the same numbers as LLEN of the Redis lists
    for priority, n in {"urgent": 3, "high": 1, "normal": 0, "low": 2}.items():
        queue = f"pdf.{priority}"
        assert value(samples, "pdftasks_queue_depth", queue=queue, priority=priority) == n
        assert redis_client.llen(queue) == n
        assert value(samples, "pdftasks_jobs", status="pending", priority=priority) == n
        assert value(samples, "pdftasks_jobs", status="completed", priority=priority) == 0
        # Counters exist from the first scrape, at zero
        assert value(samples, "pdftasks_jobs_finished_total", outcome="completed",
                     priority=priority) == 0
        assert value(samples, "pdftasks_job_retries_total", priority=priority) == 0
    assert value(samples, "pdftasks_up") == 1
    # And the exporter stops on SIGTERM
    assert e.stop() == 0


def histogram(samples: Samples, priority: str, outcome: str) -> tuple[list[float], float,
                                                                          float]:
    labels = {"priority": priority, "outcome": outcome}
    buckets = [value(samples, "pdftasks_render_duration_seconds_bucket", le=le, **labels)
               for le in [repr(b) for b in DURATION_BUCKETS_S] + ["+Inf"]]
    return (buckets, value(samples, "pdftasks_render_duration_seconds_count", **labels),
            value(samples, "pdftasks_render_duration_seconds_sum", **labels))


def job_log_lines(log: str) -> dict[str, list[dict[str, Any]]]:
    """The workers' JSON log: every line must be one JSON object; job lines by job id."""
    by_job: dict[str, list[dict[str, Any]]] = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue  # Celery's start-up banner is printed before logging is set up
        record = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= record.keys()
        if "outcome" in record:
            by_job.setdefault(record["job_id"], []).append(record)
    return by_job


def test_finished_jobs_retries_and_durations_with_json_logs(
        exporter, start_worker, tmp_path: Path) -> None:
    e = exporter()
    # Given a worker logging JSON, two urgent jobs that render and one normal job whose
    # template lacks a variable (fails at once, no retry)
    worker = start_worker(concurrency=2, log_format="json")
    ok = [submit("urgent", f"ok{i}.pdf") for i in range(2)]
    bad = submit("normal", "bad.pdf", template="strict.html", data={"invoice_number": "1"})
    # When they have run
    wait_for(lambda: value(e.scrape(), "pdftasks_jobs", status="completed",
                           priority="urgent") == 2
             and value(e.scrape(), "pdftasks_jobs", status="failed", priority="normal") == 1,
             60, "the jobs to finish")
    samples = e.scrape()
    # Then the counters say so, per outcome and priority
    assert value(samples, "pdftasks_jobs_finished_total", outcome="completed",
                 priority="urgent") == 2
    assert value(samples, "pdftasks_jobs_finished_total", outcome="failed",
                 priority="normal") == 1
    assert value(samples, "pdftasks_jobs_finished_total", outcome="completed",
                 priority="normal") == 0
    assert value(samples, "pdftasks_queue_depth", queue="pdf.urgent", priority="urgent") == 0
    # And the histogram holds two completed urgent attempts: cumulative buckets, +Inf = count
    buckets, count, total = histogram(samples, "urgent", "completed")
    assert count == 2 and buckets[-1] == 2 and total > 0
    assert buckets == sorted(buckets)
    assert histogram(samples, "normal", "failed")[1] == 1
    assert histogram(samples, "low", "completed")[1] == 0
    # And each attempt logged one JSON line with its job id, priority, template, duration
    # and outcome
    lines = wait_for(lambda: (lambda d: d if all(j in d for j in [*ok, bad]) else None)(
        job_log_lines(worker.log)), 20, "the job log lines")
    for job_id in ok:
        [record] = lines[job_id]
        assert record["priority"] == "urgent" and record["template"] == "invoice.html"
        assert record["outcome"] == "completed" and record["duration_s"] > 0
        assert record["level"] == "INFO" and record["error"] is None
    [record] = lines[bad]
    assert record["outcome"] == "failed" and record["priority"] == "normal"
    assert record["template"] == "strict.html" and "MissingVariableError" in record["error"]
    worker.stop()

    # Given a worker whose output directory cannot be created (a file is in the way)
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    worker = start_worker(concurrency=1, output_dir=blocked, retry_backoff_s=1,
                          retry_jitter="false", log_format="json")
    # When a high priority job allowed two retries runs there
    retried = submit("high", "retried.pdf", max_retries=2)
    wait_for(lambda: value(e.scrape(), "pdftasks_jobs", status="failed", priority="high")
             == 1, 60, "the retried job to fail")
    samples = e.scrape()
    # Then two retries and one final failure are counted, and three attempts were timed
    assert value(samples, "pdftasks_job_retries_total", priority="high") == 2
    assert value(samples, "pdftasks_jobs_finished_total", outcome="failed",
                 priority="high") == 1
    assert histogram(samples, "high", "retrying")[1] == 2
    assert histogram(samples, "high", "failed")[1] == 1
    outcomes = wait_for(lambda: [r["outcome"] for r in job_log_lines(worker.log).get(
        retried, [])] if len(job_log_lines(worker.log).get(retried, [])) == 3 else None,
        20, "three log lines for the retried job")
    assert outcomes == ["retrying", "retrying", "failed"]

    # And every metric the Grafana dashboard queries (except Flower's) is in this scrape
    names = {name for name, _ in samples}
    for expr in grafana_exprs():
        for metric in selectors(expr):
            assert metric.startswith("flower_") or metric in names, metric


def test_unreachable_redis_is_reported_not_an_error(exporter) -> None:
    # Given an exporter whose Redis is not there
    e = exporter(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    # Then scrapes still answer, with pdftasks_up 0 and no other series: in particular no
    # counters at 0, which Prometheus would take for a reset
    samples = e.scrape()
    assert value(samples, "pdftasks_up") == 0
    assert {name for name, _ in samples} == {"pdftasks_up"}
