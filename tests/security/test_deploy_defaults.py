"""The deployment files are secure by default (issue "Hostile callers", class 8).

docker compose: refuses to start without REDIS_PASSWORD and a Grafana admin password, Redis
requires the password, every Redis URL carries it, and Redis shares a network only with the
pdftasks processes. Kubernetes: no kustomization a reader applies ships a Secret (nor any
CHANGE-ME value), every pod refuses the example Secret's CHANGE-ME values (the pdftasks
processes through their settings, Redis through its start command), Redis requires the
password the pdftasks URLs carry, and NetworkPolicies deny ingress by default and let in
only the peers each port needs, with selectors that match real pods.

Everything runs offline: the files are parsed and rendered (`kubectl kustomize`), compose's
interpolation is reproduced, and the Redis start commands and probes run against the local
redis-server on a free port.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import ROOT, free_port
from tests.deploy.manifests import (
    COMPOSE_ENV,
    K8S,
    OVERLAYS,
    SECRET_EXAMPLES,
    MissingVariable,
    compose,
    compose_with,
    find,
    interpolate,
    render,
    rendered,
    with_example_secret,
)

PLACEHOLDER = "CHANGE-ME"
PDFTASKS_SERVICES = {"api", "worker", "beat", "flower", "metrics"}
#: Grafana is the one service with a login of its own besides Flower (checked in tests/deploy).
REQUIRED_COMPOSE_VARIABLES = {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
REDIS_SCHEMES = ("redis://", "rediss://")
#: Where the ingress controller and Prometheus run (README, "Secrets and network").
INGRESS_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"
KEDA_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "keda-operator"}}}


# --------------------------------------------------------------------------- helpers


def redis_urls(env: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (env or {}).items()
            if isinstance(v, str) and v.startswith(REDIS_SCHEMES)}


def service_networks(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks")
    if networks is None:
        return {"default"}
    return set(networks)


def workloads(objects: Any) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def pod_ports(workload: dict[str, Any]) -> dict[str, int]:
    """Container ports of a pod template, by name (unnamed ones by their number)."""
    ports = {}
    for c in workload["spec"]["template"]["spec"]["containers"]:
        for p in c.get("ports", []):
            ports[p.get("name", str(p["containerPort"]))] = p["containerPort"]
    return ports


def runs_pdftasks(workload: dict[str, Any]) -> bool:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return all(c["image"].split(":")[0].rsplit("/", 1)[-1] == "pdftasks" for c in containers)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND matchExpressions)."""
    if set(selector) - {"matchLabels", "matchExpressions"}:
        raise ValueError(f"not a label selector: {selector}")
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def container_env(objects: Any, workload: dict[str, Any], c: dict[str, Any]
                  ) -> dict[str, str]:
    """What the kubelet would give container ``c``: ConfigMaps (envFrom), literal values and
    Secret keys (secretKeyRef: a missing optional key is left out)."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            data = find(objects, "Secret", ref["name"]).get("stringData", {})
            if ref["key"] in data:
                env[item["name"]] = data[ref["key"]]
            else:
                assert ref.get("optional") is True, (workload["metadata"]["name"], ref)
    return env


def expand_k8s(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args ($$(VAR) stays literal)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def argv(objects: Any, workload: dict[str, Any], c: dict[str, Any]) -> list[str]:
    env = container_env(objects, workload, c)
    return [expand_k8s(a, env) for a in [*c.get("command", []), *c.get("args", [])]]


def with_real_secret(objects: Any, password: str) -> tuple[dict[str, Any], ...]:
    """``objects`` with the example Secret's CHANGE-ME values replaced by real ones."""
    out = []
    for o in objects:
        if o["kind"] == "Secret":
            o = yaml.safe_load(yaml.safe_dump(o).replace("CHANGE-ME-redis-password", password)
                               .replace(PLACEHOLDER, secrets.token_hex(8)))
        out.append(o)
    return tuple(out)


def rules_for(objects: Any, workload: dict[str, Any], port_name: str
              ) -> list[list[dict[str, Any]] | None]:
    """The ``from`` lists of every ingress rule that admits traffic to ``port_name`` of the
    workload's pods (None: a rule without ``from``, i.e. from anywhere)."""
    labels = pod_labels(workload)
    number = pod_ports(workload)[port_name]
    found: list[list[dict[str, Any]] | None] = []
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        spec = policy["spec"]
        if not selects(spec["podSelector"], labels) or "Ingress" not in spec["policyTypes"]:
            continue
        for rule in spec.get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (port_name, number) or (
                    isinstance(p.get("port"), int) and p.get("endPort")
                    and p["port"] <= number <= p["endPort"]) for p in ports):
                continue
            found.append(rule.get("from") or None)
    return found


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("redis-server did not start") from None
            time.sleep(0.05)


