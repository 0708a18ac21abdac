"""The first hour with the `pdftasks` command: one error format, one exit-code table, the
templates and completion commands, the zero-setup project directory, data type errors,
WeasyPrint's step logs, the sample invoice. Real subprocesses on the zero-setup default
(files under a temporary PDFTASKS_HOME); no worker is needed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pdftasks.cli.common import ExitCode, find_project_root
from pdftasks.errors import DataTypeError, InvalidDataError, MissingVariableError
from pdftasks.render import PDFService, PDFServiceConfig
from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, pdf_text

TEMPLATES = ROOT / "templates"


def zero_setup_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFTASKS_")}
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, cwd: Path = ROOT,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pdftasks", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory with the sample templates and a subdirectory."""
    root = tmp_path / "project"
    shutil.copytree(TEMPLATES, root / "templates")
    (root / "docs" / "deep").mkdir(parents=True)
    return root


def test_exit_codes_are_the_documented_table() -> None:
    assert [(c.name, c.value) for c in ExitCode] == [
        ("OK", 0), ("FAILED", 1), ("BAD_INPUT", 2), ("TIMEOUT", 3)]


@pytest.mark.parametrize("args, kind", [
    (["submit", "invoice.html", "-o", "a.pdf", "-p", "bogus"], "BadParameter"),
    (["submit", "invoice.html"], "MissingParameter"),
    (["frobnicate"], "NoSuchCommand"),
    (["submit", "invoice.html", "-o", "a.pdf", "-d", "{not json"], "BadParameter"),
    (["submit", "invoice.html", "-o", "../a.pdf"], "UnsafePathError"),
    (["retry"], "UsageError"),
])
def test_bad_input_is_one_error_line_and_exit_2(project: Path, args: list[str],
                                                kind: str) -> None:
    done = cli(zero_setup_env(project), *args, cwd=project)
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"error: {kind}: "), done.stderr
    assert "Usage:" not in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("command", ["status", "cancel", "retry", "wait"])
def test_unknown_job_is_the_same_error_and_exit_1_for_every_command(
        project: Path, command: str) -> None:
    done = cli(zero_setup_env(project), command, "nope", cwd=project)
    assert (done.returncode, done.stderr.strip()) == (1, "error: JobNotFoundError: no job nope")
    assert "resubmitted" not in done.stdout


def test_jobs_json_is_one_json_array(project: Path) -> None:
    env = zero_setup_env(project)
    assert json.loads(cli(env, "jobs", "--json", cwd=project).stdout) == []
    for name in ("a.pdf", "b.pdf"):
        assert cli(env, "submit", "invoice.html", "-o", name, "-f",
                   "templates/sample_invoice.json", cwd=project).returncode == 0
    listed = json.loads(cli(env, "jobs", "--json", cwd=project).stdout)
    assert isinstance(listed, list)
    assert sorted(j["output_filename"] for j in listed) == ["a.pdf", "b.pdf"]
    assert {j["status"] for j in listed} == {"pending"}


def test_stats_json_does_not_claim_workers_are_not_running(project: Path) -> None:
    stats = json.loads(cli(zero_setup_env(project), "stats", "--once", "--json",
                           cwd=project).stdout)
    assert "running" not in stats and stats["workers"] == 0


