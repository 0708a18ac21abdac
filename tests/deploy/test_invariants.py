"""The values in the manifests that must agree with each other and with the app:
one Beat, grace periods that cover the hard time limit, memory that fits the render
processes, scaler lists that are the queues the app really fills, probes on the heartbeat."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pdftasks.celery_app import create_app, queue_names
from pdftasks.contrib.monitoring import (
    HEARTBEAT_LIVENESS_MAX_AGE_S,
    HEARTBEAT_READINESS_MAX_AGE_S,
    redis_list_names,
)
from pdftasks.settings import Settings
from tests.deploy.manifests import (
    OVERLAYS,
    compose,
    container,
    cores,
    env_of,
    find,
    mebibytes,
    rendered,
    seconds,
    with_example_secret,
)

#: Headroom for a worker's main (consumer) process on top of its render processes, MiB.
MAIN_PROCESS_MB = 256
#: What a clean warm shutdown needs beyond the last render: acks, closing connections, s.
SHUTDOWN_MARGIN_S = 10


def worker_settings(objects: Any) -> Settings:
    """The worker's settings as the cluster would give them (ConfigMap + env literals)."""
    env = env_of(objects, find(objects, "Deployment", "pdftasks-worker"))
    fields = {k.removeprefix("PDFTASKS_").lower(): v for k, v in env.items()
              if k.startswith("PDFTASKS_")}
    return Settings(broker_url="redis://pdftasks-redis:6379/0", **fields)


def probe_threshold(command: list[str]) -> float:
    match = re.search(r"st_mtime > (\d+(?:\.\d+)?)", command[-1])
    assert match, command
    return float(match.group(1))


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_exactly_one_beat_replaced_not_rolled(overlay: str) -> None:
    beats = [o for o in rendered(overlay) if o["kind"] in ("Deployment", "StatefulSet")
             and o["metadata"]["labels"].get("app.kubernetes.io/component") == "beat"]
    assert len(beats) == 1
    beat = beats[0]
    assert beat["spec"]["replicas"] == 1
    # Recreate: the old Beat stops before the new one starts (a rolling update would run
    # two for a while).
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert container(beat)["args"] == ["beat"]
    assert compose()["services"]["beat"]["deploy"]["replicas"] == 1
    assert compose()["services"]["beat"]["command"] == ["beat"]


def test_grace_periods_cover_the_hard_time_limit() -> None:
    objects = rendered("keda")
    s = worker_settings(objects)
    assert s.hard_time_limit_s > s.soft_time_limit_s
    worker = find(objects, "Deployment", "pdftasks-worker")
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= s.hard_time_limit_s + SHUTDOWN_MARGIN_S
    compose_grace = seconds(compose()["services"]["worker"]["stop_grace_period"])
    assert compose_grace >= s.hard_time_limit_s + SHUTDOWN_MARGIN_S
    # The same limits in compose as in the cluster.
    env = compose()["services"]["worker"]["environment"]
    assert float(env["PDFTASKS_HARD_TIME_LIMIT_S"]) == s.hard_time_limit_s
    assert float(env["PDFTASKS_SOFT_TIME_LIMIT_S"]) == s.soft_time_limit_s
    # Redis must not hand a job that is still rendering to a second worker.
    assert s.visibility_timeout_s > grace


def test_worker_resources_fit_its_render_processes() -> None:
    objects = rendered("keda")
    s = worker_settings(objects)
    resources = container(find(objects, "Deployment", "pdftasks-worker"))["resources"]
    working_set = s.concurrency * s.max_memory_per_child_mb + MAIN_PROCESS_MB
    request = mebibytes(resources["requests"]["memory"])
    limit = mebibytes(resources["limits"]["memory"])
    assert request >= working_set
    assert limit >= request
    # Above concurrency x the address-space ceiling the container limit could never be hit.
    assert limit <= s.concurrency * s.render_memory_limit_mb + MAIN_PROCESS_MB
    # One core per render process: renders are CPU-bound.
    assert cores(resources["requests"]["cpu"]) == s.concurrency
    assert cores(resources["limits"]["cpu"]) >= s.concurrency

    service = compose()["services"]["worker"]
    concurrency = int(service["environment"]["PDFTASKS_CONCURRENCY"])
    assert concurrency == s.concurrency
    limits = service["deploy"]["resources"]["limits"]
    assert mebibytes(limits["memory"]) >= mebibytes(resources["requests"]["memory"])
    assert float(limits["cpus"]) >= concurrency


