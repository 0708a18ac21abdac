"""The template sandbox: Jinja's ``SandboxedEnvironment`` with limits on what a template
may compute, and a loader that reads only files inside the templates directory."""

from __future__ import annotations

import functools
import inspect
import math
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup

from pdftasks.errors import TemplateSecurityError, UnsafePathError


class UnusableNameError(UnsafePathError):
    """A name no file can have (too long, not valid Unicode): no such file, not an escape."""


#: Longest file name and path the file systems pdftasks runs on take, in bytes.
_NAME_MAX, _PATH_MAX = 255, 4096


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
    try:
        encoded = os.fsencode(name)
    except UnicodeError:  # a lone surrogate: no file has that name
        raise UnusableNameError(f"{kind} {name!r} is not a usable file name") from None
    if len(encoded) > _PATH_MAX or any(len(part) > _NAME_MAX for part in encoded.split(b"/")):
        # What the file system would refuse with ENAMETOOLONG, wherever it is used.
        raise UnusableNameError(f"{kind} {name[:40]!r}… is too long for a file name")
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise UnsafePathError(f"{kind} {name!r} resolves outside the templates directory")
    return path


#: Largest result of ``*`` on a string or list in a template, in characters or items.
MAX_TEMPLATE_SEQUENCE = 1_000_000
#: Largest string, list or dict a template may build, and the most text a value may hold
#: when a template prints it or turns it into text (``~``, ``%``, ``format``, ``join``,
#: ``tojson``, ``string``...), in characters or items. Counted with repeated references
#: (a list holding one string 200 times holds 200 times its text). Job data is smaller
#: (``PDFTASKS_MAX_DATA_BYTES``, 5 MiB by default), so no template that prints its data
#: reaches it.
MAX_TEMPLATE_TEXT = 16_000_000
#: Largest integer ``**`` or ``*`` may produce in a template, in bits (about 3,000 digits).
MAX_TEMPLATE_POWER_BITS = 10_000
#: Largest field width or precision in a template's ``%`` or ``format`` formatting.
MAX_TEMPLATE_FORMAT_WIDTH = 10_000
#: Most paragraphs, and words per paragraph, of ``lipsum()`` in a template.
MAX_TEMPLATE_LIPSUM = 1_000


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
        except UnusableNameError:
            raise jinja2.TemplateNotFound(template) from None  # `ignore missing` works
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


def _too_big(what: str, limit: int) -> SecurityError:
    return SecurityError(f"the template {what}: more than {limit:,}")


#: Views of a dict (``d.items()``…): they print what they hold.
_VIEWS: tuple[type[Any], ...] = (type({}.keys()), type({}.values()), type({}.items()))


def text_size(value: Any, limit: int = MAX_TEMPLATE_TEXT) -> int:
    """About how many characters ``value`` holds as text (strings by length, containers by
    their items and everything in them, counted again for each reference), stopping as
    soon as it passes ``limit``: the walk takes at most ``limit`` steps, and cycles end."""
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, _VIEWS):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, Namespace):
            return limit + 1  # a namespace prints all it holds: never turned into text
        else:
            total += 1  # other objects print a short representation
        if total > limit:
            return total
    return total


def check_text(*values: Any) -> None:
    """Refuse turning ``values`` into more than ``MAX_TEMPLATE_TEXT`` characters of text."""
    total = 0
    for value in values:
        total += len(value) if isinstance(value, str) \
            else text_size(value, MAX_TEMPLATE_TEXT - total)
        if total > MAX_TEMPLATE_TEXT:
            raise _too_big("turns a value into text", MAX_TEMPLATE_TEXT)


_T = TypeVar("_T")


#: Types of results that need no size check (the common ones first).
_SCALARS = frozenset({int, float, bool, type(None)})
_SIZED = frozenset({str, Markup, list, tuple, dict, set, bytes})