def test_templates_lists_each_template_with_its_sample_data(project: Path) -> None:
    done = cli(zero_setup_env(project), "templates", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "invoice.html" in done.stdout and "templates/sample_invoice.json" in done.stdout
    assert ("pdftasks submit report.html -f templates/sample_report.json -o report.pdf"
            in done.stdout)
    listed = json.loads(cli(zero_setup_env(project), "templates", "--json",
                            cwd=project).stdout)
    assert {t["template"]: Path(t["sample_data"]).name for t in listed
            if t["sample_data"]} == {"invoice.html": "sample_invoice.json",
                                     "report.html": "sample_report.json"}


def test_completion_scripts_come_from_click(project: Path) -> None:
    for shell in ("bash", "zsh", "fish"):
        done = cli(zero_setup_env(project), "completion", shell, cwd=project)
        assert done.returncode == 0 and "_PDFTASKS_COMPLETE" in done.stdout, shell
    # And the variable the script sets really completes the command names
    env = zero_setup_env(project, _PDFTASKS_COMPLETE="bash_complete", COMP_WORDS="pdftasks te",
                         COMP_CWORD="1")
    script = Path(sys.executable).with_name("pdftasks")
    done = subprocess.run([str(script)], env=env, cwd=project, capture_output=True, text=True,
                          timeout=60)
    assert "plain,templates" in done.stdout.splitlines(), done


def test_a_subdirectory_uses_the_project_s_queue(project: Path) -> None:
    # Given a project whose zero-setup state is at its root
    env = zero_setup_env(project)
    first = cli(env, "submit", "invoice.html", "-o", "root.pdf", "-f",
                "templates/sample_invoice.json", cwd=project)
    assert first.returncode == 0, first.stderr
    # When the next job is submitted from a subdirectory
    deep = project / "docs" / "deep"
    second = cli(env, "submit", "invoice.html", "-o", "deep.pdf", cwd=deep)
    assert second.returncode == 0, second.stderr
    # Then it is in the same queue and job store; nothing was created in the subdirectory
    assert not (deep / ".pdftasks").exists() and not (project / "docs" / ".pdftasks").exists()
    listed = json.loads(cli(env, "jobs", "--json", cwd=deep).stdout)
    assert sorted(j["output_filename"] for j in listed) == ["deep.pdf", "root.pdf"]
    assert find_project_root(deep) == project.resolve()


def test_outside_a_project_submit_refuses_and_creates_nothing(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli(zero_setup_env(tmp_path), "submit", "invoice.html", "-o", "a.pdf",
               cwd=elsewhere)
    assert done.returncode == 2
    assert done.stderr.startswith("error: TemplateNotFoundError: no templates directory")
    assert list(elsewhere.iterdir()) == []


def test_the_broker_setting_wins_over_the_project_directory(project: Path) -> None:
    # With a broker configured there is no zero-setup home to find: no files anywhere.
    deep = project / "docs" / "deep"
    env = zero_setup_env(project, PDFTASKS_BROKER_URL="redis://127.0.0.1:1/0")
    done = cli(env, "templates", cwd=deep)
    assert done.returncode == 2 and "no templates directory" in done.stderr


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> PDFService:
    return PDFService(PDFServiceConfig(templates_dir=TEMPLATES,
                                       output_dir=tmp_path_factory.mktemp("out")))


@pytest.mark.parametrize("items, error, words", [
    ("abc", DataTypeError, "expects an object with 'quantity' but the data has a str"),
    (5, DataTypeError, "a value has the wrong type"),
    ([None], DataTypeError, "expects an object with 'quantity' but the data has null"),
    ([{"description": "x", "unit_price": 1}], MissingVariableError, "'quantity'"),
])
def test_wrong_data_types_are_named_as_such(service: PDFService, items: object,
                                           error: type[Exception], words: str) -> None:
    data = {**sample_invoice(1), "items": items}
    with pytest.raises(error) as caught:
        service.render_html("invoice.html", data)
    assert words in str(caught.value)
    # A data type error is bad data: permanent, and an InvalidDataError for callers
    assert caught.value.permanent
    if error is DataTypeError:
        assert isinstance(caught.value, InvalidDataError)


@pytest.mark.parametrize("data", [sample_invoice(3), json.loads(
    (TEMPLATES / "sample_invoice.json").read_text())])
def test_the_sample_invoice_thanks_once(service: PDFService, data: dict[str, object],
                                        tmp_path: Path) -> None:
    result = service.generate_pdf("invoice.html", data, "thanks.pdf")
    text, _ = pdf_text(result.path)
    assert " ".join(text.split()).count("Thank you for your business.") == 1


def test_weasyprint_steps_are_debug_lines_in_the_worker(tmp_path: Path) -> None:
    # Given the worker's render service (stylesheet cache on) and a root logger at INFO
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name.startswith("weasyprint.progress"):
                records.append(record)

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    progress = logging.getLogger("weasyprint.progress")
    saved = (progress.filters[:], progress.propagate, progress.level)
    try:
        worker_service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES,
                                                     output_dir=tmp_path),
                                    cache_stylesheets=True)
        root.setLevel(logging.INFO)
        worker_service.render_pdf("invoice.html", sample_invoice(1))
        # Then nothing reaches the INFO log
        assert records == []
        # And at DEBUG the steps are there, as DEBUG records
        root.setLevel(logging.DEBUG)
        worker_service.render_pdf("invoice.html", sample_invoice(2))
        assert records and {r.levelname for r in records} == {"DEBUG"}
        assert any("Step" in r.getMessage() for r in records)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        progress.filters[:], progress.propagate = saved[:2]
        progress.setLevel(saved[2])


