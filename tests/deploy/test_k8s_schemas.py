"""Every Kubernetes manifest validates strictly and offline: core objects against the
Kubernetes OpenAPI schemas shipped by kubernetes-validate (unknown fields are errors), KEDA
objects against the KEDA schema kept in deploy/keda/. The kustomizations render with
`kubectl kustomize` (no cluster) and what they render validates too."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest

from tests.deploy.manifests import (
    K8S,
    K8S_VERSIONS,
    OVERLAYS,
    SECRET_EXAMPLES,
    find,
    load_documents,
    manifest_files,
    render,
    rendered,
    validate_any,
    validate_keda,
    validate_kubernetes,
)

#: Trigger metadata each KEDA scaler accepts (KEDA scaler docs: redis, aws-sqs-queue).
SCALER_METADATA = {
    "redis": {
        "required": {"listName"},
        "allowed": {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
                    "listName", "listLength", "activationListLength", "databaseIndex",
                    "enableTLS", "unsafeSsl", "usernameFromEnv", "passwordFromEnv"},
    },
    "aws-sqs-queue": {
        "required": {"queueURL", "awsRegion"},
        "allowed": {"queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength",
                    "awsRegion", "awsEndpoint", "scaleOnInFlight", "scaleOnDelayed",
                    "identityOwner"},
    },
}


def test_there_are_manifests_for_every_part() -> None:
    names = {p.relative_to(K8S).as_posix() for p in manifest_files()}
    assert {"base/api.yaml", "base/worker.yaml", "base/worker-pdb.yaml", "base/beat.yaml",
            "base/flower.yaml", "base/metrics.yaml", "base/configmap.yaml",
            "base/redis.yaml", "base/networkpolicy.yaml", "keda-scaledobject.yaml",
            "keda-triggerauthentication.yaml", "keda-networkpolicy.yaml", "hpa/worker-hpa.yaml",
            "sqs/keda-scaledobject.yaml", "overlays/example/secret.example.yaml",
            "overlays/example-sqs/secret.example.yaml"} <= names


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.relative_to(K8S).as_posix())
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_each_manifest_file_validates_strictly(path: Path, version: str) -> None:
    documents = load_documents(path)
    assert documents, f"{path} holds no object"
    for doc in documents:
        validate_any(doc, version)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_each_kustomization_renders_objects_that_validate(overlay: str, version: str) -> None:
    objects = rendered(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "StatefulSet",
            "PodDisruptionBudget", "PersistentVolumeClaim", "NetworkPolicy"} <= kinds
    # The reader creates the Secret (kubectl create secret); apply -k never overwrites it.
    assert "Secret" not in kinds
    autoscalers = [o for o in objects if o["kind"] in ("ScaledObject",
                                                       "HorizontalPodAutoscaler")]
    # Exactly one autoscaler for the workers: two would fight over the replica count.
    assert len(autoscalers) == 1
    expected = "HorizontalPodAutoscaler" if overlay == "hpa" else "ScaledObject"
    assert autoscalers[0]["kind"] == expected
    for obj in objects:
        validate_any(obj, version)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "pdftasks", obj["metadata"]["name"]


@pytest.mark.parametrize("example", sorted(set(SECRET_EXAMPLES.values())),
                         ids=lambda p: p.relative_to(K8S).as_posix())
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_each_secret_example_renders_one_secret_that_validates(example: Path,
                                                               version: str) -> None:
    [secret] = render(example)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "pdftasks-secrets"
    assert secret["metadata"]["namespace"] == "pdftasks"
    validate_kubernetes(secret, version)


def test_every_manifest_file_is_applied_by_some_kustomization() -> None:
    # A manifest no kustomization lists would never reach the cluster.
    applied = set()
    for directory in [*OVERLAYS.values(), *SECRET_EXAMPLES.values()]:
        applied |= {(o["kind"], o["metadata"]["name"]) for o in render(directory)}
    for path in manifest_files():
        for doc in load_documents(path):
            assert (doc["kind"], doc["metadata"]["name"]) in applied, path


def test_the_validators_reject_what_they_should() -> None:
    # Given valid objects, when a field is misspelt or mistyped, then validation fails:
    # proof that the checks above are strict, not just parsing YAML.
    objects = rendered("keda")
    worker = copy.deepcopy(find(objects, "Deployment", "pdftasks-worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(Exception, match="livenesProbe"):
        validate_kubernetes(worker, K8S_VERSIONS[-1])

    scaled = copy.deepcopy(find(objects, "ScaledObject", "pdftasks-worker"))
    scaled["spec"]["advanced"]["scalingModifier"] = scaled["spec"]["advanced"].pop(
        "scalingModifiers")
    with pytest.raises(jsonschema.ValidationError, match="scalingModifier"):
        validate_keda(scaled)

    scaled = copy.deepcopy(find(objects, "ScaledObject", "pdftasks-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 20  # must be a string
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(scaled)

    auth = copy.deepcopy(find(objects, "TriggerAuthentication", "pdftasks-redis-auth"))
    del auth["spec"]["secretTargetRef"][0]["key"]
    with pytest.raises(jsonschema.ValidationError, match="key"):
        validate_keda(auth)


@pytest.mark.parametrize("overlay", ["keda", "sqs"])
def test_trigger_metadata_uses_only_parameters_the_scaler_knows(overlay: str) -> None:
    scaled = find(rendered(overlay), "ScaledObject", "pdftasks-worker")
    for trigger in scaled["spec"]["triggers"]:
        rules = SCALER_METADATA[trigger["type"]]
        keys = set(trigger["metadata"])
        assert rules["required"] <= keys, trigger
        assert keys <= rules["allowed"], keys - rules["allowed"]
        auth = trigger["authenticationRef"]["name"]
        find(rendered(overlay), "TriggerAuthentication", auth)
