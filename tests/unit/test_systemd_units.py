"""Unit tests (no services): the systemd units under deploy/systemd keep their promises."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from pdftasks.settings import Settings
from tests.conftest import ROOT

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(path)
    return parser


def test_there_is_a_unit_for_worker_beat_and_api() -> None:
    assert [p.name for p in UNITS] == ["pdftasks-api.service", "pdftasks-beat.service",
                                       "pdftasks-worker.service"]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_restarts_runs_unprivileged_and_stops_gracefully(path: Path) -> None:
    service = read_unit(path)["Service"]
    assert service["Restart"] == "always"
    assert service["User"] not in ("", "root")
    assert service["KillSignal"] == "SIGTERM"
    assert service["ExecStart"].split()[1] == path.stem.removeprefix("pdftasks-")
    assert int(service["TimeoutStopSec"]) >= 30


def test_worker_stop_timeout_covers_the_hard_time_limit() -> None:
    service = read_unit(ROOT / "deploy" / "systemd" / "pdftasks-worker.service")["Service"]
    assert int(service["TimeoutStopSec"]) > Settings().hard_time_limit_s
