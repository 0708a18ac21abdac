"""Operations: worker heartbeat file, JSON logs, Prometheus metrics."""

from __future__ import annotations

from typing import Any


def install(app: Any) -> None:
    """Add monitoring to ``app`` (worker bootsteps, signal handlers)."""
