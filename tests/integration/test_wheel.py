"""Integration test of the wheel: built from a copy of the source tree, installed with the
``redis`` extra into a fresh venv outside the repository, and run from empty directories
with no PDFTASKS_* settings: ``import pdftasks``, ``pdftasks schedule`` (the packaged default
schedule), ``pdftasks demo`` (zero-setup broker, packaged sample templates) and a worker on
the test Redis rendering a job submitted from the fresh venv's python."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, pdf_text

pytestmark = pytest.mark.integration

# Not part of the source tree a wheel is built from.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    ".pdftasks", "output", "test-artifacts", ".env")
_ENTRIES = ("daily-report", "weekly-summary", "monthly-invoices", "cleanup-old-pdfs")


@dataclass
class Installed:
    venv: Path
    wheel: Path
    env: dict[str, str]  # no PDFTASKS_*, the venv first on PATH

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(self, *argv: str | Path, cwd: Path, timeout: float = 120,
            **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], cwd=cwd, env={**self.env, **extra_env},
                              capture_output=True, text=True, timeout=timeout)


def _empty_dir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    assert ROOT.resolve() not in path.resolve().parents
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    timings: dict[str, float] = {}
    start = time.monotonic()
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(base / "dist"), str(src)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = (base / "dist").glob("pdftasks-*.whl")
    timings["build"] = time.monotonic() - start

    start = time.monotonic()
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[redis]"]
    if (ROOT / "constraints.txt").is_file():
        install += ["-c", str(ROOT / "constraints.txt")]
    proc = subprocess.run(install, capture_output=True, text=True, timeout=900, cwd=base)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    timings["venv + install"] = time.monotonic() - start
    print("wheel test timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PDFTASKS_") and k not in ("VIRTUAL_ENV", "PYTHONPATH",
                                                         "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield Installed(venv, wheel, env)


def test_wheel_ships_every_module_the_sample_templates_and_the_default_schedule(
        installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pdftasks").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    samples = {f"pdftasks/sample_templates/{p.name}" for p in (ROOT / "templates").iterdir()
               if p.is_file()}
    assert samples and samples <= names, sorted(samples - names)
    assert "pdftasks/contrib/default_schedule.py" in names and "pdftasks/py.typed" in names
    assert not [n for n in names if n.startswith(("templates/", "tests/", "beat_schedule"))]


def test_import_pdftasks_in_an_empty_directory_leaves_it_empty(
        installed: Installed, tmp_path: Path) -> None:
    here = _empty_dir(tmp_path, "empty")
    proc = installed.run(installed.bin / "python", "-c",
                         "import pdftasks, pdftasks.cli; print(pdftasks.__file__)", cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(installed.venv)  # not the repository's
    assert list(here.iterdir()) == []


def test_schedule_uses_the_packaged_default(installed: Installed, tmp_path: Path) -> None:
    here = _empty_dir(tmp_path, "empty")
    proc = installed.run("pdftasks", "schedule", cwd=here)
    assert proc.returncode == 0, proc.stderr
    first, *lines = proc.stdout.splitlines()
    [path] = re.findall(r"^schedule: (\S+)", first)
    assert Path(path).is_relative_to(installed.venv) and path.endswith(
        "pdftasks/contrib/default_schedule.py"), first
    assert [line.split()[0] for line in lines] == list(_ENTRIES), proc.stdout
    # A ./beat_schedule.py (a copy of the default, edited) takes over.
    (here / "beat_schedule.py").write_text(
        Path(path).read_text().replace('"09:00"', '"07:15"'))
    proc = installed.run("pdftasks", "schedule", "--json", cwd=here)
    assert proc.returncode == 0, proc.stderr
    docs = {d["name"]: d for d in map(json.loads, proc.stdout.splitlines())}
    assert docs["daily-report"]["at"] == "07:15" and len(docs) == len(_ENTRIES)


def test_demo_renders_the_packaged_samples_with_zero_setup(
        installed: Installed, tmp_path: Path) -> None:
    here = _empty_dir(tmp_path, "empty")
    proc = installed.run("pdftasks", "demo", "-n", "2", "-c", "1", "--timeout", "300",
                         cwd=here, timeout=420)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the packaged samples" in proc.stdout, proc.stdout
    paths = [Path(p) for p in re.findall(r"page\(s\)\s+(\S+\.pdf)$", proc.stdout, re.M)]
    assert len(paths) == 2 + 3, proc.stdout  # invoices + reports
    for path in paths:
        assert path.is_relative_to(here) and path.read_bytes().startswith(b"%PDF"), path


def test_worker_renders_a_job_submitted_from_the_fresh_venv(
        installed: Installed, redis_client, redis_url: str, tmp_path: Path) -> None:
    templates = installed.run(
        installed.bin / "python", "-c",
        "from pdftasks.cli import sample_templates_dir; print(sample_templates_dir())",
        cwd=_empty_dir(tmp_path, "probe")).stdout.strip()
    assert Path(templates).is_relative_to(installed.venv), templates
    here = _empty_dir(tmp_path, "worker")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            ["pdftasks", "worker", "-c", "1", "-l", "INFO", "-n", "wheel@%h"], cwd=here,
            env={**installed.env, "PDFTASKS_BROKER_URL": redis_url,
                 "PDFTASKS_TEMPLATES_DIR": templates},
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while " ready." not in log_path.read_text(errors="replace"):
            assert worker.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        submit = (
            "import json\n"
            "from pdftasks import generate_pdf\n"
            "from pdftasks.samples import sample_invoice\n"
            "r = generate_pdf.delay(template='invoice.html', data=sample_invoice(3),\n"
            "                       output_filename='from_wheel.pdf', priority='high')\n"
            "print(json.dumps(r.get(timeout=120)))\n")
        proc = installed.run(installed.bin / "python", "-c", submit,
                             cwd=_empty_dir(tmp_path, "client"), timeout=180,
                             PDFTASKS_BROKER_URL=redis_url)
        assert proc.returncode == 0, proc.stderr + log_path.read_text(errors="replace")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    path = Path(result["path"])
    assert path.is_relative_to(here) and path.name == "from_wheel.pdf", result
    text, pages = pdf_text(path)
    assert pages == result["pages"] >= 1
    assert sample_invoice(3)["invoice_number"] in text
    assert sample_invoice(3)["client_name"] in text
