"""Limits on a job's data, checked at the door (submit, HTTP API) and again in the worker.

The data of one job is untrusted: a client may send anything, and a message on a queue may
have bypassed every client. ``check_data`` walks it without recursion, so no shape of data
(nesting, size, types) can raise anything but ``InvalidDataError``; the worker's main process
checks the same limits before it hands a job to a pool process (``pdftasks.worker.guard``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pdftasks.errors import InvalidDataError

if TYPE_CHECKING:
    from pdftasks.settings import Settings

#: Largest JSON payload accepted for one job, in bytes (encoded, compact).
MAX_DATA_BYTES = 5 * 1024 * 1024
#: Deepest nesting of objects and lists in a job's data (the data object itself is level 1).
MAX_DATA_DEPTH = 32
#: Most keys in one object of a job's data.
MAX_DATA_KEYS = 10_000
#: Most items in one list of a job's data.
MAX_DATA_ITEMS = 100_000
#: Longest string (key or value) in a job's data, in characters.
MAX_DATA_STRING = 1_000_000
#: Longest job id (a message's ``id`` header; part of job store keys), in characters.
MAX_ID = 255

#: What a value is to a JSON walk (``json_kind``).
STRING, NUMBER, FLOAT, OBJECT, ARRAY, OTHER = range(6)
#: The kinds of the exact types JSON decoding gives: one dict lookup for nearly every value
#: of a walk (``isinstance`` against ``Mapping`` costs an ABC check each time).
EXACT_KINDS: dict[type, int] = {str: STRING, int: NUMBER, bool: NUMBER, type(None): NUMBER,
                                 float: FLOAT, dict: OBJECT, list: ARRAY, tuple: ARRAY}


def json_kind(value: Any) -> int:
    """``STRING``, ``NUMBER`` (int, bool, None), ``FLOAT``, ``OBJECT`` (a Mapping),
    ``ARRAY`` (list, tuple) or ``OTHER``; subclasses count as their base, str first."""
    kind = EXACT_KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, str):
        return STRING
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, int | bool | type(None)):
        return NUMBER
    if isinstance(value, Mapping):
        return OBJECT
    if isinstance(value, list | tuple):
        return ARRAY
    return OTHER


@dataclass(frozen=True)
class DataLimits:
    """The shape a job's data must keep. Every limit is a positive number."""

    max_bytes: int = MAX_DATA_BYTES
    max_depth: int = MAX_DATA_DEPTH
    max_keys: int = MAX_DATA_KEYS
    max_items: int = MAX_DATA_ITEMS
    max_string: int = MAX_DATA_STRING

    @classmethod
    def from_settings(cls, s: Settings) -> DataLimits:
        return cls(max_bytes=s.max_data_bytes, max_depth=s.max_data_depth,
                   max_keys=s.max_data_keys, max_items=s.max_data_items,
                   max_string=s.max_data_string)


def _where(path: tuple[Any, ...]) -> str:
    out = "data"
    for part in path[:8]:
        out += f"[{part!r}]" if isinstance(part, str) else f"[{part}]"
    return out + ("…" if len(path) > 8 else "")


def check_data(data: object, limits: DataLimits | int | None = None, *,
               max_bytes: int | None = None) -> int:
    """Check that ``data`` is a JSON object within ``limits``; return its encoded size in bytes.

    ``limits`` may be a plain byte count (older callers) or None for the defaults;
    ``max_bytes`` overrides the byte limit.

    Raises:
        InvalidDataError: not an object, a value JSON cannot carry (set, NaN, bytes, a
            non-string key, a cycle), nested deeper than ``max_depth``, an object with more
            than ``max_keys`` keys, a list longer than ``max_items``, a string longer than
            ``max_string`` characters, or more than ``max_bytes`` once encoded.
    """
    if limits is None:
        limits = DataLimits()
    elif isinstance(limits, int):
        limits = DataLimits(max_bytes=limits)
    if max_bytes is not None:
        limits = DataLimits(max_bytes, limits.max_depth, limits.max_keys, limits.max_items,
                            limits.max_string)
    if not isinstance(data, Mapping):
        raise InvalidDataError(f"data must be a JSON object (dict), not {type(data).__name__}")
    # Iterative walk: (value, depth, path). Depth bounds the stack's height as well.
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(data, 1, ())]
    # Every JSON value takes at least two bytes with its separator: more values than that
    # cannot fit (and values shared between containers, possible only in Python, stop here).
    budget = limits.max_bytes // 2 + 1
    while stack:
        value, depth, path = stack.pop()
        budget -= 1
        if budget < 0:
            raise InvalidDataError(f"data is above the limit of {limits.max_bytes} bytes")
        kind = EXACT_KINDS.get(type(value))
        if kind is None:
            kind = json_kind(value)
        if kind == STRING:
            if len(value) > limits.max_string:
                raise InvalidDataError(
                    f"{_where(path)} is a string of {len(value)} characters, above the limit "
                    f"of {limits.max_string}")
            continue
        if kind == NUMBER:
            continue
        if kind == FLOAT:
            if not math.isfinite(value):
                raise InvalidDataError(f"{_where(path)} is not JSON-serializable: {value}")
            continue
        if kind in (OBJECT, ARRAY):
            if depth > limits.max_depth:
                raise InvalidDataError(
                    f"data is nested deeper than the limit of {limits.max_depth} levels "
                    f"(at {_where(path)})")
            if kind == OBJECT:
                if len(value) > limits.max_keys:
                    raise InvalidDataError(
                        f"{_where(path)} has {len(value)} keys, above the limit of "
                        f"{limits.max_keys}")
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise InvalidDataError(
                            f"{_where(path)} has a key of type {type(key).__name__}; "
                            "JSON object keys are strings")
                    if len(key) > limits.max_string:
                        raise InvalidDataError(
                            f"{_where(path)} has a key of {len(key)} characters, above the "
                            f"limit of {limits.max_string}")
                    stack.append((item, depth + 1, (*path, key)))
            else:
                if len(value) > limits.max_items:
                    raise InvalidDataError(
                        f"{_where(path)} is a list of {len(value)} items, above the limit of "
                        f"{limits.max_items}")
                stack.extend((item, depth + 1, (*path, i)) for i, item in enumerate(value))
            continue
        raise InvalidDataError(
            f"{_where(path)} is not JSON-serializable: a {type(value).__name__} (use objects, "
            "lists, strings, numbers, booleans and null)")
    try:
        size = len(json.dumps(data, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidDataError(f"data is not JSON-serializable: {exc}") from exc
    if size > limits.max_bytes:
        raise InvalidDataError(
            f"data is {size} bytes, above the limit of {limits.max_bytes} bytes")
    return size
