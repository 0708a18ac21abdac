"""The Celery, kombu and WeasyPrint internals pdftasks relies on, in quarantine.

pdftasks overrides or reads a few private names of its dependencies (underscore methods and
attributes, module attributes it replaces). Each such use lives in the module of its
dependency (``pdftasks.compat.celery``, ``.kombu``, ``.weasyprint``), which states the
versions it was written and tested for (``TESTED``) and lists the names (``PRIVATE_NAMES``);
the rest of pdftasks calls these modules instead of touching the names.

Every use is an ``Internal`` with a policy for an installed version outside ``TESTED``:

- ``FALLBACK``: stock behaviour of the dependency instead, with a warning (logged once per
  process by ``pdftasks.compat``) that says what is lost;
- ``REFUSE``: ``UnsupportedVersionError`` where the use is set up (a worker does not start).

``tests/unit/test_compat.py`` checks that the installed versions pass, that other versions
fall back (or refuse), and that no listed name appears in pdftasks outside this package.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)

FALLBACK: Literal["fallback"] = "fallback"
REFUSE: Literal["refuse"] = "refuse"


class UnsupportedVersionError(RuntimeError):
    """An installed dependency is outside the versions a pdftasks use of its internals was
    written for, and that use has no safe stock fallback."""


@dataclass(frozen=True)
class Internal:
    """One use of a dependency's private names.

    Attributes:
        dist: The distribution (``"kombu"``).
        use: What pdftasks does with them (for messages).
        names: The private names as they appear in code: ``".name"``, an attribute or
            method of a dependency's object; ``"owner.name"``, attribute ``name`` of something
            called ``owner`` (or a dotted module name); else a parameter name, a dictionary
            key or a string.
        fallback: What happens instead outside the tested versions.
        policy: ``FALLBACK`` or ``REFUSE``.
    """

    dist: str
    use: str
    names: tuple[str, ...]
    fallback: str
    policy: Literal["fallback", "refuse"] = FALLBACK


def installed_version(dist: str) -> str:
    """The installed version of distribution ``dist``."""
    return importlib.metadata.version(dist)


@functools.lru_cache(maxsize=64)
def in_range(version: str, tested: str) -> bool:
    """Whether ``version`` satisfies the specifier ``tested`` (``">=5.7,<5.8"``); False for
    versions or specifiers that cannot be parsed."""
    try:
        return SpecifierSet(tested).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


_warned: set[tuple[str, str, str]] = set()


def check(internal: Internal, version: str, tested: str) -> bool:
    """True when ``internal`` may be used with ``version`` of its dependency. Otherwise
    raise ``UnsupportedVersionError`` (policy ``REFUSE``) or warn once and return False
    (policy ``FALLBACK``: the caller uses the dependency's stock behaviour)."""
    if in_range(version, tested):
        return True
    message = (f"{internal.dist} {version} is outside the versions pdftasks' {internal.use} "
               f"was written and tested for ({internal.dist}{tested})")
    if internal.policy == REFUSE:
        raise UnsupportedVersionError(
            f"{message}. Install a tested version (pip install -c constraints.txt ...).")
    key = (internal.dist, version, internal.use)
    if key not in _warned:
        _warned.add(key)
        log.warning("%s: %s", message, internal.fallback)
    return False


def forget_warnings() -> None:
    """Warn again about versions already warned about (for tests)."""
    _warned.clear()


def internals() -> list[tuple[str, str, Internal]]:
    """Every quarantined use: (installed version, tested range, use)."""
    # By name: importing this package must not import Celery (the renderer uses
    # compat.weasyprint, and knows nothing of Celery).
    modules = [importlib.import_module(f"pdftasks.compat.{name}")
               for name in ("celery", "kombu", "weasyprint")]
    return [(module.VERSION, module.TESTED, internal)
            for module in modules for internal in module.INTERNALS]
