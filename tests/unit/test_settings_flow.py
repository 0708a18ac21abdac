"""Settings are read once, at entry points, and passed down.

The environment (``PDFTASKS_*``) is read by ``pdftasks.settings.get_settings()`` (or a bare
``Settings()``, or ``PDFServiceConfig.from_settings()`` without settings). Only the entry
points below may do that; everything under them gets its settings as an argument or from
its app (``app.pdftasks_settings``, ``pdftasks.worker.tasks.app_settings(app)``). The test
reads pdftasks' source (the AST, so comments and docstrings do not count) and fails on a
read anywhere else.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pdftasks"

#: Where the environment may be read: a package or module (everything in it), or
#: ``module:qualified.function`` (that function's own body, not functions nested in it).
ALLOWED: dict[str, str] = {
    # The `pdftasks` command (pdftasks/cli/*): each command reads the settings once and
    # passes them (or the default app, built from them) to what it calls.
    "pdftasks.cli": "the CLI commands are entry points",
    # create_app(settings=None): the app of the environment. get_app() (the default app),
    # `celery -A pdftasks` and the package's lazy `pdftasks.app`/`generate_pdf` go
    # through it; the app keeps them as app.pdftasks_settings for everything it runs.
    "pdftasks.celery_app:create_app": "create_app() without settings is an entry point",
    # PDFQueueManager() without a Settings: the guide's entry point (host applications).
    "pdftasks.client:PDFQueueManager.__init__": "the guide's entry point",
    # build_api(settings=None), and `uvicorn pdftasks.api:app` (build_api() on import).
    "pdftasks.api.application:build_api": "the HTTP API's entry point",
    # PDFServiceConfig.from_settings() called by a user with no argument (public API);
    # pdftasks' own code always passes its settings.
    "pdftasks.render.service:PDFServiceConfig.from_settings": "public, a user's call",
    # PDFService() with no config (public API, the guide's standalone renderer): the config
    # of the environment, as documented. pdftasks itself always passes a config.
    "pdftasks.render.service:PDFService.__init__": "public, a user's call",
}


@dataclass(frozen=True)
class Read:
    module: str
    scope: str  # qualified name of the enclosing function ("" at module level)
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.scope or '<module>'} line {self.line}: {self.what}"


class _Finder(ast.NodeVisitor):
    """Reads of the environment through pdftasks' settings, with their enclosing scope."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.scope: list[str] = []
        self.names = {"get_settings"}  # and aliases: from ... import get_settings as x
        self.found: list[Read] = []

    def _add(self, node: ast.AST, what: str) -> None:
        self.found.append(Read(self.module, ".".join(self.scope), node.lineno, what))

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "get_settings" and alias.asname:
                self.names.add(alias.asname)

    def visit_Name(self, node: ast.Name) -> None:
        # Any use, called or not (``f = get_settings; f()`` is a read too).
        if node.id in self.names and isinstance(node.ctx, ast.Load):
            self._add(node, f"{node.id}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "get_settings":
            self._add(node, "….get_settings")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        bare = not node.args and not node.keywords
        if bare and isinstance(func, ast.Name) and func.id == "Settings":
            self._add(node, "Settings()")  # a fresh read of the environment
        if bare and isinstance(func, ast.Attribute) and func.attr in ("from_settings",
                                                                         "from_env"):
            self._add(node, f"….{func.attr}()")  # PDFServiceConfig's: the environment
        self.generic_visit(node)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_reads(source: str, module: str) -> list[Read]:
    finder = _Finder(module)
    finder.visit(ast.parse(source))
    return finder.found


def all_reads() -> list[Read]:
    reads = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module == "pdftasks.settings" or module.startswith("pdftasks.settings."):
            continue  # where the settings are defined (and get_settings itself)
        reads += find_reads(path.read_text(encoding="utf-8"), module)
    return reads


def covers(entry: str, read: Read) -> bool:
    if ":" in entry:
        return entry == f"{read.module}:{read.scope}"
    return read.module == entry or read.module.startswith(entry + ".")


def allowed(read: Read) -> bool:
    return any(covers(entry, read) for entry in ALLOWED)


def test_the_finder_sees_every_kind_of_read() -> None:
    source = '''
from pdftasks.settings import get_settings as gs
import pdftasks.settings as ps

def a():
    return get_settings().x

class B:
    def m(self, s=None):
        return s or ps.get_settings()

def c():
    f = gs
    return f(), Settings(), PDFServiceConfig.from_settings(), Settings(home="x")
'''
    reads = find_reads(source, "m")
    assert [(r.scope, r.what) for r in reads] == [
        ("a", "get_settings"), ("B.m", "….get_settings"), ("c", "gs"), ("c", "Settings()"),
        ("c", "….from_settings()")]


def test_settings_are_read_only_at_entry_points() -> None:
    outside = [str(r) for r in all_reads() if not allowed(r)]
    assert not outside, (
        "the environment is read below the entry points; pass the settings down (as an "
        "argument, or app_settings(app)) or, for a new entry point, add it to ALLOWED "
        "with the reason:\n  " + "\n  ".join(outside))


@pytest.mark.parametrize("entry", sorted(ALLOWED))
def test_allow_list_has_no_stale_entries(entry: str) -> None:
    # Each entry still reads the settings: one that no longer does leaves the list.
    assert any(covers(entry, r) for r in all_reads()), \
        f"{entry} no longer reads the environment: remove it from ALLOWED"


# What the entry points hand down, and what happens without it.


def test_app_settings_of_a_host_app_is_an_error_not_the_environment() -> None:
    from celery import Celery

    from pdftasks.worker.tasks import app_settings

    with pytest.raises(RuntimeError, match="not a pdftasks app"):
        app_settings(Celery("host", set_as_current=False))


def test_queue_names_default_to_the_default_namespace_not_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pdftasks.celery_app
    from pdftasks.celery_app import queue_name, queue_names

    monkeypatch.setenv("PDFTASKS_QUEUE_NAMESPACE", "fromenv")
    monkeypatch.setattr(pdftasks.celery_app, "get_settings", _no_environment)
    assert queue_names() == ["pdf.urgent", "pdf.high", "pdf.normal", "pdf.low"]
    assert queue_name("low", "other") == "other.low"


def _no_environment() -> None:
    raise AssertionError("the environment was read")


def test_a_service_takes_its_storage_from_its_config(tmp_path: Path) -> None:
    from pdftasks.render import PDFService, PDFServiceConfig
    from pdftasks.settings import Settings
    from pdftasks.storage import LocalStorage
    from pdftasks.storage.s3 import S3Storage
    from tests.conftest import TEMPLATES

    local = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=tmp_path))
    assert isinstance(local.storage, LocalStorage)  # storage None, no settings: output_dir
    with pytest.raises(ValueError, match="needs settings"):
        PDFService(PDFServiceConfig(templates_dir=TEMPLATES, storage="s3://bucket/p"))
    s = Settings(broker_url=None, home=tmp_path, templates_dir=TEMPLATES,
                 storage="s3://bucket/p", aws_region="eu-west-3")
    from_settings = PDFService(PDFServiceConfig.from_settings(s))
    assert isinstance(from_settings.storage, S3Storage)
    assert from_settings.storage.settings is s


def test_a_manager_given_settings_does_not_read_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pdftasks.celery_app
    import pdftasks.client
    from pdftasks.settings import Settings

    s = Settings(broker_url=None, home=tmp_path, queue_namespace="flow")
    monkeypatch.setattr(pdftasks.client, "get_settings", _no_environment)
    monkeypatch.setattr(pdftasks.celery_app, "get_settings", _no_environment)
    manager = pdftasks.client.PDFQueueManager(settings=s)
    assert manager.settings == s
    assert manager.app.pdftasks_settings is manager.settings
