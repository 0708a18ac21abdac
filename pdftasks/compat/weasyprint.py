"""WeasyPrint internals pdftasks uses, written for (and tested with) the versions in
``TESTED``.

- ``STYLESHEET_HOOK`` (``pdftasks.render``'s cache of parsed ``<link>`` stylesheets):
  replaces the module attribute ``weasyprint.css.CSS`` (the class ``find_stylesheets``
  builds linked stylesheets with) and recognises that call by its keyword arguments, which
  include the private ``_check_mime_type``. Outside ``TESTED``: *fallback*, with a warning,
  to WeasyPrint's own parsing of every linked stylesheet for each document (no cache; it is
  an optimisation only).
"""

from __future__ import annotations

from typing import Any

from pdftasks.compat import FALLBACK, Internal, check, installed_version

#: The WeasyPrint versions the use below was written and tested for.
TESTED = ">=68,<71"
#: The installed version (tests replace it to simulate another one).
VERSION = installed_version("weasyprint")

STYLESHEET_HOOK = Internal(
    "weasyprint", "stylesheet cache (weasyprint.css.CSS replaced for <link> stylesheets)",
    names=("weasyprint.css", "_check_mime_type"),
    fallback="linked stylesheets are parsed again for each document (no cache)",
    policy=FALLBACK)

INTERNALS = (STYLESHEET_HOOK,)
PRIVATE_NAMES = tuple(name for internal in INTERNALS for name in internal.names)

#: Keyword arguments of the ``CSS(...)`` call WeasyPrint makes for a ``<link rel=stylesheet>``
#: (``weasyprint.css.find_stylesheets``); other calls (``@import``, ``<style>``) are not cached.
LINK_CSS_KWARGS = frozenset({"url", "url_fetcher", "media_type", "font_config",
                             "counter_style", "color_profiles", "page_rules", "layers",
                             "_check_mime_type"})


def supported(internal: Internal) -> bool:
    """Whether ``internal`` may be used with the installed WeasyPrint (``compat.check``)."""
    return check(internal, VERSION, TESTED)


def install_link_stylesheet_hook() -> bool:
    """Let a URL fetcher's ``stylesheet_cache`` answer WeasyPrint's ``<link>`` stylesheets.

    Replaces ``weasyprint.css.CSS`` with a subclass whose constructor, for the call
    ``find_stylesheets`` makes for a linked stylesheet (``LINK_CSS_KWARGS``) with a
    ``url_fetcher`` that has a ``stylesheet_cache``, returns
    ``url_fetcher.stylesheet_cache.get(weasyprint.CSS, **kwargs)`` unless that is None,
    and otherwise builds a plain ``weasyprint.CSS`` exactly as before. True when installed
    (now or before); False (no caching) outside ``TESTED`` or if ``weasyprint.css`` is not
    laid out as expected.
    """
    if not supported(STYLESHEET_HOOK):
        return False
    import weasyprint
    import weasyprint.css as css_module

    current = getattr(css_module, "CSS", None)
    if getattr(current, "_pdftasks_hook", False):
        return True
    base = weasyprint.CSS
    if current is not base:
        return False

    class CachedLinkCSS(base):  # type: ignore[misc, valid-type]
        _pdftasks_hook = True

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            cache = getattr(kwargs.get("url_fetcher"), "stylesheet_cache", None)
            if cache is not None and not args and kwargs.keys() == LINK_CSS_KWARGS:
                public = dict(kwargs)
                check_mime_type = public.pop("_check_mime_type")
                sheet = cache.get(base, check_mime_type=check_mime_type, **public)
                if sheet is not None:
                    return sheet  # a plain weasyprint.CSS: __init__ is not run again
            return base(*args, **kwargs)

    css_module.CSS = CachedLinkCSS
    return True


def parse_link_css(base: Any, *, check_mime_type: bool, **kwargs: Any) -> Any:
    """Parse a linked stylesheet the way ``find_stylesheets`` does (``base(**kwargs)`` with
    WeasyPrint's private ``_check_mime_type`` flag)."""
    return base(**kwargs, _check_mime_type=check_mime_type)