def test_manifest_settings_are_valid_pdftasks_settings() -> None:
    # Every PDFTASKS_* variable set anywhere is a real setting (a typo would be ignored
    # silently), and the worker's combination passes the settings' own checks.
    known = {f"PDFTASKS_{name.upper()}" for name in Settings.model_fields}
    names: set[str] = set()
    for overlay in OVERLAYS:
        for obj in with_example_secret(overlay):
            if obj["kind"] == "ConfigMap":
                names |= set(obj["data"])
            if obj["kind"] == "Secret":
                names |= set(obj.get("stringData", {}))
            if obj["kind"] in ("Deployment", "StatefulSet"):
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    names |= {e["name"] for e in c.get("env", [])}
    for service in compose()["services"].values():
        names |= set(service.get("environment") or {})
    unknown = {n for n in names if n.startswith("PDFTASKS_")} - known
    assert not unknown
    worker_settings(rendered("keda"))


def test_scaler_lists_are_the_queues_the_app_uses() -> None:
    objects = rendered("keda")
    s = worker_settings(objects)
    app = create_app(s)
    queues = [q.name for q in app.conf.task_queues]
    assert queues == queue_names(s.queue_namespace)
    options = app.conf.broker_transport_options
    # With priority_steps=[0] kombu keeps each queue in one list named like the queue;
    # with its default steps the scaler would miss three lists per queue.
    assert options["priority_steps"] == [0]
    lists = [name for q in queues for name in redis_list_names(q, options)]
    assert lists == queues
    assert redis_list_names("pdf.urgent", {})[1] == "pdf.urgent\x06\x163"

    scaled = find(objects, "ScaledObject", "pdftasks-worker")
    triggers = scaled["spec"]["triggers"]
    assert sorted(t["metadata"]["listName"] for t in triggers) == sorted(lists)
    # Workers only count waiting jobs if nothing sits in a prefetch buffer.
    assert app.conf.worker_prefetch_multiplier == 1 and app.conf.task_acks_late