def check_result(value: _T) -> _T:
    """``value``, or a refusal when it is a string or container past ``MAX_TEMPLATE_TEXT``."""
    sized: Any = value
    kind = type(sized)
    if kind in _SCALARS:
        return value
    if (kind in _SIZED or isinstance(sized, str | bytes | list | tuple | dict | set)) \
            and len(sized) > MAX_TEMPLATE_TEXT:
        raise _too_big(f"builds a {kind.__name__} of {len(sized):,} items",
                       MAX_TEMPLATE_TEXT)
    return value


def _check_output(value: Any) -> Any:
    # Every ``{{ … }}`` of a template (the environment's ``finalize``).
    kind = type(value)
    if kind is str or kind is Markup:
        if len(value) > MAX_TEMPLATE_TEXT:
            check_result(value)
    elif kind not in _SCALARS:
        check_text(value)
    return value


def _check_width(value: Any, limit: int = MAX_TEMPLATE_SEQUENCE) -> None:
    if isinstance(value, int) and value > limit:
        raise _too_big(f"asks for a width of {value}", limit)


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    grows = len(new) - len(old)
    if grows <= 0:
        return
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    if len(text) + times * grows > MAX_TEMPLATE_TEXT:
        raise _too_big("replaces into a text", MAX_TEMPLATE_TEXT)


def _joined(items: Any, separator: Any) -> list[Any]:
    # The items of a join, as a list, once their text and the separators fit.
    listed = list(items)
    sep = len(separator) if isinstance(separator, str) else 0
    if text_size(listed) + sep * max(len(listed) - 1, 0) > MAX_TEMPLATE_TEXT:
        raise _too_big("joins a text", MAX_TEMPLATE_TEXT)
    return listed


def check_format(text: str) -> None:
    """Refuse ``%`` formatting with a field width or precision past
    ``MAX_TEMPLATE_FORMAT_WIDTH``, or taken from the arguments (``*``). Keys in parentheses
    are skipped the way Python reads them (nested parentheses included)."""
    if "*" not in text and not _LONG_NUMBER.search(text):
        return  # no width can pass the limit
    _percent_fields(text, check_widths=True)


def _percent_fields(text: str, check_widths: bool = False) -> list[str | None]:
    """The key of each field of ``%`` formatting in ``text`` (None: no key), read as Python
    reads them; with ``check_widths``, refuse widths as ``check_format``."""
    keys: list[str | None] = []
    i, n = 0, len(text)
    while True:
        i = text.find("%", i)
        if i < 0 or i + 1 >= n:
            return keys
        i += 1
        if text[i] == "%":
            i += 1
            continue
        key = None
        if text[i] == "(":
            depth, start = 0, i + 1
            while i < n:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
                if depth == 0:
                    break
            key = text[start:i - 1]
        keys.append(key)
        if not check_widths:
            continue
        while i < n and text[i] in "-#0 +":
            i += 1
        for part in ("width", "precision"):
            if part == "precision":
                if i >= n or text[i] != ".":
                    break
                i += 1
            if i < n and text[i] == "*":
                raise SecurityError("the template formats with a field width taken from "
                                    "its arguments (*)")
            start = i
            while i < n and text[i].isdigit():
                i += 1
            _check_width(int(text[start:i] or 0), MAX_TEMPLATE_FORMAT_WIDTH)


def check_percent(text: str, values: Any) -> None:
    """Refuse ``text % values`` (the operator, the ``format`` filter) when its widths are
    too large or what it prints passes ``MAX_TEMPLATE_TEXT``: with a mapping, each
    ``%(key)s`` prints its value again; otherwise each value is printed once."""
    check_format(text)
    if isinstance(values, Mapping):
        total = len(text)
        for key in _percent_fields(text):
            value = values.get(key) if key is not None else values
            total += text_size(value, MAX_TEMPLATE_TEXT - total + 1)
            if total > MAX_TEMPLATE_TEXT:
                raise _too_big("formats a text", MAX_TEMPLATE_TEXT)
    elif "%" in text:
        check_text(text, values)


_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?", re.DOTALL)


