"""Webhooks: signed POSTs to a job's ``callback_url`` on completion or final failure."""

from __future__ import annotations

from typing import Any


def install(app: Any) -> None:
    """Register webhook delivery on ``app`` (task and event hook)."""
