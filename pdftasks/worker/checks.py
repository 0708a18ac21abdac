"""The worker's checks of a queued message: pure functions of a kombu message, raising
``InvalidJobError`` subclasses (``InvalidMessageError``, ``InvalidDataError``,
``InvalidPriorityError``). ``pdftasks.worker.guard`` runs them before Celery builds a
request, and refuses what fails them."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from celery.utils.time import maybe_iso8601
from kombu.exceptions import ContentDisallowed, DecodeError

from pdftasks.errors import InvalidDataError, InvalidJobError, InvalidOptionsError
from pdftasks.limits import (
    ARRAY,
    EXACT_KINDS,
    FLOAT,
    MAX_ID,
    OBJECT,
    OTHER,
    STRING,
    DataLimits,
    check_data,
    json_kind,
)
from pdftasks.models import JobPriority
from pdftasks.options import parse_options
from pdftasks.options.document import MAX_INLINE_ATTACHMENT_BYTES

#: ``generate_pdf``'s parameters, in order, and those without a default.
ARG_NAMES = ("template", "data", "output_filename", "priority", "css_file", "max_retries",
             "metadata", "options")
REQUIRED = ("template", "data", "output_filename")
#: Longest template, CSS or output file name, in characters.
MAX_NAME = 1024
#: Most retries a message may ask for.
MAX_RETRIES = 1000
#: Bytes a message body may hold beyond the job's data and metadata (other arguments, JSON).
BODY_SLACK = 64 * 1024
#: Most values in a message's headers or properties (they hold a few dozen).
MAX_ENVELOPE_VALUES = 10_000

_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
#: Types of the headers that Celery's main process reads (others are only checked for size).
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "id": _OPT_STR, "task": _OPT_STR, "shadow": _OPT_STR, "lang": _OPT_STR, "root_id": _OPT_STR,
    "parent_id": _OPT_STR, "group": _OPT_STR, "origin": _OPT_STR, "argsrepr": _OPT_STR,
    "kwargsrepr": _OPT_STR, "eta": _OPT_STR, "expires": _OPT_STR, "retries": _OPT_INT,
    "group_index": _OPT_INT, "replaced_task_nesting": _OPT_INT,
    "ignore_result": (bool, type(None)), "timelimit": (list, tuple, type(None)),
    "stamps": (dict, type(None)), "stamped_headers": (list, type(None)),
}
_PROPERTY_TYPES: dict[str, tuple[type, ...]] = {
    "correlation_id": _OPT_STR, "reply_to": _OPT_STR, "priority": _OPT_INT,
    "delivery_info": (dict, type(None)),
}


class InvalidMessageError(InvalidJobError):
    """A queued message is not a valid job message (undecodable body, wrong content type,
    wrong arguments, bad headers); found by the worker before any process ran it."""


def _name(value: Any) -> str:
    return type(value).__name__


def _cut(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def check_bounded(value: Any, what: str, limits: DataLimits,
                  max_values: int = MAX_ENVELOPE_VALUES) -> None:
    """Check a JSON-like value of a message (headers, properties, options) without
    recursion: nesting within ``limits.max_depth``, at most ``max_values`` values, strings
    within ``limits.max_string`` and ``limits.max_bytes`` characters in all."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = chars = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > max_values:
            raise InvalidMessageError(f"the message's {what} hold more than {max_values} values")
        kind = EXACT_KINDS.get(type(item))
        if kind is None:
            kind = json_kind(item)
        if kind == STRING:
            chars += len(item)
            if len(item) > limits.max_string or chars > limits.max_bytes:
                raise InvalidMessageError(f"the message's {what} hold too long a string")
        elif kind in (OBJECT, ARRAY):
            if depth > limits.max_depth:
                raise InvalidMessageError(
                    f"the message's {what} are nested deeper than {limits.max_depth} levels")
            if kind == OBJECT:
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise InvalidMessageError(f"the message's {what} have a non-string key")
                    stack.append((key, depth + 1))
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)
        elif kind == FLOAT and not math.isfinite(item):
            raise InvalidMessageError(f"the message's {what} hold {item}")
        elif kind == OTHER:
            raise InvalidMessageError(f"the message's {what} hold a {_name(item)}")


def _check_typed(values: Any, types: dict[str, tuple[type, ...]], what: str,
                 limits: DataLimits) -> None:
    if not isinstance(values, Mapping):
        raise InvalidMessageError(f"the message's {what} are a {_name(values)}, not an object")
    for key, allowed in types.items():
        value = values.get(key)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise InvalidMessageError(
                f"the message's {what[:-1]} {key!r} is a {_name(value)}")
    check_bounded(values, what, limits)


def job_id_of(message: Any, body: Any = None) -> str | None:
    """The job id of ``message`` (its ``id`` header; in a protocol 1 body, its ``id``), or
    None when it has none that can name a job record."""
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    job_id = headers.get("id")
    if job_id is None and isinstance(body, Mapping):
        job_id = body.get("id")
    return valid_id(job_id)


