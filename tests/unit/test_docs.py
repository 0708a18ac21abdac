"""The documentation: generated references complete, every command, option and setting
described, the README short with working links. (`make docs` builds the site itself with
warnings as errors, which checks the links between its pages.)"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from pdftasks.cli.reference import cli_reference, iter_commands, undocumented
from pdftasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_hooks" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_and_option_has_a_description() -> None:
    assert undocumented() == [], "describe these in their click decorators (help=...)"


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items()
               if not (field.description or "").strip()]
    assert missing == []


def test_the_cli_reference_documents_every_command_and_option() -> None:
    text = cli_reference()
    names = [name for name, _ in iter_commands()]
    assert {"pdftasks submit", "pdftasks templates", "pdftasks completion"} <= set(names)
    for name, command in iter_commands():
        assert f"### `{name}`" in text
        for param in command.params:
            if param.param_type_name == "option":
                assert f"`{param.opts[0]}`" in text, (name, param.opts)


def test_the_openapi_reference_lists_every_route_and_schema() -> None:
    from pdftasks.api import app

    spec = app.openapi()
    text = _hooks().openapi_reference()
    for path, methods in spec["paths"].items():
        for method in methods:
            assert f"### `{method.upper()} {path}`" in text
    for name in spec["components"]["schemas"]:
        assert f"### {name}\n" in text


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for value in node.values() for p in pages(value)]
        if isinstance(node, list):
            return [p for item in node for p in pages(item)]
        return []

    in_nav = set(pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
               if not p.relative_to(DOCS).parts[0].startswith("_")}
    generated = {page for _, page in _hooks().COPIED}
    assert on_disk | generated == in_nav


def test_readme_is_short_and_its_links_work() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://|mailto:", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"README links to {link}, which does not exist"
        if anchor and target.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                     for h in headings}
            assert anchor in slugs, f"README links to {link}: no such heading"


def test_readme_quick_start_commands_are_make_targets() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in re.findall(r"^make ([\w-]+)", readme, re.M):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target


@pytest.mark.parametrize("name", ["bench-throughput.png", "bench-latency.png"])
def test_benchmark_charts_are_drawn_from_the_recorded_numbers(name: str) -> None:
    spec = importlib.util.spec_from_file_location("charts", ROOT / "benchmarks" / "charts.py")
    assert spec is not None and spec.loader is not None
    charts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(charts)
    png = charts.charts()[name]
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_readme_names_what_setup_installs() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    extras = re.search(r'^extras="([^"]+)"', setup, re.M)
    assert extras is not None
    for extra in [*extras.group(1).split(","), *re.findall(r'extras\+=",(\w+)"', setup)]:
        assert f"`{extra}`" in readme, f"the README does not say setup installs {extra}"
    packages = re.findall(r"packages(?:\+)?=\(([^)]*)\)", setup)
    for package in " ".join(packages).split():
        if not package.startswith("#"):
            assert package in readme, f"the README does not name the apt package {package}"


def test_readme_demo_claim_matches_the_demo_command() -> None:
    from pdftasks.cli import demo

    concurrency = next(p for p in demo.params if p.name == "concurrency").default
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"start one worker ({concurrency} render processes)" in readme
