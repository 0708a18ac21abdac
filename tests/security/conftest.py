"""Fixtures of the attack suite: the API server of the integration tests, and a renderer
over a directory of templates written by the test."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pdftasks.render import PDFService, PDFServiceConfig
from tests.integration.test_api import api, start_api  # noqa: F401


def service_with(tmp_path: Path, templates: Mapping[str, str]) -> PDFService:
    """A renderer whose templates directory holds ``templates`` (name -> source)."""
    tpl = tmp_path / "templates"
    tpl.mkdir()
    for name, source in templates.items():
        (tpl / name).write_text(source)
    return PDFService(PDFServiceConfig(templates_dir=tpl, output_dir=tmp_path / "out",
                                       storage=""))