def valid_id(job_id: Any) -> str | None:
    """``job_id`` if it can name a job record (printable text, 1-``MAX_ID`` characters)."""
    if isinstance(job_id, str) and 0 < len(job_id) <= MAX_ID and job_id.isprintable():
        return job_id
    return None


def body_limit(limits: DataLimits) -> int:
    """Largest message body accepted: data and metadata at their limit, and some more."""
    return 2 * limits.max_bytes + BODY_SLACK


def check_headers(headers: Any, limits: DataLimits) -> None:
    """Types and bounds of the headers Celery's main process reads (``timelimit``,
    ``retries``, ``eta``, ``expires``, ids, ...); every header bounded."""
    _check_typed(headers, _HEADER_TYPES, "headers", limits)
    timelimit = headers.get("timelimit")
    if timelimit is not None and (len(timelimit) != 2 or not all(
            t is None or isinstance(t, int | float) and not isinstance(t, bool)
            and math.isfinite(t) and 0 <= t <= 1e7 for t in timelimit)):
        raise InvalidMessageError("the message's 'timelimit' header must be [hard, soft] "
                                  "in seconds (or nulls)")
    retries = headers.get("retries")
    if retries is not None and not 0 <= retries <= 10_000:
        raise InvalidMessageError(f"the message's 'retries' header is {retries}")
    for key in ("eta", "expires"):
        if headers.get(key) is not None:
            try:
                maybe_iso8601(headers[key])
            except Exception as exc:
                raise InvalidMessageError(
                    f"the message's {key!r} header is not an ISO 8601 time: "
                    f"{_cut(str(exc), 200)}") from None


def check_envelope(message: Any, body: Any, limits: DataLimits) -> Any:
    """The checks every task's message gets; return its decoded body.

    ``body`` is what Celery passes a strategy: None, or an already decoded protocol 1
    body. The body is decoded with the message's own ``decode`` (content type checked
    against the accepted ones), which caches it for Celery.
    """
    headers = message.headers
    check_headers(headers, limits)
    if body is None and (not isinstance(headers.get("id"), str) or
                         not isinstance(headers.get("task"), str)):
        raise InvalidMessageError("the message has no 'id' and 'task' headers")
    if job_id_of(message, body) is None:
        raise InvalidMessageError(
            f"the message's id must be printable text of 1-{MAX_ID} characters")
    _check_typed(message.properties, _PROPERTY_TYPES, "properties", limits)
    info = message.delivery_info
    if info is not None and not isinstance(info, Mapping):
        raise InvalidMessageError(f"the message's delivery info is a {_name(info)}")
    raw = message.body
    size = len(raw) if isinstance(raw, bytes | bytearray | str) else None
    if size is None:
        raise InvalidMessageError(f"the message body is a {_name(raw)}")
    if size > body_limit(limits):
        raise InvalidMessageError(
            f"the message body is {size} bytes, above the limit of {body_limit(limits)}")
    payload = body if body is not None else decode_body(message)
    if isinstance(payload, Mapping):
        # Protocol 1 and hybrid bodies: Celery takes the headers it lacks from the body.
        effective = {k: v for k, v in payload.items() if k not in ("args", "kwargs")}
        effective.update(headers)
        check_headers(effective, limits)
    return payload


def decode_body(message: Any) -> Any:
    """``message.decode()``, whose failures (content type, syntax, depth, size) all raise
    ``InvalidMessageError``."""
    try:
        return message.decode()
    except ContentDisallowed:
        raise InvalidMessageError(
            f"content type {_cut(repr(message.content_type), 100)} is not accepted "
            "(job messages are JSON)") from None
    except Exception as exc:
        cause = exc.__context__ if isinstance(exc, DecodeError) else exc  # kombu wraps
        if isinstance(cause, RecursionError):
            raise InvalidMessageError(
                "the message body is nested too deeply to decode") from None
        if isinstance(cause, MemoryError):
            raise InvalidMessageError("the message body is too large to decode") from None
        raise InvalidMessageError(f"the message body cannot be decoded ({_name(exc)}: "
                                  f"{_cut(str(exc), 200)})") from None


def split_body(payload: Any) -> tuple[Any, Any, Any]:
    """``(args, kwargs, options)`` of a decoded body: Celery protocol 2 ``[args, kwargs,
    options]``, or an object with ``args`` and ``kwargs`` (protocol 1 and hybrid)."""
    if isinstance(payload, list | tuple):
        if len(payload) != 3:
            raise InvalidMessageError(
                f"the message body must be [args, kwargs, options], not a list of "
                f"{len(payload)} items")
        args, kwargs, options = payload
    elif isinstance(payload, Mapping):
        args, kwargs = payload.get("args", ()), payload.get("kwargs", {})
        options = {k: v for k, v in payload.items() if k not in ("args", "kwargs")}
    else:
        raise InvalidMessageError(
            f"the message body must be [args, kwargs, options], not a {_name(payload)}")
    if not isinstance(args, list | tuple):
        raise InvalidMessageError(f"the message's args are a {_name(args)}, not a list")
    if not isinstance(kwargs, Mapping):
        raise InvalidMessageError(f"the message's kwargs are a {_name(kwargs)}, not an object")
    if options is not None and not isinstance(options, Mapping):
        raise InvalidMessageError(
            f"the message's options are a {_name(options)}, not an object")
    return args, kwargs, options


