"""Reading the deployment files: Kubernetes manifests (raw and rendered by kustomize),
docker-compose.yml, the Dockerfile, the vendored KEDA schemas."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

K8S = ROOT / "k8s"
DEPLOY = ROOT / "deploy"
#: The kustomizations a reader applies: KEDA on Redis (default), CPU HPA, KEDA on SQS.
#: None of them ships a Secret: the reader creates pdftasks-secrets first.
OVERLAYS = {"keda": K8S, "hpa": K8S / "hpa", "sqs": K8S / "sqs"}
#: Templates of Secret pdftasks-secrets (CHANGE-ME values) for each of those kustomizations.
SECRET_EXAMPLES = {"keda": K8S / "overlays" / "example", "hpa": K8S / "overlays" / "example",
                   "sqs": K8S / "overlays" / "example-sqs"}
#: Kubernetes versions every manifest must validate against: oldest supported, newest.
K8S_VERSIONS = ("1.29.0", "1.37.0")


def manifest_files() -> list[Path]:
    """Every manifest file under k8s/ (kustomization files are not manifests)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def kubectl() -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is not installed: the tests render k8s/ with `kubectl kustomize` "
                    "(no cluster needed). Install kubectl >= 1.27.")
    return binary


@functools.cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl apply -k directory` would send (rendered offline)."""
    out = subprocess.run([kubectl(), "kustomize", str(directory)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl apply -k` would send for ``overlay`` (rendered offline)."""
    return render(OVERLAYS[overlay])


def with_example_secret(overlay: str) -> tuple[dict[str, Any], ...]:
    """``overlay``'s objects plus the example Secret a reader would create before it."""
    return rendered(overlay) + render(SECRET_EXAMPLES[overlay])


def find(objects: Any, kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(deployment: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def env_of(objects: Any, deployment: dict[str, Any]) -> dict[str, str]:
    """A container's plain environment: its ConfigMap (envFrom) plus literal env values."""
    c = container(deployment)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(find(objects, "ConfigMap", ref)["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (Mi, Gi, M, G or bytes) in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20,
             "G": 1e9 / 2**20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def seconds(duration: str) -> float:
    """A compose duration such as 120s, 2m, 1m30s."""
    total, matched = 0.0, ""
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration):
        total += float(value) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
        matched += value + unit
    assert matched == duration, f"cannot read duration {duration!r}"
    return total


@functools.cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as written (``${VAR...}`` not interpolated)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


#: A complete .env for docker-compose.yml (test values, not secrets).
COMPOSE_ENV = {"REDIS_PASSWORD": "0123456789abcdef0123456789abcdef",
               "PDFTASKS_FLOWER_BASIC_AUTH": "admin:fedcba9876543210",
               "GRAFANA_ADMIN_PASSWORD": "00112233445566778899"}


class MissingVariable(Exception):
    """A ``${VAR:?message}`` (or ``${VAR?message}``) whose variable is missing."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
                       r"(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation of one string (compose-spec, "Interpolation"):
    $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, ${VAR:+alt},
    ${VAR+alt}. Raises MissingVariable where compose would refuse to start."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        present = value is not None and (value != "" or not (op or "").startswith(":"))
        if op in (":?", "?") and not present:
            raise MissingVariable(name, arg)
        if op in (":-", "-") and not present:
            return arg
        if op in (":+", "+"):
            return arg if present else ""
        return value or ""

    return _VARIABLE.sub(one, text)


def interpolated(node: Any, env: dict[str, str]) -> Any:
    """``node`` (a parsed compose file or part of it) with every string interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, env) for value in node]
    return node


def compose_with(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose sees it with ``env`` (default COMPOSE_ENV) as .env."""
    return interpolated(compose(), COMPOSE_ENV if env is None else env)


@functools.cache
def keda_schema(kind: str) -> dict[str, Any]:
    name = {"ScaledObject": "scaledobject", "TriggerAuthentication": "triggerauthentication"}
    return json.loads((DEPLOY / "keda" / f"{name[kind]}.schema.json").read_text())


def validate_keda(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if ``doc`` does not match the vendored KEDA schema."""
    import jsonschema

    jsonschema.validate(doc, keda_schema(doc["kind"]),
                        cls=jsonschema.Draft7Validator)


def validate_kubernetes(doc: dict[str, Any], version: str) -> None:
    """Raise if ``doc`` does not validate strictly (no unknown fields) for ``version``."""
    import kubernetes_validate

    kubernetes_validate.validate(doc, version, strict=True)


def validate_any(doc: dict[str, Any], version: str) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        validate_keda(doc)
    else:
        validate_kubernetes(doc, version)
