"""Class 4, more cases (unit tests on the real renderer): no single step of a template
builds a string, list or number past the sandbox's limits, whatever method, filter or
operator it goes through, and a value built from repeated references is not turned into
text past ``MAX_TEMPLATE_TEXT``. Each case would build 20-200 million characters or items
if it were allowed (small enough to fail the test rather than the machine); refused, it
takes milliseconds. Time-only loops are left to the render's time limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdftasks.errors import TemplateSecurityError
from pdftasks.render import PDFService
from tests.security.conftest import service_with

#: A string of a million characters, and a list of twenty references to it.
S = "{% set s = 'x' * 1000000 %}"
REFS = "[" + ", ".join(["s"] * 20) + "]"


def doubling(start: str, step: str, times: int = 6) -> str:
    return (f"{{% set ns = namespace(v={start}) %}}{{% for i in range({times}) %}}"
            f"{{% set ns.v = {step} %}}{{% endfor %}}{{{{ ns.v|length }}}}")


AMPLIFIERS = {
    # str methods with widths or counts
    "ljust": "{{ 'a'.ljust(50000000)|length }}",
    "rjust": "{{ 'a'.rjust(50000000)|length }}",
    "center_method": "{{ 'a'.center(50000000)|length }}",
    "zfill": "{{ '1'.zfill(50000000)|length }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(50000)|length }}",
    "translate": "{{ ('a' * 100000).translate({97: 'x' * 1000})|length }}",
    "replace_method": "{{ ('a' * 1000).replace('a', 'b' * 50000)|length }}",
    "join_method": "{{ ('y' * 2000).join(range(100000)|map('string'))|length }}",
    # str.format and format_map: literal and nested widths
    "format_width": "{{ '{:>50000000}'.format(1)|length }}",
    "format_nested_width": "{{ '{:>{}}'.format(1, 50000000)|length }}",
    "format_map_width": "{{ '{a:>50000000}'.format_map({'a': 1})|length }}",
    "format_repeated_value": S + "{{ '{}'.format([s] * 50)|length }}",
    # % formatting: keys with nested parentheses, values with repeated references
    "percent_nested_key": "{{ ('%(a(b))50000000s' % {'a(b)': 'x'})|length }}",
    "percent_star": "{{ ('%*d' % (50000000, 1))|length }}",
    "percent_repeated_value": S + "{{ ('%s' % ([s, s, s, s, s] * 10,))|length }}",
    # filters
    "replace_filter": "{{ ('a' * 1000)|replace('', 'b' * 50000)|length }}",
    "join_filter_separator": "{{ range(100000)|join('y' * 500)|length }}",
    "join_filter_items": S + "{{ " + REFS + "|join|length }}",
    "indent_text_width": "{{ ('\n' * 1000)|indent('z' * 50000, blank=true)|length }}",
    "wordwrap_wrapstring": "{{ ('a ' * 1000)|wordwrap(1, wrapstring='w' * 50000)|length }}",
    "batch_fill": "{{ ([1]|batch(50000000, 0)|first)|length }}",
    "slice_count": "{{ ([1]|slice(50000000))|list|length }}",
    "string_of_references": S + "{{ " + REFS + "|string|length }}",
    "tojson_of_references": S + "{{ " + REFS + "|tojson|length }}",
    "upper_of_references": S + "{{ " + REFS + "|upper|length }}",
    "sum_of_strings": S + "{{ " + REFS + "|sum(start='')|length }}",
    # repetition of a list whose items are large
    "repeat_list_of_large": "{{ (['x' * 1000000] * 50)|length }}",
    # growth by doubling: concatenation, addition, list methods
    "concat_doubling": doubling("'a' * 1000000", "ns.v ~ ns.v"),
    "add_doubling": doubling("['a'] * 1000000", "ns.v + ns.v"),
    "extend_doubling": ("{% set l = ['x'] %}{% for i in range(26) %}{{ l.extend(l) or '' }}"
                        "{% endfor %}{{ l|length }}"),
    "concat_of_references": S + "{{ ('' ~ " + REFS + ")|length }}",
    "print_references": S + "{{ " + REFS + " }}",
    # integers: repeated squaring (C code, which a soft time limit cannot interrupt)
    "int_squaring": doubling("10**3000", "ns.v * ns.v", 16).replace(
        "ns.v|length", "ns.v.bit_length()"),
    # Jinja's globals
    "lipsum": "{{ lipsum(100000)|length }}",
    # Markup (|safe, |e, macros, blocks): its methods are Python's, checked the same way
    "markup_ljust": "{{ ('a'|safe).ljust(50000000)|length }}",
    "markup_replace": "{{ (('a' * 100000)|safe).replace('a', 'b' * 1000)|length }}",
    "markup_join": S + "{{ ('|'|safe).join(" + REFS + ")|length }}",
    # containers that print what they hold
    "namespace_print": S + "{% set ns = namespace(v=" + REFS + ") %}{{ ns }}",
    "dict_values_print": S + "{% set d = {'k': " + REFS + "} %}{{ d.values() }}",
    # the same field or key many times
    "percent_same_key": S + "{{ (('%(a)s' * 100) % {'a': s})|length }}",
    "format_same_field": S + "{{ ('{a}' * 100).format(a=s)|length }}",
    "format_filter_same_key": S + "{{ ('%(a)s' * 100)|format(a=s)|length }}",
    "format_newline_fill": "{{ '{:\n>50000000}'.format('a')|length }}",
    # widths that multiply by the number of lines, tables of the same kind
    "indent_width_lines": "{{ ('\n' * 1000)|indent(100000, blank=true)|length }}",
    "translate_list_table": "{{ ('a' * 100000).translate(['y' * 1000] * 98)|length }}",
    # bytes: refused outright
    "to_bytes": "{{ (0).to_bytes(50000000, 'big')|length }}",
    "encode": "{{ 'a'.encode()|length }}",
}


#: A template that uses what the limits check, the usual way.
USUAL = (
    "{% set cols = [] %}{% for k in data %}{% set _ = cols.append(k|upper) %}{% endfor %}"
    "{{ cols|join(', ') }}|{{ '{:>8.2f}'.format(3.14159) }}|{{ '%(n)05d' % {'n': 42} }}|"
    "{{ 'x'.ljust(3, '.') }}|{{ rows|map(attribute='name')|join('/') }}|"
    "{{ rows|tojson|length > 10 }}|{{ 'a\tb'.expandtabs(4) }}|{{ 'ab'.replace('b', 'cd') }}|"
    "{{ ('x' ~ 1 ~ rows|length) }}|{{ [1, 2] + [3] }}|{{ 2 ** 64 * 3 }}|"
    "{{ 'hello world'|wordwrap(5) }}|{{ [1, 2, 3]|batch(2)|list }}|"
    "{{ lipsum(1, false, 3, 5)|length > 0 }}")


@pytest.fixture
def service(tmp_path: Path) -> PDFService:
    return service_with(tmp_path, {**{f"{name}.html": source
                                      for name, source in AMPLIFIERS.items()},
                                   "usual.html": USUAL})


@pytest.mark.parametrize("name", sorted(AMPLIFIERS))
def test_amplifiers_are_refused(service, name) -> None:
    with pytest.raises(TemplateSecurityError):
        service.render_html(f"{name}.html", {})


def test_usual_templates_still_render(service) -> None:
    html = service.render_html("usual.html", {
        "data": {"a": 1, "b": 2},
        "rows": [{"name": f"n{i}"} for i in range(3)],
    })
    assert html == (
        "A, B|    3.14|00042|x..|n0/n1/n2|True|a   b|acd|x13|[1, 2, 3]|"
        "55340232221128654848|hello\nworld|[[1, 2], [3]]|True")


def test_large_job_data_is_not_refused(service) -> None:
    # Data at the submit limits (5 MiB of JSON) is printed, joined and serialised whole.
    rows = [{"name": "n" * 40, "value": i} for i in range(60_000)]
    (service.templates_dir / "large.html").write_text(
        "{{ rows|map(attribute='name')|join(',')|length }} {{ rows|tojson|length > 0 }} "
        "{{ rows|length }}")
    assert service.render_html("large.html", {"rows": rows}) == "2459999 True 60000"


def test_formatting_large_data_prints_each_field_once(service) -> None:
    # A mapping prints the values its keys name (not the whole mapping per field); a
    # tuple prints each value once.
    rows = ["r" * 1000] * 4600  # 4.6 MB of data beside the fields
    (service.templates_dir / "fields.html").write_text(
        "{{ '%(title)s / %(number)s' % d }}|{{ ('%s|%s|%s|%s' % (a, a, a, a))|length }}|"
        "{{ '%(title)s'|format(**d) }}")
    html = service.render_html("fields.html", {"d": {"title": "Report", "number": 42,
                                                     "rows": rows}, "a": "a" * 1_000_000})
    assert html == "Report / 42|4000003|Report"