def bind_arguments(args: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``generate_pdf``'s arguments by name, as Python would bind them; no unknown ones."""
    if len(args) > len(ARG_NAMES):
        raise InvalidMessageError(
            f"generate_pdf takes at most {len(ARG_NAMES)} arguments, got {len(args)}")
    bound = dict(zip(ARG_NAMES, args, strict=False))
    for key in kwargs:
        if not isinstance(key, str) or key not in ARG_NAMES:
            raise InvalidMessageError(
                f"generate_pdf got an unknown argument {_cut(repr(key), 80)}")
        if key in bound:
            raise InvalidMessageError(f"generate_pdf got two values for argument {key!r}")
    bound.update(kwargs)
    missing = [name for name in REQUIRED if name not in bound]
    if missing:
        raise InvalidMessageError(f"generate_pdf is missing arguments: {', '.join(missing)}")
    return bound


def _check_name(bound: Mapping[str, Any], key: str, optional: bool = False) -> None:
    value = bound.get(key)
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidMessageError(f"{key} must be a string, not {_name(value)}")
    if not 0 < len(value) <= MAX_NAME:
        raise InvalidMessageError(f"{key} must be 1-{MAX_NAME} characters long")


_DATA_WORD = re.compile(r"\bdata\b")


def check_arguments(bound: Mapping[str, Any], limits: DataLimits) -> None:
    """Types of ``generate_pdf``'s arguments; the data (and metadata) within ``limits``."""
    check_data(bound["data"], limits)
    _check_name(bound, "template")
    _check_name(bound, "output_filename")
    _check_name(bound, "css_file", optional=True)
    priority = bound.get("priority")
    if isinstance(priority, str) and len(priority) > 32:
        raise InvalidMessageError("priority must be urgent, high, normal or low (or 0-3)")
    if priority is not None:
        JobPriority.parse(priority)
    retries = bound.get("max_retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)
                                or not 0 <= retries <= MAX_RETRIES):
        raise InvalidMessageError(f"max_retries must be a whole number from 0 to {MAX_RETRIES}")
    metadata = bound.get("metadata")
    if metadata:
        try:
            check_data(metadata, limits)
        except InvalidDataError as exc:
            raise InvalidDataError(_DATA_WORD.sub("metadata", str(exc))) from None
    elif metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidDataError(f"metadata must be a JSON object (dict), not {_name(metadata)}")
    options = bound.get("options")
    if isinstance(options, Mapping) and options:
        # Bounded before anything walks them (parsing, pickling for the pool process): their
        # shape here (merge parts' data nests a few levels below the options, and inline
        # attachments are long strings), each merge part's data as data, as at submit.
        try:
            check_data(options, options_limits(limits))
        except InvalidDataError as exc:
            raise InvalidOptionsError(_LEADING_DATA.sub("options", str(exc), count=1)) \
                from None
        for i, part in enumerate(options.get("merge") or ()):
            if isinstance(part, Mapping) and isinstance(part.get("data"), Mapping):
                try:
                    check_data(part["data"], limits)
                except InvalidDataError as exc:
                    raise InvalidOptionsError(_LEADING_DATA.sub(
                        f"options.merge[{i}].data", str(exc), count=1)) from None
    parse_options(options)


def options_limits(limits: DataLimits) -> DataLimits:
    """The limits on a job's whole ``options`` in a message: as deep as the data plus
    ``OPTIONS_DEPTH_MARGIN``, as large as a message may be, strings as long as an inline
    attachment's base64."""
    return dataclasses.replace(
        limits, max_depth=limits.max_depth + OPTIONS_DEPTH_MARGIN,
        max_bytes=body_limit(limits),
        max_string=max(limits.max_string, MAX_INLINE_ATTACHMENT_BYTES * 4 // 3 + 8))


#: The word "data" that opens a message of ``check_data``.
_LEADING_DATA = re.compile(r"^data\b")


#: Levels options add above the data they carry (``options.merge[i].data``).
OPTIONS_DEPTH_MARGIN = 4


def check_job_message(message: Any, body: Any, limits: DataLimits,
                      seen: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a ``generate_pdf`` message; return its arguments by name.

    Raises ``InvalidJobError`` (``InvalidMessageError``, ``InvalidDataError``,
    ``InvalidPriorityError``). ``seen`` receives the arguments as soon as they are known,
    for the record of a job that fails the later checks.
    """
    payload = check_envelope(message, body, limits)
    args, kwargs, options = split_body(payload)
    bound = bind_arguments(args, kwargs)
    if seen is not None:
        seen["bound"] = bound
    check_arguments(bound, limits)
    if options:
        check_bounded(options, "options", limits)
    return bound


def check_task_message(message: Any, body: Any, limits: DataLimits) -> None:
    """Check the message of any other task: envelope, size, a decodable bounded body."""
    payload = check_envelope(message, body, limits)
    args, kwargs, options = split_body(payload)
    check_bounded([args, kwargs, options], "arguments", limits,
                  max_values=limits.max_bytes // 2 + 1)
