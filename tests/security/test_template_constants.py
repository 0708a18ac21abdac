"""Class 4 (renderer side): nothing in a template makes compiling it expensive, and huge
results are refused at render time (unit tests on the real renderer). The API side (no
template work on the event loop) is in test_api_*.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdftasks.errors import TemplateSecurityError
from pdftasks.render import PDFService
from tests.security.conftest import service_with

# Each folded to a constant of about a megabyte (or a 100,000-digit integer) by Jinja's
# compiler before: small enough to run on old code, large enough to see in the output.
EXPANSIVE = {
    "repeat": "{{ 'a' * 10**6 }}",
    "repeat_list": "{{ ([1] * 10**6)|length }}",
    "power": "{{ 10 ** 100000 }}",
    "center": "{{ 'a'|center(10**6) }}",
    "center_literal": "{{ 'a'|center(1000000) }}",
    "indent": "{{ 'a\nb'|indent(1000000, true) }}",
    "percent": "{{ '%01000000d' % 1 }}",
    "format": "{{ '%01000000d'|format(1) }}",
}


@pytest.fixture
def service(tmp_path: Path) -> PDFService:
    return service_with(tmp_path, {
        **{f"{name}.html": source for name, source in EXPANSIVE.items()},
        "modest.html": "{{ '-' * 20 }} {{ 2 ** 64 }} {{ '%5.2f' % 3.14159 }} "
                       "{{ 'x'|center(9) }}"})


@pytest.mark.parametrize("name", sorted(EXPANSIVE))
def test_compiling_does_not_evaluate_expansive_constants(service, name) -> None:
    # The compiled Python source stays the size of the template: nothing was folded.
    code = service.env.compile(EXPANSIVE[name], raw=True)
    assert len(code) < 5_000, f"{name}: {len(code)} characters of compiled code"
    service.check_template(f"{name}.html")  # the submit-time check compiles it too


@pytest.mark.parametrize("name", ["repeat", "power", "center", "center_literal", "indent",
                                  "percent", "format"])
def test_rendering_refuses_huge_results(service, name) -> None:
    source = (EXPANSIVE[name].replace("10**6", "10**9").replace("100000", "10000000")
              .replace("1000000", "1000000000"))
    (service.templates_dir / f"{name}_big.html").write_text(source)
    with pytest.raises(TemplateSecurityError):
        service.render_html(f"{name}_big.html", {})


def test_modest_arithmetic_still_works(service) -> None:
    assert service.render_html("modest.html", {}) == (
        "-------------------- 18446744073709551616  3.14     x    ")
