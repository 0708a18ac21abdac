"""Process limits of a render: a soft time limit (SIGALRM), an address-space cap
(RLIMIT_AS), and whether WeasyPrint can subset fonts with HarfBuzz."""

from __future__ import annotations

import contextlib
import resource
import signal
import threading
from collections.abc import Iterator
from typing import Any

from pdftasks.errors import RenderTimeoutError


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


#: After the time limit, how often the alarm is raised again until the render stops, in s.
TIME_LIMIT_REPEAT_S = 0.5


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``RenderTimeoutError`` in the main thread after ``seconds`` (SIGALRM), and
    again every ``TIME_LIMIT_REPEAT_S`` until the block is left: code that catches every
    ``Exception`` (WeasyPrint logs and goes on after some errors) cannot swallow the limit."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(signum: int, frame: Any) -> None:
        raise RenderTimeoutError(
            f"render exceeded the soft time limit of {seconds:g} s and was stopped "
            "(runaway template?)")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds, TIME_LIMIT_REPEAT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