@pytest.mark.parametrize("overlay", ["keda", "sqs"])
def test_scaling_modifiers_sum_every_queue(overlay: str) -> None:
    scaled = find(rendered(overlay), "ScaledObject", "pdftasks-worker")
    names = [t["name"] for t in scaled["spec"]["triggers"]]
    assert len(names) == len(set(names)) == 4
    modifiers = scaled["spec"]["advanced"]["scalingModifiers"]
    # A sum of each trigger exactly once (KEDA would otherwise take the maximum).
    terms = [t.strip() for t in modifiers["formula"].split("+")]
    assert sorted(terms) == sorted(names)
    assert modifiers["metricType"] == "AverageValue"
    assert int(modifiers["target"]) > 0
    spec = scaled["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["scaleTargetRef"]["name"] == "pdftasks-worker"


def test_sqs_scaler_queues_are_kombus_names_for_the_queues() -> None:
    from kombu.transport.SQS import Channel

    scaled = find(rendered("sqs"), "ScaledObject", "pdftasks-worker")
    urls = [t["metadata"]["queueURL"] for t in scaled["spec"]["triggers"]]
    expected = [Channel.entity_name(None, q) for q in queue_names("pdf")]
    assert expected == ["pdf-urgent", "pdf-high", "pdf-normal", "pdf-low"]
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == sorted(expected)
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["metadata"]["scaleOnInFlight"] == "false"  # waiting jobs, as on Redis


def test_scaler_reaches_the_redis_of_the_manifests() -> None:
    objects = with_example_secret("keda")
    service = find(objects, "Service", "pdftasks-redis")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    port = service["spec"]["ports"][0]["port"]
    secret = find(objects, "Secret", "pdftasks-secrets")["stringData"]
    for trigger in find(objects, "ScaledObject", "pdftasks-worker")["spec"]["triggers"]:
        # KEDA's operator runs in its own namespace: the address must name ours.
        assert trigger["metadata"]["address"] == f"{host}:{port}"
    auth = find(objects, "TriggerAuthentication", "pdftasks-redis-auth")["spec"]
    [ref] = auth["secretTargetRef"]
    assert ref["parameter"] == "password" and ref["key"] in secret
    # The example broker URL carries the same password and names the same service.
    assert secret["PDFTASKS_BROKER_URL"] == (
        f"redis://:{secret['REDIS_PASSWORD']}@pdftasks-redis:{port}/0")


def test_waiting_jobs_land_in_the_scaler_lists(redis_client) -> None:
    # Given no worker, when one job per priority (and two urgent) is submitted by the app,
    # then LLEN of exactly the lists the ScaledObject watches counts them.
    from pdftasks import generate_pdf
    from pdftasks.samples import sample_invoice

    counts = {"urgent": 2, "high": 1, "normal": 1, "low": 1}
    for priority, n in counts.items():
        for i in range(n):
            generate_pdf.delay(template="invoice.html", data=sample_invoice(i + 1),
                               output_filename=f"{priority}{i}.pdf", priority=priority)
    scaled = find(rendered("keda"), "ScaledObject", "pdftasks-worker")
    observed = {t["name"]: redis_client.llen(t["metadata"]["listName"])
                for t in scaled["spec"]["triggers"]}
    assert observed == counts
    total = sum(observed.values())
    assert total == sum(counts.values())
    assert sum(redis_client.llen(k) for k in redis_client.keys("pdf.*")) == total


def _worker_probes() -> dict[str, list[str]]:
    c = container(find(rendered("keda"), "Deployment", "pdftasks-worker"))
    return {kind: c[kind]["exec"]["command"]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")}


def test_worker_probes_read_the_heartbeat_file() -> None:
    objects = rendered("keda")
    worker = find(objects, "Deployment", "pdftasks-worker")
    c = container(worker)
    env = env_of(objects, worker)
    path = env["PDFTASKS_HEARTBEAT_FILE"]
    interval = float(env["PDFTASKS_HEARTBEAT_INTERVAL_S"])
    for kind, command in _worker_probes().items():
        assert command[:2] == ["python", "-c"], kind
        assert "os.environ['PDFTASKS_HEARTBEAT_FILE']" in command[2], kind
        assert "inspect" not in " ".join(command)  # not `celery inspect ping`
    probes = _worker_probes()
    assert probe_threshold(probes["livenessProbe"]) == HEARTBEAT_LIVENESS_MAX_AGE_S
    assert probe_threshold(probes["readinessProbe"]) == HEARTBEAT_READINESS_MAX_AGE_S
    assert "['consuming']" in probes["readinessProbe"][2]
    # Several beats fit in each threshold, so one late beat is no restart.
    assert 3 * interval <= HEARTBEAT_READINESS_MAX_AGE_S
    # The file lives on a writable volume (the root filesystem is read-only).
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), (path, mounts)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # Startup gives a slow first boot time before liveness can restart it.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120

    service = compose()["services"]["worker"]
    assert service["environment"]["PDFTASKS_HEARTBEAT_FILE"] == path
    assert service["healthcheck"]["test"][1:] == probes["livenessProbe"]


def test_dockerfile_healthcheck_is_the_liveness_probe() -> None:
    import dockerfile

    from tests.conftest import ROOT

    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    [health] = [c for c in commands if c.cmd.upper() == "HEALTHCHECK"]
    assert health.value[0] == "CMD" and list(health.value[1:]) == _worker_probes()[
        "livenessProbe"]
    [env] = [c for c in commands if c.cmd.upper() == "ENV"
             and "PDFTASKS_HEARTBEAT_FILE" in c.value]
    values = dict(zip(env.value[::2], env.value[1::2], strict=True))
    assert values["PDFTASKS_HEARTBEAT_FILE"] == env_of(
        rendered("keda"), find(rendered("keda"), "Deployment", "pdftasks-worker"))[
        "PDFTASKS_HEARTBEAT_FILE"]


def test_pdb_covers_the_workers_and_never_blocks_a_drain() -> None:
    objects = rendered("keda")
    pdb = find(objects, "PodDisruptionBudget", "pdftasks-worker")
    labels = find(objects, "Deployment", "pdftasks-worker")["spec"]["template"]["metadata"][
        "labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # maxUnavailable, not minAvailable: with a single worker a drain can still proceed.
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


def test_autoscaler_owns_the_worker_replica_count() -> None:
    # `kubectl apply` would reset a replicas field on every apply, undoing the autoscaler.
    for overlay in OVERLAYS:
        worker = find(rendered(overlay), "Deployment", "pdftasks-worker")
        assert "replicas" not in worker["spec"]
        assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_every_pod_runs_as_non_root_without_privileges() -> None:
    for obj in rendered("keda"):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert "resources" in c and "limits" in c["resources"], c["name"]


def test_services_select_pods_and_name_their_ports() -> None:
    objects = rendered("keda")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        targets = [w for w in workloads
                   if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_pdftasks_containers_run_the_right_commands() -> None:
    objects = rendered("keda")
    expected = {
        "pdftasks-api": ["api", "--host", "0.0.0.0", "--port", "8000"],
        "pdftasks-worker": ["worker"],
        "pdftasks-beat": ["beat"],
        "pdftasks-flower": ["flower", "--port", "5555"],
        "pdftasks-metrics": ["metrics", "--port", "9808"],
    }
    for name, args in expected.items():
        c = container(find(objects, "Deployment", name))
        assert c["image"] == "pdftasks:latest"
        assert c["args"] == args
        assert "command" not in c  # the image's ENTRYPOINT (tini -- pdftasks) runs them
    flower = container(find(objects, "Deployment", "pdftasks-flower"))
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in flower["env"]
                  if "valueFrom" in e}
    assert secret_env["PDFTASKS_FLOWER_BASIC_AUTH"].get("optional") is not True
    assert flower["readinessProbe"]["httpGet"]["path"] == "/healthcheck"
    api = container(find(objects, "Deployment", "pdftasks-api"))
    assert api["readinessProbe"]["httpGet"]["path"] == "/api/health"
