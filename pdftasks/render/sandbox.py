"""The template sandbox: Jinja's ``SandboxedEnvironment`` with limits on what a template
may compute, and a loader that reads only files inside the templates directory."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from pdftasks.errors import TemplateSecurityError, UnsafePathError


def resolve_inside(root: Path, name: object, kind: str) -> Path:
    """Resolve a relative ``name`` under ``root``; refuse absolute paths, ``..`` and escapes."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{kind} must be a non-empty string")
    if "\x00" in name or "\\" in name:
        raise UnsafePathError(f"{kind} {name!r} contains a forbidden character")
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafePathError(f"{kind} {name!r} must be relative to the templates directory")
    if ".." in Path(name).parts:
        raise UnsafePathError(f"{kind} {name!r} must not contain '..'")
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise UnsafePathError(f"{kind} {name!r} resolves outside the templates directory")
    return path


#: Largest result of ``*`` on a string or list in a template, in characters or items.
MAX_TEMPLATE_SEQUENCE = 1_000_000
#: Largest integer ``**`` may produce in a template, in bits (about 3,000 digits).
MAX_TEMPLATE_POWER_BITS = 10_000
#: Largest field width or precision in a template's ``%`` formatting.
MAX_TEMPLATE_FORMAT_WIDTH = 10_000
_FORMAT_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class ConfinedLoader(jinja2.BaseLoader):
    """Loads templates (the job's and every ``include``, ``import``, ``extends`` and
    ``from``) only from files inside ``root`` once symlinks are resolved, the way the URL
    fetcher resolves files; anything else is ``TemplateSecurityError``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Any]:
        try:
            path = resolve_inside(self.root, template, "template")
        except UnsafePathError as exc:
            raise TemplateSecurityError(str(exc)) from None
        try:
            mtime = path.stat().st_mtime_ns
            if not path.is_file():
                raise jinja2.TemplateNotFound(template)
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise jinja2.TemplateNotFound(template) from exc

        def uptodate() -> bool:
            try:
                return path.stat().st_mtime_ns == mtime
            except OSError:
                return False

        return source, str(path), uptodate

    def list_templates(self) -> list[str]:
        names = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), self.root)
                names.append(rel.replace(os.sep, "/"))
        return sorted(names)


def _runtime_only(func: Any) -> Any:
    """``func`` as a filter Jinja never calls while compiling (a ``pass_context`` filter is
    not constant-folded): ``{{ 'a'|center(10**9) }}`` waits for the render and its limits."""
    how = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    if how == "context":
        return func

    name = getattr(func, "__name__", "")

    @jinja2.pass_context
    def filter_(context: Any, *args: Any, **kwargs: Any) -> Any:
        if name in _WIDTH_FILTERS:
            _check_widths(args[1:], kwargs.values())
        elif name == "do_format" and args and isinstance(args[0], str):
            _check_format(args[0])
        if how == "eval_context":
            return func(context.eval_ctx, *args, **kwargs)
        if how == "environment":
            return func(context.environment, *args, **kwargs)
        return func(*args, **kwargs)

    filter_.__name__ = getattr(func, "__name__", "filter")
    return filter_


#: Filters whose integer arguments are output widths (``center``, ``indent``).
_WIDTH_FILTERS = frozenset({"do_center", "do_indent"})


def _check_widths(*groups: Any) -> None:
    for group in groups:
        for value in group:
            if isinstance(value, int) and value > MAX_TEMPLATE_SEQUENCE:
                raise SecurityError(f"the template asks for a width of {value}: more than "
                                    f"{MAX_TEMPLATE_SEQUENCE}")


def _check_format(text: str) -> None:
    for width, precision in _FORMAT_WIDTHS.findall(text):
        for n in (width, precision):
            if n == "*" or (n and int(n) > MAX_TEMPLATE_FORMAT_WIDTH):
                raise SecurityError("the template formats with a field width above "
                                    f"{MAX_TEMPLATE_FORMAT_WIDTH}")


class LimitedSandbox(SandboxedEnvironment):
    """Jinja's sandbox, refusing results that would take the process's time or memory:
    ``*`` on strings and lists past ``MAX_TEMPLATE_SEQUENCE``, ``**`` past
    ``MAX_TEMPLATE_POWER_BITS``, ``%`` formatting with huge widths. These operators and all
    filters are evaluated only when rendering (never folded while compiling), so compiling
    a template is bounded by its size, wherever it happens."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = {name: _runtime_only(f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple | bytes) and isinstance(n, int) \
                        and len(seq) * n > MAX_TEMPLATE_SEQUENCE:
                    raise SecurityError(
                        f"the template repeats a sequence {n} times: more than "
                        f"{MAX_TEMPLATE_SEQUENCE} items")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                    and right * math.log2(abs(left)) > MAX_TEMPLATE_POWER_BITS:
                raise SecurityError("the template raises a number to a power whose result "
                                    f"has more than {MAX_TEMPLATE_POWER_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)
