"""Per-job options: one ``options`` mapping, the same on ``generate_pdf.delay``,
``PDFQueueManager.submit_job``/``submit_batch``, the HTTP API and ``pdftasks submit``.

Checked when the job is submitted (``InvalidOptionsError``) and again in the worker.
An absent option costs nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, ValidationError, model_validator

from pdftasks.errors import InvalidOptionsError
from pdftasks.options.document import (
    SECRET_PATHS,
    DocumentOptionsMixin,
    _refused,
    check_document_options,
    has_document_options,
)
from pdftasks.options.split import SplitOptions

__all__ = ["JobOptions", "SplitOptions", "parse_options", "redact_options", "redact_task_kwargs",
           "has_document_options", "redacted_paths"]

#: Replaces a secret option value in job records, results, events and logs.
REDACTED = "***"


class JobOptions(DocumentOptionsMixin):
    """Everything a job may ask beyond its template and data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: SplitOptions | None = None

    @model_validator(mode="after")
    def _combinations(self) -> JobOptions:
        _check_json_text(self)
        check_document_options(self)
        return self


def _check_json_text(options: JobOptions) -> None:
    # Free-form values (merge data, keywords, names) must be what JSON and UTF-8 carry:
    # a lone surrogate or a NaN would be accepted here and fail every later read of the
    # job's record (the API's JSON answers, webhooks) instead of the submit.
    try:
        json.dumps(options.model_dump(mode="python", by_alias=True, exclude_none=True),
                   allow_nan=False, ensure_ascii=False, default=str).encode()
    except UnicodeEncodeError as exc:
        raise _refused(f"{exc.object[exc.start:exc.end]!r} is a lone surrogate, not valid "
                       "Unicode text") from None
    except ValueError:
        raise _refused("NaN and Infinity are not JSON numbers") from None


def _where(err: Mapping[str, Any]) -> str:
    return ".".join(["options", *(str(p) for p in err.get("loc", ()))])


def parse_options(raw: Any) -> JobOptions | None:
    """``raw`` (a JSON object, a ``JobOptions`` or None) as ``JobOptions``.

    Raises:
        InvalidOptionsError: not an object, an unknown option, a bad value or an impossible
            combination; the message names the option (``options.encrypt.owner_password: …``).
    """
    if raw is None:
        return None
    if isinstance(raw, JobOptions):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidOptionsError(f"options must be a JSON object (dict), not "
                                  f"{type(raw).__name__}")
    if not raw:
        return None
    try:
        return JobOptions.model_validate(dict(raw))
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e)}: {e['msg']}" for e in exc.errors(
            include_url=False, include_input=False))
        raise InvalidOptionsError(problems) from None


def redact_options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``raw`` with every secret (``SECRET_PATHS``) replaced by ``REDACTED``: what
    job records, events, webhooks and logs may hold."""
    if not raw:
        return {}
    out = copy.deepcopy(dict(raw))
    for path in SECRET_PATHS:
        *parents, leaf = path.split(".")
        node: Any = out
        for name in parents:
            node = node.get(name) if isinstance(node, Mapping) else None
        if isinstance(node, dict) and node.get(leaf) not in (None, ""):
            node[leaf] = REDACTED
    return out


def redact_task_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The kwargs of a job's task (``options``, or a split merge's ``merge.options``) with
    their secrets redacted, or None when they hold no options to redact."""
    if not isinstance(kwargs, Mapping):
        return None
    hidden = dict(kwargs)
    options = kwargs.get("options")
    if isinstance(options, Mapping):
        hidden["options"] = redact_options(options)
    merge = kwargs.get("merge")
    if isinstance(merge, Mapping) and isinstance(merge.get("options"), Mapping):
        hidden["merge"] = {**merge, "options": redact_options(merge["options"])}
    return hidden if hidden != dict(kwargs) else None


def redacted_paths(options: Mapping[str, Any] | None) -> list[str]:
    """The secret option paths whose values ``options`` (a job record's copy) lacks."""
    found = []
    for path in SECRET_PATHS:
        node: Any = options or {}
        for name in path.split("."):
            node = node.get(name) if isinstance(node, Mapping) else None
        if node == REDACTED:
            found.append(path)
    return found

#: The options plumbing (submit, API, CLI, worker, records) is in place.
PLUMBING_READY = True