def redis_bin() -> Path:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `scripts/setup.sh --test`")
    return Path(binary)


def local_redis_wrapper(tmp_path: Path, port: int) -> dict[str, str]:
    """A PATH on which `redis-server` is the real one, moved to a free local port and a
    scratch directory (later options win), and `redis-cli` talks to that port."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    server = bindir / "redis-server"
    server.write_text(f'#!/bin/sh\nexec {redis_bin()} "$@" --port {port} --bind 127.0.0.1 '
                      f'--dir {tmp_path} --save ""\n')
    cli = bindir / "redis-cli"
    cli.write_text(f'#!/bin/sh\nexec {redis_bin().parent / "redis-cli"} -p {port} "$@"\n')
    for f in (server, cli):
        f.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def fake_redis_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose `redis-server` only records its arguments (one per line) and exits 0."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    record = tmp_path / "redis-server.argv"
    fake = bindir / "redis-server"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}, record


@contextlib.contextmanager
def start(command: list[str], env: dict[str, str], port: int
          ) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def ping(url: str, port: int) -> bool:
    """PING Redis at ``url`` redirected to the local port: True on PONG, False on NOAUTH /
    wrong password."""
    import redis

    parts = urlsplit(url)
    local = url.replace(f"@{parts.hostname}:{parts.port}", f"@127.0.0.1:{port}", 1) \
        if "@" in url else url.replace(f"//{parts.hostname}:{parts.port}",
                                       f"//127.0.0.1:{port}", 1)
    client = redis.Redis.from_url(local, socket_timeout=5)
    try:
        return client.ping() is True
    except (redis.AuthenticationError, redis.ResponseError):
        return False
    finally:
        client.close()


# --------------------------------------------------------------------------- compose


@pytest.mark.parametrize("variable", sorted(REQUIRED_COMPOSE_VARIABLES))
def test_compose_refuses_to_start_without_the_password(variable: str) -> None:
    # Given a complete .env, compose starts; without the variable, or with it empty, it
    # refuses (${VAR:?message}, not a default like ${GRAFANA_ADMIN_PASSWORD:-admin}).
    compose_with(COMPOSE_ENV)
    for env in ({k: v for k, v in COMPOSE_ENV.items() if k != variable},
                {**COMPOSE_ENV, variable: ""}):
        with pytest.raises(MissingVariable) as refused:
            compose_with(env)
        assert refused.value.name == variable
    # The message says what to set.
    text = (ROOT / "docker-compose.yml").read_text()
    assert f"${{{variable}:?" in text
    assert f"${{{variable}:-" not in text and f"${{{variable}-" not in text


def test_compose_grafana_uses_the_required_password_and_no_anonymous_access() -> None:
    grafana = compose()["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert compose_with()["services"]["grafana"]["environment"][
        "GF_SECURITY_ADMIN_PASSWORD"] == COMPOSE_ENV["GRAFANA_ADMIN_PASSWORD"]
    assert str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
    assert str(grafana.get("GF_USERS_ALLOW_SIGN_UP", "true")).lower() == "false"


def test_compose_redis_requires_the_password() -> None:
    redis = compose_with()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == COMPOSE_ENV["REDIS_PASSWORD"]
    # The raw file takes it from REDIS_PASSWORD with :? (no way to start without it).
    raw = compose()["services"]["redis"]["command"]
    assert raw[raw.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")


def test_every_compose_redis_url_carries_the_password() -> None:
    services = compose_with()["services"]
    seen = set()
    for name, service in services.items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        for key, url in redis_urls(env).items():
            assert urlsplit(url).password == COMPOSE_ENV["REDIS_PASSWORD"], (name, key)
            seen.add(name)
    # Every pdftasks process talks to Redis (broker; result backend and job store derive
    # from it), so each must have a URL, and each URL must log in.
    assert seen == PDFTASKS_SERVICES


def test_compose_redis_shares_networks_only_with_the_pdftasks_services() -> None:
    spec = compose()
    services = spec["services"]
    redis_nets = service_networks(services["redis"])
    assert "default" not in redis_nets
    neighbours = {name for name, s in services.items()
                  if name != "redis" and service_networks(s) & redis_nets}
    assert neighbours == PDFTASKS_SERVICES
    # No route out of Redis' network: nothing else can be attached to it by accident either.
    for net in redis_nets:
        assert spec["networks"][net].get("internal") is True, net
    # What monitoring needs still connects: Prometheus scrapes metrics and Flower (the
    # targets of deploy/prometheus/prometheus.yml), Grafana reads Prometheus.
    prometheus = service_networks(services["prometheus"])
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            assert prometheus & service_networks(services[target.split(":")[0]]), target
    assert service_networks(services["grafana"]) & prometheus
    # Published ports need a network with a way out.
    for name, s in services.items():
        if s.get("ports"):
            assert service_networks(s) - redis_nets, name


def test_compose_redis_and_its_health_check_really_require_the_password(
        tmp_path: Path) -> None:
    # Given Redis started with compose's own command, when a client connects without the
    # password it is refused, and every pdftasks service's URL logs in; the health check
    # says healthy only with the right REDISCLI_AUTH.
    services = compose_with()["services"]
    redis = services["redis"]
    port = free_port()
    path = local_redis_wrapper(tmp_path, port)
    env = {**os.environ, **path}
    with start(redis["command"], env, port) as proc:
        assert not ping(f"redis://redis:{port}/0", port)
        for name in PDFTASKS_SERVICES:
            assert ping(services[name]["environment"]["PDFTASKS_BROKER_URL"], port), name
        kind, health = redis["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        for auth, healthy in ((redis["environment"]["REDISCLI_AUTH"], True),
                              ("wrong-password", False), ("", False)):
            rc = subprocess.run(["sh", "-c", health], env={**env, "REDISCLI_AUTH": auth},
                                capture_output=True, timeout=30).returncode
            assert (rc == 0) is healthy, (auth, rc)
        assert proc.poll() is None


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_applied_kustomizations_ship_no_secret_and_no_placeholder(overlay: str) -> None:
    objects = rendered(overlay)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == []
    for o in objects:
        if o["kind"] == "ConfigMap":
            assert not any(PLACEHOLDER in str(v).upper() for v in o["data"].values())
        for w in workloads([o]):
            for c in w["spec"]["template"]["spec"]["containers"]:
                for item in c.get("env", []):
                    assert PLACEHOLDER not in str(item.get("value", "")).upper(), item
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert not [r for r in base["resources"] if "secret" in r.lower()]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_pod_refuses_the_example_secret(overlay: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the example Secret (CHANGE-ME values) next to the overlay, every container
    # refuses to start: the pdftasks processes through their settings (a validation error
    # before anything runs), any other container (Redis) through its own start command.
    from pydantic import ValidationError

    from pdftasks.settings import Settings

    objects = with_example_secret(overlay)
    others = 0
    for w in workloads(objects):
        for c in w["spec"]["template"]["spec"]["containers"]:
            env = container_env(objects, w, c)
            assert any(PLACEHOLDER in v.upper() for v in env.values()), \
                f"{w['metadata']['name']} reads no example secret"
            if runs_pdftasks(w):
                for key in [k for k in os.environ if k.startswith("PDFTASKS_")]:
                    monkeypatch.delenv(key)
                for key, value in env.items():
                    monkeypatch.setenv(key, value)
                with pytest.raises(ValidationError, match=PLACEHOLDER):
                    Settings()
                continue
            others += 1
            path, record = fake_redis_path(tmp_path)
            for password in (env["REDIS_PASSWORD"], "", "change-me-lowercase"):
                run_env = {**env, "REDIS_PASSWORD": password, **path}
                result = subprocess.run(argv(objects, w, c), env=run_env,
                                        capture_output=True, text=True, timeout=30)
                assert result.returncode != 0, (w["metadata"]["name"], password)
                assert not record.exists(), "redis-server started with a placeholder"
                assert "REDIS_PASSWORD" in result.stderr
    assert others == 1  # Redis


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_redis_pod_requires_the_password_the_pdftasks_urls_carry(overlay: str,
                                                                 tmp_path: Path) -> None:
    # Given a real Secret, when the Redis container's own command starts (against the local
    # redis-server), then it demands the password, every Redis URL any pdftasks container
    # gets logs in with it, and the readiness probe passes only with the password.
    password = secrets.token_hex(16)
    objects = with_real_secret(with_example_secret(overlay), password)
    redis_pod = find(objects, "StatefulSet", "pdftasks-redis")
    c = redis_pod["spec"]["template"]["spec"]["containers"][0]
    env = container_env(objects, redis_pod, c)
    port = free_port()
    path = local_redis_wrapper(tmp_path, port)
    urls = {(w["metadata"]["name"], key): url
            for w in workloads(objects) if runs_pdftasks(w)
            for pc in w["spec"]["template"]["spec"]["containers"]
            for key, url in redis_urls(container_env(objects, w, pc)).items()}
    assert {name for name, _ in urls} == {f"pdftasks-{s}" for s in PDFTASKS_SERVICES}
    with start(argv(objects, redis_pod, c), {**env, **path}, port) as proc:
        assert not ping(f"redis://pdftasks-redis:{port}/0", port)
        for where, url in urls.items():
            assert urlsplit(url).hostname == "pdftasks-redis", where
            assert ping(url, port), where
        probe = c["readinessProbe"]["exec"]["command"]
        for auth, ready in ((env["REDISCLI_AUTH"], True), ("wrong", False)):
            rc = subprocess.run(probe, env={**env, **path, "REDISCLI_AUTH": auth},
                                capture_output=True, timeout=30).returncode
            assert (rc == 0) is ready, (auth, rc)
        assert proc.poll() is None
    # KEDA logs in with the same Secret key.
    if overlay == "keda":
        auth = find(objects, "TriggerAuthentication", "pdftasks-redis-auth")["spec"]
        assert auth["secretTargetRef"][0]["key"] == "REDIS_PASSWORD"


def test_secret_examples_hold_only_placeholders() -> None:
    # The templates never carry a usable credential: each value with a secret in it is a
    # CHANGE-ME placeholder.
    for directory in set(SECRET_EXAMPLES.values()):
        [secret] = render(directory)
        data = secret["stringData"]
        assert PLACEHOLDER in data["REDIS_PASSWORD"]
        assert PLACEHOLDER in data["PDFTASKS_FLOWER_BASIC_AUTH"].split(":", 1)[1]
        for key, url in redis_urls(data).items():
            assert urlsplit(url).password == data["REDIS_PASSWORD"], key


# --------------------------------------------------------------------------- NetworkPolicy


def policies(objects: Any) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_ingress_is_denied_by_default(overlay: str) -> None:
    defaults = [p for p in policies(rendered(overlay))
                if p["spec"]["podSelector"] == {} and "Ingress" in p["spec"]["policyTypes"]]
    assert len(defaults) == 1
    assert not defaults[0]["spec"].get("ingress")  # selects every pod, admits nothing


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_networkpolicy_selectors_match_the_pods_they_target(overlay: str) -> None:
    objects = rendered(overlay)
    pods = workloads(objects)
    assert policies(objects)
    for policy in policies(objects):
        name = policy["metadata"]["name"]
        assert policy["metadata"]["namespace"] == "pdftasks"
        targets = [w for w in pods if selects(policy["spec"]["podSelector"], pod_labels(w))]
        assert targets, f"{name}: podSelector matches no pod"
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from") or []:
                # Peers in this namespace must be real pods; those in other namespaces
                # (ingress controller, Prometheus, KEDA) are checked by the tests below.
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert any(selects(peer["podSelector"], pod_labels(w)) for w in pods), \
                        f"{name}: a from.podSelector matches no pod"
            for port in rule.get("ports") or []:
                for w in targets:
                    ports = pod_ports(w)
                    assert port["port"] in ports or port["port"] in ports.values(), \
                        f"{name}: port {port['port']} is not a port of {w['metadata']['name']}"
                assert port.get("protocol", "TCP") == "TCP"


def test_selector_matching_catches_a_policy_that_selects_nothing() -> None:
    # The checks above use this matcher: a typo in a label, a value or an operator's list
    # must make a selector match nothing.
    redis = pod_labels(find(rendered("keda"), "StatefulSet", "pdftasks-redis"))
    policy = find(rendered("keda"), "NetworkPolicy", "pdftasks-redis")
    assert selects(policy["spec"]["podSelector"], redis)
    assert not selects({"matchLabels": {"app.kubernetes.io/component": "rediss"}}, redis)
    assert not selects({"matchLabels": {"app.kubernetes.io/componen": "redis"}}, redis)
    peer = policy["spec"]["ingress"][0]["from"][0]["podSelector"]
    assert not selects(peer, redis)
    assert selects(peer, {**redis, "app.kubernetes.io/component": "worker"})
    assert selects({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, redis)
    assert not selects({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, redis)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_redis_ingress_admits_only_the_pdftasks_pods(overlay: str) -> None:
    objects = rendered(overlay)
    pods = workloads(objects)
    redis = find(objects, "StatefulSet", "pdftasks-redis")
    [port] = pod_ports(redis)
    admitted: set[str] = set()
    for sources in rules_for(objects, redis, port):
        assert sources is not None, "a rule admits Redis traffic from anywhere"
        for peer in sources:
            assert "ipBlock" not in peer and peer, peer
            if "namespaceSelector" in peer:
                # Only KEDA's operator (its redis scaler reads the lists), only where KEDA
                # scales on Redis, and only with both selectors (not its whole namespace).
                assert overlay == "keda" and peer == KEDA_PEER, peer
                continue
            admitted |= {w["metadata"]["name"] for w in pods
                         if selects(peer["podSelector"], pod_labels(w))}
    assert admitted == {f"pdftasks-{s}" for s in PDFTASKS_SERVICES}
    assert all(runs_pdftasks(find(objects, "Deployment", n)) for n in admitted)
    # Any other port of the Redis pod is closed (it has one).
    assert pod_ports(redis) == {"redis": 6379}


def namespaces_admitted(objects: Any, workload: dict[str, Any], port: str) -> list[str]:
    """The namespaces (by name label) admitted to ``port``: each peer must be a whole
    namespace selected by kubernetes.io/metadata.name, nothing wider."""
    names = []
    for sources in rules_for(objects, workload, port):
        assert sources is not None, f"{workload['metadata']['name']}:{port} open to anyone"
        for peer in sources:
            assert set(peer) <= {"namespaceSelector", "podSelector"}, peer
            labels = peer["namespaceSelector"]["matchLabels"]
            assert set(labels) == {"kubernetes.io/metadata.name"}, peer
            names.append(labels["kubernetes.io/metadata.name"])
    return names


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_each_port_is_open_only_to_who_needs_it(overlay: str) -> None:
    objects = rendered(overlay)
    # The API: only the ingress controller (reached through its Service, a ClusterIP).
    api = find(objects, "Deployment", "pdftasks-api")
    assert namespaces_admitted(objects, api, "http") == [INGRESS_NAMESPACE]
    # Every port Prometheus is told to scrape: from the monitoring namespace only.
    scraped = 0
    for w in workloads(objects):
        annotations = w["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        number = int(annotations["prometheus.io/port"])
        [port] = [n for n, p in pod_ports(w).items() if p == number]
        assert namespaces_admitted(objects, w, port) == [MONITORING_NAMESPACE]
        scraped += 1
    assert scraped == 2  # metrics exporter and Flower
    # Every port of every pod is admitted by some policy (default deny would silently cut
    # it otherwise), and no Service is exposed outside the cluster.
    for w in workloads(objects):
        for port in pod_ports(w):
            assert rules_for(objects, w, port), f"{w['metadata']['name']}:{port} unreachable"
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_api_metrics_need_a_key(overlay: str) -> None:
    # The API is what the ingress (or a changed compose port) exposes; Prometheus scrapes
    # the exporter, so the API's /metrics is not open without a key.
    from pdftasks.settings import Settings

    objects = rendered(overlay)
    api = find(objects, "Deployment", "pdftasks-api")
    env = {k: v for k, v in container_env(with_example_secret(overlay), api,
                                          api["spec"]["template"]["spec"]["containers"][0])
           .items() if k == "PDFTASKS_API_OPEN_METRICS"}
    assert Settings.model_validate({"api_open_metrics": env["PDFTASKS_API_OPEN_METRICS"]}
                                   ).api_open_metrics is False
    compose_api = compose()["services"]["api"]["environment"]
    assert Settings.model_validate({"api_open_metrics": compose_api[
        "PDFTASKS_API_OPEN_METRICS"]}).api_open_metrics is False


def test_compose_interpolation_reproduces_compose() -> None:
    # The compose tests above rely on this reading of ${...}: compose-spec's rules.
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("a$$b ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", env) == \
        "a$b v v d d "
    for text in ("${UNSET:?m}", "${EMPTY:?m}", "${UNSET?m}"):
        with pytest.raises(MissingVariable):
            interpolate(text, env)
    assert interpolate("${EMPTY?m}", env) == ""
