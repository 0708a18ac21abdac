"""The renderer: sandboxed Jinja2 + WeasyPrint + a URL fetcher that reads only template assets.

Knows nothing about Celery. One ``PDFService`` per process keeps compiled templates, parsed
stylesheets and WeasyPrint's font configuration across jobs.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import math
import os
import re
import resource
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from pdftasks.errors import (
    MissingVariableError,
    PdfTasksError,
    RenderError,
    RenderMemoryError,
    RenderTimeoutError,
    TemplateNotFoundError,
    TemplateSecurityError,
    TemplateSyntaxError,
    UnsafePathError,
    UnsafeResourceError,
)
from pdftasks.limits import MAX_DATA_BYTES, DataLimits, check_data
from pdftasks.settings import Settings, get_settings
from pdftasks.storage import check_output_filename, make_storage

log = logging.getLogger(__name__)

_WARMUP_HTML = "<html><body><p>pdftasks warm-up 0123456789</p></body></html>"


@dataclass(frozen=True)
class PDFServiceConfig:
    """Where templates come from and where PDFs go (the guide's ``PDFServiceConfig``).

    Attributes:
        templates_dir: Templates, their CSS and assets (images, fonts). Nothing outside it
            is read.
        output_dir: Generated PDFs. Nothing outside it is written.
        allowed_url_prefixes: http(s) URL prefixes a template may fetch; empty = no network.
        max_data_bytes: Largest JSON data of one job, in bytes.
        data_limits: Depth, key, list and string limits of job data (None: the defaults,
            with ``max_data_bytes``).
        storage: ``s3://bucket/prefix`` to write PDFs to S3 instead of ``output_dir``
            (region and endpoint from the ``PDFTASKS_AWS_*`` settings); ``""`` = the
            output directory; None (default) = ``PDFTASKS_STORAGE``.
    """

    templates_dir: str | os.PathLike[str] = "templates"
    output_dir: str | os.PathLike[str] = "output"
    allowed_url_prefixes: tuple[str, ...] = ()
    max_data_bytes: int = MAX_DATA_BYTES
    storage: str | None = None
    data_limits: DataLimits | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PDFServiceConfig:
        s = settings or get_settings()
        return cls(
            templates_dir=s.templates_dir,
            output_dir=s.output_dir,
            allowed_url_prefixes=s.url_prefixes,
            max_data_bytes=s.max_data_bytes,
            storage=s.storage,
            data_limits=DataLimits.from_settings(s),
        )

    from_env = from_settings


@dataclass
class RenderResult:
    """What one render produced. ``as_dict()`` is the task's return value."""

    path: str
    pages: int
    bytes: int
    duration_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


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


_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Percent-encoded '.', '/' and '\\' in a URL's path: refused, never decoded into a path.
_ENCODED_PATH_CHARS = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)


