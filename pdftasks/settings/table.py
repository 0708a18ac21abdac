"""The settings reference table, generated from the topic models
(``python -m pdftasks.settings --markdown``, ``--write docs/reference/settings.md``,
``--check docs/reference/settings.md``).

A topic is one or more sections of the table (``table_title``, then ``table_sections``
starting at a field); rows follow the order of the topic's fields, with its
``other_variables`` after the field they name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pdftasks.settings.base import ENV_PREFIX, TopicModel
from pdftasks.settings.model import TOPICS, Settings

TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


def _sections(topic: type[TopicModel]) -> list[tuple[str, tuple[str, ...]]]:
    """The table sections of ``topic``: (title, names of its variables after the prefix)."""
    others = {o.after: o.name for o in topic.other_variables}
    stray = sorted(set(others) - set(topic.model_fields))
    starts = sorted(set(topic.table_sections) - set(topic.model_fields))
    if stray or starts or not topic.table_title:
        raise ValueError(f"{topic.__name__}: no table_title, or unknown fields {stray + starts}")
    sections: list[tuple[str, list[str]]] = []
    for i, name in enumerate(topic.model_fields):
        if i == 0 or name in topic.table_sections:
            sections.append((topic.table_sections.get(name, topic.table_title), []))
        sections[-1][1].append(name)
        if name in others:
            sections[-1][1].append(others[name])
    return [(title, tuple(names)) for title, names in sections]


#: Sections of the table: (title, names); every field is in exactly one.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    section for topic in TOPICS for section in _sections(topic))

#: Variables read outside ``Settings`` (name after the prefix: default, description).
OTHER_VARIABLES: dict[str, tuple[str, str]] = {
    o.name: (o.default, o.description) for topic in TOPICS for o in topic.other_variables}


def _shown_default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "unset"
    if value in ("", []):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Path) and not value.is_absolute():
        return f"`./{value}`"
    return f"`{value}`"


def settings_table() -> str:
    """The settings tables (Markdown), generated from the fields of ``Settings``."""
    names = [n for _, group in GROUPS for n in group if n not in OTHER_VARIABLES]
    if sorted(names) != sorted(Settings.model_fields):
        raise ValueError("the topic models' fields and Settings' differ: "
                         f"{sorted(set(names) ^ set(Settings.model_fields))}")
    undocumented = sorted(n for n, f in Settings.model_fields.items() if not f.description)
    if undocumented:
        raise ValueError(f"settings without a description: {undocumented}")
    out: list[str] = []
    for title, group in GROUPS:
        out += [f"**{title}**", "", "| variable | default | meaning |", "|---|---|---|"]
        for name in group:
            if name in OTHER_VARIABLES:
                default, description = OTHER_VARIABLES[name]
            else:
                field = Settings.model_fields[name]
                default, description = _shown_default(field), field.description or ""
            cells = [f"`{ENV_PREFIX}{name.upper()}`", default, description]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the settings-table markers regenerated."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"no {TABLE_START} … {TABLE_END} markers")
    head = readme[:start + len(TABLE_START)]
    return f"{head}\n{settings_table()}{readme[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pdftasks.settings",
        description="Print the settings table, or update/check it in a Markdown file.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--markdown", action="store_true", help="print the table")
    what.add_argument("--write", metavar="FILE", help="regenerate the table in FILE")
    what.add_argument("--check", metavar="FILE", help="exit 1 if FILE's table is stale")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(settings_table())
        return 0
    path = Path(args.write or args.check)
    text = path.read_text(encoding="utf-8")
    new = readme_with_table(text)
    if args.check:
        if new != text:
            print(f"{path}: settings table is stale; run python -m pdftasks.settings "
                  f"--write {path}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    return 0
