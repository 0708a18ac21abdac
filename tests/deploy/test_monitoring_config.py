"""The Prometheus configuration, alert rules and Grafana dashboard under deploy/ parse, and
every metric they query is one that the exporter (or Flower) really exposes."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import yaml

from pdftasks.celery_app import create_app
from pdftasks.contrib.monitoring import metrics_registry
from pdftasks.settings import Settings
from tests.conftest import free_port
from tests.deploy.manifests import DEPLOY, compose, find, rendered

_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def exported_names() -> set[str]:
    """Sample names the exporter exposes (read without Redis: every family still appears)."""
    app = create_app(Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0"))
    names = set()
    for family in metrics_registry(app).collect():
        names.add(family.name)
        names |= {family.name + suffix for suffix in _SUFFIXES}
    return names


def flower_names() -> set[str]:
    """Flower's metric names, from the metrics object Flower itself creates."""
    from flower.events import get_prometheus_metrics

    names = set()
    for metric in vars(get_prometheus_metrics()).values():
        for family in metric.describe():
            names.add(family.name)
            names |= {family.name + suffix for suffix in _SUFFIXES}
    return names


def selectors(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (the parser raises on bad syntax)."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)
        for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if isinstance(child, promql_parser.Expr):
                visit(child)
        for child in getattr(node, "args", None) or []:
            visit(child)

    visit(promql_parser.parse(expr))
    return found


def grafana_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "pdftasks.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # Grafana's own macro, replaced before the query reaches Prometheus.
    return [e.replace("$__rate_interval", "5m") for e in exprs]


def test_selector_walk_finds_nested_metrics() -> None:
    expr = 'histogram_quantile(0.9, sum by (le) (rate(a_bucket[5m]))) / sum(b) > c'
    assert selectors(expr) == {"a_bucket", "b", "c"}


def test_exporter_families() -> None:
    names = exported_names()
    assert {"pdftasks_queue_depth", "pdftasks_jobs", "pdftasks_jobs_finished_total",
            "pdftasks_job_retries_total", "pdftasks_render_duration_seconds_bucket",
            "pdftasks_up"} <= names


def test_dashboard_queries_parse_and_use_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "pdftasks.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "pdftasks"
    known = exported_names() | flower_names()
    used: set[str] = set()
    for expr in grafana_exprs():
        used |= selectors(expr)
    assert used and used <= known, used - known
    assert {"pdftasks_queue_depth", "pdftasks_jobs_finished_total",
            "pdftasks_job_retries_total", "pdftasks_render_duration_seconds_bucket"} <= used


def test_alert_rules_parse_and_use_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    known = exported_names() | {"up"}
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert exprs
    for expr in exprs:
        assert selectors(expr) <= known, expr


def test_prometheus_scrapes_the_compose_services() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in config["scrape_configs"]}
    services = compose()["services"]
    for job, (service, port) in {"pdftasks": ("metrics", 9808),
                                 "flower": ("flower", 5555)}.items():
        assert targets[job] == [f"{service}:{port}"]
        assert any(p.endswith(f":{port}") for p in services[service]["ports"])
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]


def test_pods_prometheus_finds_in_the_cluster_announce_their_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-k8s.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["pdftasks"]
    objects = rendered("keda")
    for name, port in (("pdftasks-metrics", 9808), ("pdftasks-flower", 5555)):
        template = find(objects, "Deployment", name)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        ports = [p["containerPort"] for p in template["spec"]["containers"][0]["ports"]]
        assert ports == [port]


def test_grafana_provisioning_matches_compose_mounts() -> None:
    grafana = compose()["services"]["grafana"]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    url = datasource["datasources"][0]["url"]
    assert re.fullmatch(r"http://prometheus:9090", url)
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/pdftasks.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]
