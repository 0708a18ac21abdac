"""The FastAPI application (:func:`build_api`): middleware, error handlers, routes, and
the API state made at startup."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI

from pdftasks.api.constants import BODY_DEPTH_MARGIN
from pdftasks.api.errors import _add_error_handlers
from pdftasks.api.middleware import BodyLimitMiddleware, LatencyMiddleware
from pdftasks.api.routes import _add_routes
from pdftasks.api.state import ApiState
from pdftasks.settings import Settings, get_settings


def build_api(settings: Settings | None = None, *, freeze_gc: bool = False) -> FastAPI:
    """The FastAPI application; its state (Redis, job manager) is made at startup.

    An entry point: ``settings`` default to the environment's, read here once and passed
    to everything the application makes. ``freeze_gc``: at startup, move every object
    alive to the garbage collector's permanent generation (``gc.freeze()``: shorter
    collections while serving). Only for a process that serves this API alone, such as
    ``pdftasks api`` (``pdftasks.api:app``); a host application that builds the API into
    its own process keeps its garbage collector as it set it."""
    s = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        state = ApiState(s)
        api.state.api = state
        if freeze_gc:
            gc.freeze()  # what was loaded so far stays: shorter collections while serving
        try:
            yield
        finally:
            api.state.api = None
            await state.close()

    api = FastAPI(
        title="pdftasks HTTP API",
        version="1",
        description="Submit, poll, download, cancel and monitor PDF jobs. Authenticate with "
                    "`Authorization: Bearer <key>`; every error is JSON "
                    "`{\"error\", \"detail\"}`.",
        lifespan=lifespan,
    )
    api.add_middleware(BodyLimitMiddleware, max_bytes=s.api_max_body_bytes,
                       max_depth=s.max_data_depth + BODY_DEPTH_MARGIN)
    api.add_middleware(LatencyMiddleware)
    _add_error_handlers(api)
    _add_routes(api, s)
    return api