@pytest.fixture
def progress_logger() -> Iterator[logging.Logger]:
    """``weasyprint.progress`` and the root logger, restored afterwards."""
    root, progress = logging.getLogger(), logging.getLogger("weasyprint.progress")
    saved = (root.level, progress.filters[:], progress.propagate, progress.level,
             progress.handlers[:])
    try:
        yield progress
    finally:
        root.setLevel(saved[0])
        progress.filters[:], progress.propagate = saved[1:3]
        progress.setLevel(saved[3])
        progress.handlers[:] = saved[4]


def _records_made(render: Callable[[], object]) -> list[str]:
    """Names of the loggers of every LogRecord made while ``render()`` runs."""
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record.name)
        return record

    logging.setLogRecordFactory(counting)
    try:
        render()
    finally:
        logging.setLogRecordFactory(factory)
    return made


def test_the_worker_makes_no_weasyprint_step_records_at_info(
        progress_logger: logging.Logger, tmp_path: Path) -> None:
    # Given the worker's render service and a root logger at INFO, as in a worker
    worker_service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=tmp_path),
                                cache_stylesheets=True)
    logging.getLogger().setLevel(logging.INFO)
    worker_service.render_pdf("invoice.html", sample_invoice(1))  # sets the cache up
    # When it renders again, no step record is even made (each one cost its caller lookup)
    made = _records_made(lambda: worker_service.render_pdf("invoice.html", sample_invoice(2)))
    assert not [name for name in made if name.startswith("weasyprint.progress")]
    # But a handler on weasyprint.progress itself (page progress) gets every step again
    steps: list[logging.LogRecord] = []
    progress_logger.addHandler(_Keep(steps))
    worker_service.render_pdf("invoice.html", sample_invoice(3))
    assert any("Step" in r.getMessage() for r in steps)


def test_a_progress_level_set_by_the_application_is_left_alone(
        progress_logger: logging.Logger, tmp_path: Path) -> None:
    # Given an application that wants WeasyPrint's steps at INFO on its own handler
    steps: list[logging.LogRecord] = []
    progress_logger.setLevel(logging.INFO)
    logging.getLogger().setLevel(logging.INFO)
    worker_service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=tmp_path),
                                cache_stylesheets=True)
    worker_service.render_pdf("invoice.html", sample_invoice(1))
    progress_logger.addHandler(_Keep(steps))
    worker_service.render_pdf("invoice.html", sample_invoice(2))
    # Then its level stays and its handler gets the steps
    assert progress_logger.level == logging.INFO
    assert any("Step" in r.getMessage() for r in steps)


class _Keep(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


def test_retry_of_a_job_whose_secrets_were_not_kept_is_one_error_line(project: Path) -> None:
    env = zero_setup_env(project)
    sent = cli(env, "submit", "invoice.html", "-o", "locked.pdf", "-f",
               "templates/sample_invoice.json", "--options",
               '{"encrypt": {"user_password": "u-secret", "owner_password": "o-secret"}}',
               cwd=project)
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.split()[-1]
    assert cli(env, "cancel", job_id, cwd=project).returncode == 0
    done = cli(env, "retry", job_id, cwd=project)
    assert done.returncode == 2, done
    assert done.stderr.startswith("error: InvalidOptionsError: ") and "cannot be retried" \
        in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "u-secret" not in done.stderr