def _url_origin_path(url: str) -> tuple[tuple[str, str, int], str] | None:
    """``((scheme, host, port), path)`` of an http(s) URL with its path percent-decoded and
    its dot segments removed; None if it is not one, or has userinfo, a bad port,
    backslashes or encoded dots or slashes in its path."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if "\\" in parts.path or _ENCODED_PATH_CHARS.search(parts.path):
        return None
    path = unquote(parts.path) or "/"
    segments: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            if segments:
                segments.pop()
        elif seg != ".":
            segments.append(seg)
    if path.endswith(("/.", "/..")):
        segments.append("")
    return (scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]), "/" + "/".join(segments)


def allowed_url(url: str, prefixes: tuple[str, ...]) -> str | None:
    """The normalised form of ``url`` if an allow-listed prefix covers it, else None.

    Scheme, host and port must equal the prefix's; the path is compared after
    percent-decoding and dot-segment removal, segment by segment (``/allowed`` covers
    ``/allowed/x`` but not ``/allowed-x``). The normalised URL is what gets fetched.
    """
    target = _url_origin_path(url)
    if target is None:
        return None
    origin, path = target
    for prefix in prefixes:
        allowed = _url_origin_path(prefix)
        if allowed is None or allowed[0] != origin:
            continue
        base = allowed[1]
        if path == base or path.startswith(base if base.endswith("/") else base + "/"):
            query = urlsplit(url).query
            netloc = origin[1] if ":" not in origin[1] else f"[{origin[1]}]"
            if origin[2] != _DEFAULT_PORTS[origin[0]]:
                netloc += f":{origin[2]}"
            return urlunsplit((origin[0], netloc, quote(path), query, ""))
    return None


def redact_paths(text: str, roots: Mapping[str, Path]) -> str:
    """``text`` without this server's paths: each root (``{"templates": dir, ...}``) becomes
    its name, as a path or a ``file://`` URL, and any other ``file://`` URL its last part.
    For everything a client sees (job errors, webhooks, API error bodies)."""
    for name, root in sorted(roots.items(), key=lambda kv: -len(str(kv[1]))):
        root_str = str(root).rstrip("/")
        if len(root_str) <= 1:
            continue
        text = text.replace(Path(root_str).as_uri(), f"<{name}>").replace(root_str, f"<{name}>")
    return _FILE_URL.sub(lambda m: m.group(1).rsplit("/", 1)[-1], text)


_FILE_URL = re.compile(r"file://([^\s'\"<>)]*)")


class ResourceDenied(Exception):
    """Carries the refused URL out of WeasyPrint (wrapped in a fatal fetching error)."""


def _make_fetcher(roots: tuple[Path, ...], prefixes: tuple[str, ...]) -> Any:
    from weasyprint.urls import FatalURLFetchingError, URLFetcher

    class Denied(FatalURLFetchingError):
        pass

    class SafeURLFetcher(URLFetcher):
        """Serves ``data:`` URIs, files inside ``roots`` and allow-listed http(s) prefixes."""

        denied = Denied
        stylesheet_cache: _StylesheetCache | None = None

        def local_path(self, url: str) -> Path:
            """The file a ``file:`` URL names, if it may be read; else raise ``Denied``."""
            path = Path(url2pathname(urlsplit(url).path)).resolve()
            if any(path.is_relative_to(root) for root in roots) and path.is_file():
                return path
            raise Denied(f"refused to read {url}: only files inside the templates "
                         "directory can be used")

        def fetch(self, url: str, headers: Any = None) -> Any:
            scheme = url.split(":", 1)[0].lower()
            if self.stylesheet_cache is not None:
                self.stylesheet_cache.record(url)
            if scheme == "data":
                return super().fetch(url, headers)
            if scheme == "file":
                return super().fetch(self.local_path(url).as_uri(), headers)
            if scheme in ("http", "https"):
                normalised = allowed_url(url, prefixes)
                if normalised is not None:
                    return super().fetch(normalised, headers)
            raise Denied(f"refused to fetch {url}: network access is off "
                         "(allow it with PDFTASKS_ALLOWED_URL_PREFIXES)")

    fetcher = SafeURLFetcher(timeout=10, allow_redirects=False, fail_on_errors=False)
    if _install_stylesheet_hook():
        fetcher.stylesheet_cache = _StylesheetCache(fetcher)
    return fetcher


#: Parsed linked stylesheets kept per service (entries, not bytes); cleared when exceeded.
STYLESHEET_CACHE_SIZE = 64


@dataclass
class _ParsedSheet:
    sheet: Any  # a weasyprint.CSS, or None: not cacheable, parse it in each document
    files: tuple[tuple[Path, int, int], ...]  # (path, mtime_ns, size) of what it read

    def fresh(self) -> bool:
        try:
            return all((st := p.stat()).st_mtime_ns == m and st.st_size == n
                       for p, m, n in self.files)
        except OSError:
            return False


class _StylesheetCache:
    """The templates' ``<link rel="stylesheet">`` files, parsed once per service.

    WeasyPrint fetches and parses every linked stylesheet again for each document
    (tokenizing, validating declarations, compiling selectors: about 9 ms of a 65 ms
    one-page invoice). A parsed ``CSS`` is not changed by laying out a document (WeasyPrint
    reuses ``CSS`` objects passed as ``stylesheets=`` the same way), so a sheet is parsed
    once and then handed to each document as a shallow copy that shares the document's
    ``@page`` rule list, exactly as a freshly parsed one would.

    Cached: local files whose parse touched only local files (``@import`` included), and
    did not define counter styles, colour profiles or cascade layers (those live in
    per-document state). Everything else is parsed per document, as before. An entry is
    re-parsed when any file it read changes (mtime or size), and the URL passes the
    fetcher's checks on every use.
    """

    def __init__(self, fetcher: Any) -> None:
        self._fetcher = fetcher
        self._entries: dict[tuple[str, str, int, bool], _ParsedSheet] = {}
        self._recording = threading.local()

    def record(self, url: str) -> None:
        urls = getattr(self._recording, "urls", None)
        if urls is not None:
            urls.append(url)

    def get(self, base: type, url: str, url_fetcher: Any, media_type: str, font_config: Any,
            counter_style: Any, color_profiles: Any, page_rules: list[Any], layers: list[Any],
            check_mime_type: bool) -> Any:
        """A copy of the parsed sheet for one document, or None to parse it as usual."""
        if not url.lower().startswith("file:"):
            return None
        self._fetcher.local_path(url)  # the same refusal as a fetch, on every use
        key = (url, media_type, id(font_config), check_mime_type)
        entry = self._entries.get(key)
        if entry is None or not entry.fresh():
            entry = self._parse(base, url, media_type, font_config, type(counter_style),
                                check_mime_type)
            if len(self._entries) >= STYLESHEET_CACHE_SIZE:
                self._entries.clear()
            self._entries[key] = entry
        if entry.sheet is None:
            return None
        sheet = copy.copy(entry.sheet)
        # As if parsed in this document: its author sheets share one @page rule list
        # (and one layer list; a cached sheet has no layers of its own).
        sheet.page_rules, sheet.layers = page_rules, layers
        page_rules.extend(entry.sheet.page_rules)
        return sheet

    def _parse(self, base: type, url: str, media_type: str, font_config: Any,
               counter_style_type: type, check_mime_type: bool) -> _ParsedSheet:
        urls: list[str] = []
        self._recording.urls = urls
        counter_style: dict[Any, Any] = counter_style_type()
        color_profiles: dict[Any, Any] = {}
        layers: list[Any] = []
        from pdftasks.compat.weasyprint import parse_link_css

        try:
            sheet = parse_link_css(base, check_mime_type=check_mime_type, url=url,
                                   url_fetcher=self._fetcher, media_type=media_type,
                                   font_config=font_config, counter_style=counter_style,
                                   color_profiles=color_profiles, page_rules=[], layers=layers)
        finally:
            self._recording.urls = None
        files = []
        cacheable = not (counter_style or color_profiles or layers)
        for read in urls:
            scheme = read.split(":", 1)[0].lower()
            if scheme == "file":
                path = self._fetcher.local_path(read)
                st = path.stat()
                files.append((path, st.st_mtime_ns, st.st_size))
            elif scheme != "data":
                cacheable = False
        return _ParsedSheet(sheet if cacheable else None, tuple(files))


def _install_stylesheet_hook() -> bool:
    """Route WeasyPrint's ``<link>`` stylesheet parsing through a fetcher's cache.

    ``weasyprint.css`` builds linked stylesheets with its module-level ``CSS``; this
    replaces that name with a subclass whose constructor returns a cached copy when the
    fetcher carries a ``stylesheet_cache`` (only pdftasks' fetchers do) and otherwise builds
    a plain ``weasyprint.CSS`` exactly as before. Returns False (no caching) on a WeasyPrint
    outside the versions this was written for, with a warning, or if its layout differs
    (``pdftasks.compat.weasyprint.STYLESHEET_HOOK``).
    """
    from pdftasks.compat import weasyprint as compat_weasyprint

    return compat_weasyprint.install_link_stylesheet_hook()


class PDFService:
    """Renders templates to PDF files (the guide's ``PDFService``), safely.

    Args:
        config: Directories and limits; default ``PDFServiceConfig.from_settings()``.
    """

    #: Exceptions that must pass through untouched (Celery's soft time limit, set by the
    #: worker), so the caller can tell a timeout from a broken template.
    interrupts: tuple[type[Exception], ...] = ()

    def _passthrough(self) -> tuple[type[Exception], ...]:
        """Exceptions that leave the renderer unchanged: pdftasks' own and ``interrupts``."""
        return (PdfTasksError, *self.interrupts)

    def __init__(self, config: PDFServiceConfig | None = None) -> None:
        from weasyprint.text.fonts import FontConfiguration

        self.config = config or PDFServiceConfig.from_settings()
        self.templates_dir = Path(self.config.templates_dir).expanduser().resolve()
        target = self.config.storage if self.config.storage is not None \
            else get_settings().storage
        self.storage = make_storage(target or self.config.output_dir)
        self.output_dir = Path(self.config.output_dir).expanduser().resolve()
        self.env = LimitedSandbox(
            loader=ConfinedLoader(self.templates_dir),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=True,
            cache_size=400,
        )
        self.font_config = FontConfiguration()
        self._fetcher = _make_fetcher((self.templates_dir,),
                                      tuple(self.config.allowed_url_prefixes))
        self._css_cache: dict[tuple[Path, float], Any] = {}
        self._image_cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    # Checks usable at submit time, without rendering.

    def check_job(self, template: object, output_filename: object,
                  css_file: object = None, data: object = None) -> None:
        """Raise a typed ``InvalidJobError`` if the job cannot possibly succeed."""
        self.check_template(template, css_file)
        check_output_filename(output_filename)
        if data is not None:
            check_data(data, self.config.data_limits or self.config.max_data_bytes)

    def check_template(self, template: object, css_file: object = None) -> None:
        """The template exists inside the templates directory and compiles; so does the CSS."""
        path = resolve_inside(self.templates_dir, template, "template")
        if not path.is_file():
            raise TemplateNotFoundError(
                f"Template not found: {template!r} in the templates directory")
        self._compile(str(template))
        if css_file is not None:
            self._css_path(css_file)

    def _css_path(self, css_file: object) -> Path:
        path = resolve_inside(self.templates_dir, css_file, "css_file")
        if not path.is_file():
            raise TemplateNotFoundError(
                f"CSS file not found: {css_file!r} in the templates directory")
        return path

    # Rendering.

    @contextlib.contextmanager
    def _template_errors(self, template: str) -> Iterator[None]:
        """Turn Jinja's exceptions into pdftasks' typed, permanent errors."""
        try:
            yield
        except jinja2.TemplateNotFound as exc:
            raise TemplateNotFoundError(
                f"Template not found: {exc.name!r} in the templates directory") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateSyntaxError(
                f"Template syntax error in {exc.name or template!r} line {exc.lineno}: "
                f"{exc.message}") from exc
        except jinja2.UndefinedError as exc:
            raise MissingVariableError(
                f"Template {template!r} uses a variable the data does not provide: "
                f"{exc.message}") from exc
        except SecurityError as exc:
            raise TemplateSecurityError(f"Template {template!r} is unsafe: {exc}") from exc
        except MemoryError as exc:
            raise RenderMemoryError(f"Template {template!r} exceeded the memory limit") from exc
        except self._passthrough():
            raise
        except Exception as exc:
            raise RenderError(
                f"Template {template!r} failed: {type(exc).__name__}: {exc}") from exc

    def _compile(self, template: str) -> jinja2.Template:
        """The compiled template (cached by Jinja until the file changes)."""
        with self._template_errors(template):
            return self.env.get_template(template)

    def render_html(self, template: str, data: Mapping[str, Any]) -> str:
        """Render the Jinja template to HTML (sandboxed, autoescaped, strict undefined)."""
        resolve_inside(self.templates_dir, template, "template")
        compiled = self._compile(template)
        with self._template_errors(template):
            return compiled.render(**data)

    def _stylesheet(self, css_file: str) -> Any:
        from weasyprint import CSS

        path = self._css_path(css_file)
        key = (path, path.stat().st_mtime)
        sheet = self._css_cache.get(key)
        if sheet is None:
            sheet = CSS(filename=str(path), url_fetcher=self._fetcher,
                        font_config=self.font_config)
            self._css_cache = {k: v for k, v in self._css_cache.items() if k[0] != path}
            self._css_cache[key] = sheet
        return sheet

    def html_to_pdf(self, html: str, css_file: str | None = None) -> tuple[bytes, int]:
        """Lay out ``html`` (base URL = templates dir) and return (pdf bytes, page count)."""
        from weasyprint import HTML

        stylesheets = [self._stylesheet(css_file)] if css_file else []
        try:
            document = HTML(string=html, base_url=self.templates_dir.as_uri() + "/",
                            url_fetcher=self._fetcher).render(
                stylesheets=stylesheets, font_config=self.font_config,
                cache=self._image_cache)
            self._local_links(document)
            pdf = document.write_pdf()
        except self._fetcher.denied as exc:
            raise UnsafeResourceError(str(exc)) from exc
        except MemoryError as exc:
            raise RenderMemoryError("The document exceeded the render memory limit") from exc
        except self._passthrough():
            raise
        except Exception as exc:
            raise RenderError(f"WeasyPrint failed: {type(exc).__name__}: {exc}") from exc
        if len(self._image_cache) > 256:
            self._image_cache.clear()
        return pdf, len(document.pages)

    def _local_links(self, document: Any) -> None:
        """Links to local files leave no server path in the PDF: one to a file inside the
        templates directory becomes relative, any other ``file:`` link is dropped."""
        base = self.templates_dir.as_uri() + "/"
        for page in document.pages:
            links = []
            for link in page.links:
                kind, target = link[0], link[1]
                if kind == "external" and str(target).lower().startswith("file:"):
                    if not str(target).startswith(base):
                        continue
                    link = (kind, str(target)[len(base):], *link[2:])
                links.append(link)
            page.links[:] = links

    def render_pdf(self, template: str, data: Mapping[str, Any],
                   css_file: str | None = None) -> tuple[bytes, int]:
        """Template + data -> (pdf bytes, page count), without writing anything."""
        if css_file is not None:
            self._css_path(css_file)
        return self.html_to_pdf(self.render_html(template, data), css_file)

    def generate_pdf(self, template: str, data: Mapping[str, Any], output_filename: str,
                     css_file: str | None = None, key: str | None = None) -> RenderResult:
        """Render and write the PDF atomically to the storage (the output directory, or S3
        with ``storage``) as ``key`` (default: ``output_filename`` at the top of the storage;
        jobs pass their server-chosen key); ``path`` is the file's path or ``s3://`` URI."""
        started = time.perf_counter()
        self.check_job(template, output_filename, css_file, data)
        pdf, pages = self.render_pdf(template, data, css_file)
        path = self.storage.write(key or output_filename, pdf)
        return RenderResult(path=str(path), pages=pages, bytes=len(pdf),
                            duration_ms=round((time.perf_counter() - started) * 1000, 1))

    def cleanup_old_files(self, days: float) -> int:
        """Delete PDFs older than ``days`` from the storage; return how many."""
        return len(self.storage.delete_older_than(time.time() - days * 86400))

    def warm_up(self, freeze_gc: bool = True) -> float:
        """Render a tiny document so fonts and layout code are loaded; return ms taken.

        With ``freeze_gc`` (the default; worker processes call this once at start) the
        objects alive afterwards (modules, WeasyPrint's user-agent stylesheets, fonts: about
        100,000 in a worker) move to the garbage collector's permanent generation
        (``gc.freeze()``). They live as long as the process, but without this every full
        collection walks them again: about every 11th one-page invoice paid a ~65 ms
        collection instead of ~14 ms (``benchmarks/render_cost.py``).
        """
        started = time.perf_counter()
        self.html_to_pdf(_WARMUP_HTML)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        return (time.perf_counter() - started) * 1000


def harfbuzz_subset_available() -> bool:
    """True when WeasyPrint can subset fonts with HarfBuzz (libharfbuzz-subset0)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from weasyprint.text.ffi import harfbuzz_subset
    return harfbuzz_subset is not None


def apply_memory_limit(limit_mb: int) -> None:
    """Cap this process's address space (RLIMIT_AS); a render past it gets MemoryError."""
    if limit_mb <= 0:
        return
    limit = limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``RenderTimeoutError`` in the main thread after ``seconds`` (SIGALRM)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(signum: int, frame: Any) -> None:
        raise RenderTimeoutError(
            f"render exceeded the soft time limit of {seconds:g} s and was stopped "
            "(runaway template?)")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