#: A number with as many digits as the width limit: the only way to write a width past it.
_LONG_NUMBER = re.compile(rf"\d{{{len(str(MAX_TEMPLATE_FORMAT_WIDTH))}}}")


def _check_format_spec(spec: str) -> None:
    if not spec or not _LONG_NUMBER.search(spec):
        return
    match = _FORMAT_SPEC.match(spec)
    if match:
        for number in match.groups():
            _check_width(int(number or 0), MAX_TEMPLATE_FORMAT_WIDTH)


class _CheckedFormatter(SandboxedFormatter):
    """``str.format`` and ``format_map`` in a template: Jinja's sandboxed formatter, with
    each field's width (after nested fields are filled in) and its value's text checked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        if not isinstance(value, str | int | float):
            check_text(value)
        text = super().format_field(value, format_spec)
        self.written += len(text)  # the same field many times: counted each time
        if self.written > MAX_TEMPLATE_TEXT:
            raise _too_big("formats a text", MAX_TEMPLATE_TEXT)
        return text


class _CheckedEscapeFormatter(_CheckedFormatter, SandboxedEscapeFormatter):
    pass


def _checked_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    for value in (n, min, max):
        _check_width(value, MAX_TEMPLATE_LIPSUM)
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


#: Filters that take a whole list or object and do not turn it into text: their input is
#: not walked (``length`` of a large list of data stays cheap).
_STRUCTURE_FILTERS = frozenset({
    "abs", "attr", "batch", "boolean", "count", "d", "default", "dictsort", "first",
    "float", "groupby", "int", "items", "join", "last", "length", "list", "map", "max",
    "min", "random", "reject", "rejectattr", "reverse", "round", "select", "selectattr",
    "slice", "sort", "sum", "unique",
})


def _filter_checks(name: str, bound: dict[str, Any]) -> None:
    """Refuse a filter call whose result would be too large, before it runs."""
    if name == "center":
        _check_width(bound.get("width"))
    elif name == "indent":
        width = bound.get("width")
        text = bound.get("s")
        _check_width(width)
        size = len(width) if isinstance(width, str) else width \
            if isinstance(width, int) else 0
        if isinstance(text, str) and \
                len(text) + size * (text.count("\n") + 1) > MAX_TEMPLATE_TEXT:
            raise _too_big("indents a text", MAX_TEMPLATE_TEXT)
    elif name == "wordwrap":
        text, wrap = bound.get("s"), bound.get("wrapstring")
        width = bound.get("width", 79)
        if isinstance(text, str) and isinstance(wrap, str) and isinstance(width, int):
            lines = len(text) // max(width, 1) + len(text.split()) + 1
            if len(text) + len(wrap) * lines > MAX_TEMPLATE_TEXT:
                raise _too_big("wraps a text", MAX_TEMPLATE_TEXT)
    elif name == "replace":
        _check_replace(bound.get("s"), bound.get("old"), bound.get("new"),
                       bound.get("count"))
    elif name in ("batch", "slice"):
        _check_width(bound.get("linecount", bound.get("slices")))
    elif name == "format":
        args, kwargs = bound.get("args", ()), bound.get("kwargs", {})
        if isinstance(bound.get("value"), str):
            check_percent(bound["value"], kwargs or args)  # as do_format: kwargs or args
        else:
            check_text(args, kwargs)
    elif name == "sum" and isinstance(bound.get("start"), str | list | tuple):
        check_text(bound.get("iterable"))


#: Filters with their own checks in ``_filter_checks`` (their arguments are bound by name).
_CHECKED_FILTERS = frozenset({"center", "indent", "wordwrap", "replace", "batch", "slice",
                              "format", "sum"})


def _runtime_only(name: str, func: Any) -> Any:
    """``func`` as a filter Jinja never calls while compiling (a ``pass_context`` filter is
    not constant-folded): ``{{ 'a'|center(10**9) }}`` waits for the render and its limits,
    which it checks before the call (``_filter_checks``) and on its result."""
    how = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    if how == "context":
        return func
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None
    # Jinja's async-capable filters show the signature of their plain variant, which may
    # not take the context argument the filter is called with.
    first = next(iter(signature.parameters), "") if signature is not None else ""
    binds_passed = first in ("eval_ctx", "environment", "env")
    checked = name in _CHECKED_FILTERS and signature is not None
    walks_input = name not in _STRUCTURE_FILTERS

    @jinja2.pass_context
    def filter_(context: Any, *args: Any, **kwargs: Any) -> Any:
        if walks_input and args and type(args[0]) in _CONTAINERS:
            check_text(args[0])  # the filter turns it into text
        if name == "join" and args:
            args = (_joined(args[0], _join_separator(args, kwargs)), *args[1:])
        if checked:
            _check_filter_call(args, kwargs)
        if how == "eval_context":
            return check_result(func(context.eval_ctx, *args, **kwargs))
        if how == "environment":
            return check_result(func(context.environment, *args, **kwargs))
        return check_result(func(*args, **kwargs))

    def _check_filter_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert signature is not None
        try:
            bound = dict(signature.bind_partial(*((None, *args) if binds_passed else args),
                                                **kwargs).arguments)
        except TypeError:
            return  # the call itself raises the TypeError
        if binds_passed:
            bound.pop(first, None)
        _filter_checks(name, bound)

    filter_.__name__ = getattr(func, "__name__", "filter")
    return filter_


#: Containers whose text a filter that turns its input into text would make.
_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})


def _join_separator(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("d", "")


class _CheckedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with the operands of ``~`` checked before they are turned
    into text and joined (``LimitedSandbox.concat_operands``)."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.concat_result({func_name}(environment.concat_operands((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))))")


#: ``str`` methods whose integer arguments are output widths.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
#: Methods that make bytes, whose own methods and ``%`` would need every check again.
_BYTES_METHODS = frozenset({"encode", "to_bytes"})


class LimitedSandbox(SandboxedEnvironment):
    """Jinja's sandbox, refusing results that would take the process's time or memory:
    ``*`` on strings and lists past ``MAX_TEMPLATE_SEQUENCE``; anything that builds a
    string, list or dict past ``MAX_TEMPLATE_TEXT`` or turns a value of more text than that
    into text (``+``, ``~``, ``%``, printing, filters, ``str`` methods such as ``replace``,
    ``join``, ``ljust``, ``expandtabs`` and ``translate``, list and dict methods that grow
    their object); ``**`` and ``*`` on integers past ``MAX_TEMPLATE_POWER_BITS``; widths
    past ``MAX_TEMPLATE_FORMAT_WIDTH`` in ``%`` and ``format``; ``lipsum()`` past
    ``MAX_TEMPLATE_LIPSUM``. These operators, calls and all filters are evaluated only when
    rendering (never folded while compiling), so compiling a template is bounded by its
    size, wherever it happens; the render's time and memory limits stay behind them."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CheckedCodeGenerator

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("finalize", _check_output)
        super().__init__(**kwargs)
        self.filters = {name: _runtime_only(name, f) for name, f in self.filters.items()}
        self.globals["lipsum"] = _checked_lipsum

    #: The result of ``~`` (escaping may have grown it).
    concat_result = staticmethod(check_result)

    @staticmethod
    def concat_operands(operands: tuple[Any, ...]) -> tuple[Any, ...]:
        """The operands of ``~``, once the text they make fits ``MAX_TEMPLATE_TEXT``."""
        check_text(*operands)
        return operands

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            self._check_multiply(left, right)
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple) \
                    and len(left) + len(right) > MAX_TEMPLATE_TEXT:
                raise _too_big("adds sequences", MAX_TEMPLATE_TEXT)
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                    and right * math.log2(abs(left)) > MAX_TEMPLATE_POWER_BITS:
                raise SecurityError("the template raises a number to a power whose result "
                                    f"has more than {MAX_TEMPLATE_POWER_BITS} bits")
        elif operator == "%" and isinstance(left, str | bytes):
            check_percent(left.decode("latin-1") if isinstance(left, bytes) else left, right)
        return check_result(super().call_binop(context, operator, left, right))

    @staticmethod
    def _check_multiply(left: Any, right: Any) -> None:
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple | bytes) and isinstance(n, int):
                if len(seq) * n > MAX_TEMPLATE_SEQUENCE:
                    raise SecurityError(
                        f"the template repeats a sequence {n} times: more than "
                        f"{MAX_TEMPLATE_SEQUENCE} items")
                if isinstance(seq, list | tuple) and n > 1 \
                        and text_size(seq, MAX_TEMPLATE_TEXT // n + 1) * n > MAX_TEMPLATE_TEXT:
                    raise _too_big(f"repeats {n} times a list whose text", MAX_TEMPLATE_TEXT)
        if isinstance(left, int) and isinstance(right, int) \
                and left.bit_length() + right.bit_length() > MAX_TEMPLATE_POWER_BITS:
            raise SecurityError("the template multiplies numbers whose product has more "
                                f"than {MAX_TEMPLATE_POWER_BITS} bits")

    def wrap_str_format(self, value: Any) -> Any:
        # Jinja's own wrapper of ``str.format``/``format_map``, with the checked formatter.
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) \
                or value.__name__ not in ("format", "format_map"):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            # A formatter per call: it counts what this call writes (a template module's
            # wrapper may be shared by renders in several threads).
            formatter = (_CheckedEscapeFormatter(self, escape=text.escape)
                         if isinstance(text, Markup) else _CheckedFormatter(self))
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            formatted: str = type(text)(formatter.vformat(text, args, kwargs))
            return check_result(formatted)

        return functools.update_wrapper(wrapper, value)

    def call(__self, __context: Any, __obj: Any, *args: Any,  # noqa: N805
             **kwargs: Any) -> Any:
        kind = type(__obj)
        if kind is not types.BuiltinMethodType and not (
                kind is types.MethodType and isinstance(__obj.__self__, str)):
            # Macros (their output is checked piece by piece), ``str.format`` (wrapped,
            # checked), Jinja's globals (``range``, ``lipsum`` limited; the others small).
            return super().call(__context, __obj, *args, **kwargs)
        owner = __obj.__self__  # a str (or Markup: its methods are Python's), list, int…
        name = __obj.__name__
        if name in _BYTES_METHODS:
            raise SecurityError(f"the template calls {name}(): templates work with text, "
                                "not bytes")
        if isinstance(owner, str):
            args = __self._check_str_method(owner, name, args, kwargs)
        result = check_result(super().call(__context, __obj, *args, **kwargs))
        if isinstance(owner, list | dict | set):  # append, extend, update… grew it
            check_result(owner)
        return result

    @staticmethod
    def _check_str_method(text: str, name: str, args: tuple[Any, ...],
                          kwargs: dict[str, Any]) -> tuple[Any, ...]:
        values = [*args, *kwargs.values()]
        if name in _WIDTH_METHODS:
            for value in values:
                _check_width(value)
        elif name == "expandtabs":
            size = next((v for v in values if isinstance(v, int)), 8)
            if "\t" in text and len(text) * max(size, 1) > MAX_TEMPLATE_TEXT:
                raise _too_big("expands the tabs of a text", MAX_TEMPLATE_TEXT)
        elif name == "replace" and len(values) >= 2:
            _check_replace(text, values[0], values[1], values[2] if len(values) > 2 else -1)
        elif name == "join" and args:
            args = (_joined(args[0], text), *args[1:])
        elif name == "translate" and args and isinstance(args[0], dict | list | tuple):
            table = args[0].values() if isinstance(args[0], dict) else args[0]
            longest = max((len(v) for v in table if isinstance(v, str)), default=1)
            if len(text) * longest > MAX_TEMPLATE_TEXT:
                raise _too_big("translates a text", MAX_TEMPLATE_TEXT)
        return args
