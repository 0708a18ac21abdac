"""What a document may read: WeasyPrint's URL fetcher confined to the templates directory,
``data:`` URIs and allow-listed http(s) prefixes; the per-service cache of parsed linked
stylesheets; and ``redact_paths``, which takes this server's paths (and ``file://`` URLs)
out of the error text clients see."""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

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
            try:
                path = Path(url2pathname(urlsplit(url).path)).resolve()
                if any(path.is_relative_to(root) for root in roots) and path.is_file():
                    return path
            except (OSError, ValueError):  # a name too long, a NUL, a lone surrogate
                pass
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

    return SafeURLFetcher(timeout=10, allow_redirects=False, fail_on_errors=False)


def enable_stylesheet_cache(fetcher: Any) -> bool:
    """Give a fetcher of ``_make_fetcher`` its parsed-stylesheet cache; True if it has one.

    This installs the process-wide hook (``_install_stylesheet_hook``: it replaces
    ``weasyprint.css.CSS``), so only services that asked for the cache call it
    (``PDFService(cache_stylesheets=True)``, the workers'), and only when they first lay
    out a document: a process that only submits jobs or checks templates is left as it was.
    """
    if fetcher.stylesheet_cache is None and _install_stylesheet_hook():
        fetcher.stylesheet_cache = _StylesheetCache(fetcher)
    return fetcher.stylesheet_cache is not None


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
