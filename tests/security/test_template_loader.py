"""Class 3: include, import, extends and from load only files inside the templates directory,
after symlinks (unit tests on the real renderer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdftasks.errors import (
    TemplateNotFoundError,
    TemplateSecurityError,
    UnsafePathError,
    UnsafeResourceError,
)
from pdftasks.render import PDFService, PDFServiceConfig, resolve_inside

SECRET = "root:x:0:0:TOP-SECRET-OUTSIDE"


@pytest.fixture
def service(tmp_path: Path) -> PDFService:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "macros.html").write_text("{% macro leak() %}" + SECRET + "{% endmacro %}")
    (outside / "base.html").write_text("<p>" + SECRET + "</p>{% block body %}{% endblock %}")
    tpl = tmp_path / "templates"
    tpl.mkdir()
    (tpl / "secret.html").symlink_to(outside / "secret.txt")
    (tpl / "macros.html").symlink_to(outside / "macros.html")
    (tpl / "base.html").symlink_to(outside / "base.html")
    (tpl / "partials").symlink_to(outside, target_is_directory=True)
    (tpl / "ok.html").write_text("<p>inside</p>")
    (tpl / "include.html").write_text('{% include "secret.html" %}')
    (tpl / "include_dir.html").write_text('{% include "partials/secret.txt" %}')
    (tpl / "import.html").write_text('{% import "macros.html" as m %}{{ m.leak() }}')
    (tpl / "from.html").write_text('{% from "macros.html" import leak %}{{ leak() }}')
    (tpl / "extends.html").write_text('{% extends "base.html" %}{% block body %}x{% endblock %}')
    (tpl / "dynamic.html").write_text("{% include name %}")
    (tpl / "fine.html").write_text('{% include "ok.html" %}')
    return PDFService(PDFServiceConfig(templates_dir=tpl, output_dir=tmp_path / "out",
                                       storage=""))


@pytest.mark.parametrize("template", ["include.html", "include_dir.html", "import.html",
                                      "from.html", "extends.html"])
def test_symlinks_out_of_the_templates_dir_are_refused(service, template) -> None:
    with pytest.raises(TemplateSecurityError, match="outside the templates directory"):
        service.render_html(template, {})


@pytest.mark.parametrize("name", ["secret.html", "../outside/secret.txt", "/etc/passwd",
                                  "partials/../../outside/secret.txt"])
def test_names_from_data_cannot_escape(service, name) -> None:
    with pytest.raises(TemplateSecurityError):
        service.render_html("dynamic.html", {"name": name})


def test_includes_inside_the_templates_dir_still_work(service) -> None:
    assert service.render_html("fine.html", {}) == "<p>inside</p>"
    pdf, pages = service.render_pdf("fine.html", {})
    assert pages == 1 and SECRET.encode() not in pdf


@pytest.mark.parametrize("name", ["a" * 256, "d/" * 2100 + "x.html", "caf\ud800.html"])
def test_names_no_file_system_takes_are_typed_errors(service, name) -> None:
    # Too long a component or path (ENAMETOOLONG), a lone surrogate: refused by name,
    # wherever a name is resolved (templates, CSS, attachments, merged parts, includes),
    # never an OSError from the file system.
    with pytest.raises(UnsafePathError):
        resolve_inside(service.templates_dir, name, "template")
    # included, such a name is a template that does not exist (`ignore missing` skips it)
    with pytest.raises(TemplateNotFoundError):
        service.render_html("dynamic.html", {"name": name})
    (service.templates_dir / "optional.html").write_text(
        "[{% include name ignore missing %}]")
    assert service.render_html("optional.html", {"name": name}) == "[]"


def test_a_link_to_a_name_too_long_is_refused_not_an_error(service) -> None:
    # The fetcher refuses it as it refuses any file it may not read: a typed, permanent
    # error, not the file system's OSError.
    (service.templates_dir / "long_link.html").write_text(f'<img src="{"a" * 300}.png">')
    with pytest.raises(UnsafeResourceError, match="only files inside the templates"):
        service.render_pdf("long_link.html", {})
