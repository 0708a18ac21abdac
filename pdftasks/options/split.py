"""The ``split`` job option: render a long list as parts in parallel, then merge them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Largest number of parts one job may be cut into.
MAX_PARTS = 1000


class SplitOptions(BaseModel):
    """Cut the list at ``key`` (a dotted path in the job's data) into parts of ``size`` items;
    each part is rendered as its own job, then the parts are merged into one PDF."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$",
                     description="Dotted path to a list in the job's data, e.g. `rows`.")
    size: int = Field(ge=1, le=1_000_000, description="Items per part.")
