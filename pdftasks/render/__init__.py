"""The renderer: sandboxed Jinja2 + WeasyPrint + a URL fetcher that reads only template assets.

Knows nothing about Celery. One ``PDFService`` per process keeps compiled templates, parsed
stylesheets and WeasyPrint's font configuration across jobs.

- ``service``: ``PDFService``, ``PDFServiceConfig``, ``RenderResult``.
- ``sandbox``: ``LimitedSandbox`` (template limits), ``ConfinedLoader``, ``resolve_inside``.
- ``fetcher``: the confined URL fetcher, ``allowed_url``, the parsed-stylesheet cache,
  ``redact_paths``.
- ``limits``: ``time_limit``, ``apply_memory_limit``, ``harfbuzz_subset_available``.
"""

from __future__ import annotations

from pdftasks.limits import check_data
from pdftasks.render.fetcher import (
    STYLESHEET_CACHE_SIZE,
    ResourceDenied,
    allowed_url,
    redact_paths,
)
from pdftasks.render.fetcher import _install_stylesheet_hook as _install_stylesheet_hook
from pdftasks.render.limits import apply_memory_limit, harfbuzz_subset_available, time_limit
from pdftasks.render.sandbox import (
    MAX_TEMPLATE_FORMAT_WIDTH,
    MAX_TEMPLATE_LIPSUM,
    MAX_TEMPLATE_POWER_BITS,
    MAX_TEMPLATE_SEQUENCE,
    MAX_TEMPLATE_TEXT,
    ConfinedLoader,
    LimitedSandbox,
    resolve_inside,
)
from pdftasks.render.service import PDFService, PDFServiceConfig, RenderResult

__all__ = [
    "MAX_TEMPLATE_FORMAT_WIDTH",
    "MAX_TEMPLATE_LIPSUM",
    "MAX_TEMPLATE_POWER_BITS",
    "MAX_TEMPLATE_SEQUENCE",
    "MAX_TEMPLATE_TEXT",
    "STYLESHEET_CACHE_SIZE",
    "ConfinedLoader",
    "LimitedSandbox",
    "PDFService",
    "PDFServiceConfig",
    "RenderResult",
    "ResourceDenied",
    "allowed_url",
    "apply_memory_limit",
    "check_data",
    "harfbuzz_subset_available",
    "redact_paths",
    "resolve_inside",
    "time_limit",
]
