"""The ``split`` job option: render a long list as parts in parallel, then merge them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pdftasks.errors import InvalidOptionsError

#: Largest number of parts one job may be cut into.
MAX_PARTS = 1000
#: Most bytes the data outside the split list may take, times the number of parts: each
#: part's message and result carry a copy (so that one request cannot make the broker
#: hold hundreds of times its size).
MAX_PART_COPIES_BYTES = 64 * 1024 * 1024
#: The label stamped on every page of a merged split job: ``{page}`` and ``{pages}`` become
#: the page's number and the page count of the whole document.
PAGE_LABEL = "Page {page} of {pages}"


class SplitOptions(BaseModel):
    """Cut the list at ``key`` (a dotted path in the job's data) into parts of ``size`` items;
    each part is rendered as its own job, then the parts are merged into one PDF.

    A list of ``size`` items or fewer is rendered as one ordinary job. Templates see
    ``part`` (``index``, ``count``, ``first``, ``last``, ``start``: the position of the part's
    first item in the whole list, ``items``: the length of the whole list).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$",
                     description="Dotted path to a list in the job's data, e.g. `rows`.")
    size: int = Field(ge=1, le=1_000_000, description="Items per part.")
    page_label: str | None = Field(
        PAGE_LABEL, max_length=200,
        description="Stamped at the bottom right of every page of the merged PDF, with "
                    "`{page}` and `{pages}` replaced; null stamps nothing (the template's own "
                    "page numbers then restart in each part).")

    def parts(self, items: int) -> int:
        """How many parts a list of ``items`` items is cut into (1: not split)."""
        return max(1, math.ceil(items / self.size))


def split_list(split: SplitOptions, data: Mapping[str, Any]) -> list[Any]:
    """The list at ``split.key`` in ``data``.

    Raises:
        InvalidOptionsError: there is no list there, or it would make more than
            ``MAX_PARTS`` parts.
    """
    node: Any = data
    walked: list[str] = []
    for name in split.key.split("."):
        walked.append(name)
        if not isinstance(node, Mapping) or name not in node:
            raise InvalidOptionsError(
                f"options.split.key: the data has no {'.'.join(walked)!r} "
                f"(it should lead to the list to split)")
        node = node[name]
    if not isinstance(node, list):
        raise InvalidOptionsError(
            f"options.split.key: data.{split.key} is a {type(node).__name__}, not a list")
    parts = split.parts(len(node))
    if parts > MAX_PARTS:
        raise InvalidOptionsError(
            f"options.split.size: {len(node)} items in parts of {split.size} make "
            f"{parts} parts, above the limit of {MAX_PARTS}; use a larger size")
    if parts > 1:
        # Each part's message (and its result) carries the data outside the list.
        rest = len(json.dumps(with_items(data, split.key, []), separators=(",", ":"),
                              default=str).encode())
        if parts * rest > MAX_PART_COPIES_BYTES:
            raise InvalidOptionsError(
                f"options.split.size: each of the {parts} parts carries the "
                f"{rest:,} bytes of data outside data.{split.key}: {parts * rest:,} bytes "
                f"in all, above the limit of {MAX_PART_COPIES_BYTES:,}; use a larger size "
                "or less data outside the list")
    return node


#: Document options a split job cannot have: they shape how each part is written (PDF/A
#: and PDF/UA need one structure and one set of fonts for the whole document; the e-invoice
#: is made from the whole data).
SPLIT_EXCLUDES = ("pdf_variant", "einvoice")


def check_split(opts: Any, data: Mapping[str, Any]) -> list[Any] | None:
    """The list a job with ``opts`` (``JobOptions``) splits, or None without ``split``.

    Raises:
        InvalidOptionsError: as ``split_list``, or ``split`` with an option in
            ``SPLIT_EXCLUDES``.
    """
    if opts is None or opts.split is None:
        return None
    for name in SPLIT_EXCLUDES:
        if getattr(opts, name, None) is not None:
            raise InvalidOptionsError(
                f"options.split cannot be combined with options.{name} (it applies to the "
                "document as a whole); render it without split")
    return split_list(opts.split, data)


def with_items(data: Mapping[str, Any], key: str, items: list[Any]) -> dict[str, Any]:
    """A shallow copy of ``data`` with the list at the dotted ``key`` replaced by ``items``."""
    head, _, rest = key.partition(".")
    out = dict(data)
    out[head] = with_items(data[head], rest, items) if rest else items
    return out
