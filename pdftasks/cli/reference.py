"""The command-line reference (Markdown) generated from the click commands, for the docs
site: it cannot drift from what ``pdftasks --help`` says."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import click


def iter_commands(group: click.Group | None = None,
                  prefix: str = "pdftasks") -> Iterator[tuple[str, click.Command]]:
    """Every command under ``group`` (default: ``pdftasks``) with its full name, sorted."""
    if group is None:
        from pdftasks.cli import main

        group = main
    ctx = click.Context(group, info_name=prefix)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from iter_commands(command, f"{prefix} {name}")


def undocumented() -> list[str]:
    """Commands without a help text, and options without one (``--help`` aside)."""
    missing = []
    for name, command in iter_commands():
        if not (command.help or "").strip():
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"{name} {'/'.join(param.opts)}")
    return missing


def _escape(text: str) -> str:
    """Help text as Markdown text: ``<key>`` stays visible instead of becoming a tag."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _option_row(param: click.Option) -> str:
    names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    if not param.is_flag and param.metavar:
        names += f" `{param.metavar}`"
    elif not param.is_flag and isinstance(param.type, click.Choice):
        names += " " + ", ".join(f"`{c}`" for c in param.type.choices)
    elif not param.is_flag and param.type.name not in ("text", "boolean"):
        names += f" {param.type.name.upper()}"
    default = ""
    if param.show_default and param.default is not None and not param.is_flag:
        default = f" (default `{param.default}`)"
    text = _escape(" ".join((param.help or "").split())).replace("|", "\\|")
    return f"| {names} | {text}{default} |"


def cli_reference() -> str:
    """Markdown: for each command its usage line, help text and options table."""
    out: list[str] = []
    for name, command in iter_commands():
        ctx = click.Context(command, info_name=name)
        usage = " ".join(command.collect_usage_pieces(ctx))
        out += [f"### `{name}`", "", "```", f"{name} {usage}", "```", ""]
        help_text = inspect.cleandoc((command.help or "").split("\f")[0])
        out += [_escape(help_text), ""]
        options = [p for p in command.params if isinstance(p, click.Option)]
        if options:
            out += ["| option | meaning |", "|---|---|"]
            out += [_option_row(p) for p in options]
            out.append("")
    return "\n".join(out)
