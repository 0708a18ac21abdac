"""Errors of the HTTP API: every one is JSON ``{"error", "detail"}`` (plus ``field`` for a bad
field); their exception handlers, and the redaction of server paths from what clients see."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pdftasks.api.constants import BROKER_RETRY_AFTER_S
from pdftasks.errors import BrokerUnavailableError, InvalidJobError
from pdftasks.settings import Settings

log = logging.getLogger("pdftasks.api")


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error", "detail", ...}``."""

    def __init__(self, http_status: int, error: str, detail: str,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.http_status, self.error, self.detail = http_status, error, detail
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"error": self.error, "detail": self.detail, **self.extra}
        return JSONResponse(body, status_code=self.http_status, headers=self.headers)


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "Job not found")


def _invalid(field: str, detail: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {detail}", field=field)


def _error_body(error: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, **extra}


#: An absolute path of two or more components, not part of a URL (``file:///x/y`` stays).
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"`()<>,;]+/)+([^\s/'\"`()<>,;]*)")


def redact_paths(text: str, settings: Settings | None = None, *, any_path: bool = True) -> str:
    """``text`` without absolute server paths, for what a client sees: the templates
    directory's `` in <dir>`` is dropped, and (``any_path``) any other absolute path becomes
    ``…/<its last component>`` (``/srv/app/templates/invoice.html`` → ``…/invoice.html``).

    ``any_path=False`` for messages that quote the client's own input (a template name such
    as ``/etc/passwd`` is shown as sent)."""
    if settings is not None:
        text = text.replace(f" in {settings.templates_dir}", "")
    return _ABS_PATH.sub(lambda m: f"…/{m.group(1)}", text) if any_path else text


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


def _messages(errors: list[Any], prefix: str = "") -> tuple[str, str]:
    """(first field, "field: message; ...") from pydantic errors."""
    items = []
    for err in errors:
        field = prefix + _loc(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            field = prefix + "body"
            msg = (f"invalid JSON at character {err.get('loc', ('', '?'))[-1]}: "
                   f"{err.get('ctx', {}).get('error', msg)}")
        items.append((field or "body", msg))
    if not items:
        return "body", "invalid request"
    return items[0][0], "; ".join(f"{f}: {m}" for f, m in items)


def _add_error_handlers(api: FastAPI) -> None:
    import redis
    from kombu.exceptions import OperationalError

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        field, detail = _messages(list(exc.errors()))
        content_type = request.headers.get("content-type", "")
        if field == "body" and "json" not in content_type.lower() and request.method in (
                "POST", "PUT", "PATCH"):
            detail = ("body: expected a JSON object sent with 'Content-Type: "
                      f"application/json' (got {content_type or 'no Content-Type'!r})")
        return JSONResponse(_error_body("invalid_request", detail, field=field),
                            status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not just one route's
            routes = [r for r in request.app.routes
                      if getattr(r, "path_regex", None) is not None
                      and r.path_regex.match(request.url.path)]
            static = [r for r in routes if "{" not in r.path]  # /batch, not /{job_id}
            headers["Allow"] = ", ".join(sorted(
                {m for r in static or routes for m in getattr(r, "methods", None) or ()}))
        return JSONResponse(_error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=headers)

    @api.exception_handler(InvalidJobError)
    async def _invalid_job(request: Request, exc: InvalidJobError) -> JSONResponse:
        state = getattr(request.app.state, "api", None)
        detail = redact_paths(str(exc), state.settings if state is not None else None)
        return JSONResponse(_error_body("invalid_request", detail), status_code=422)

    async def _broker(request: Request, exc: Exception) -> JSONResponse:
        # The exception's text names hosts, ports or socket paths: for the log only.
        log.warning("broker unavailable: %s", exc)
        return JSONResponse(_error_body("broker_unavailable",
                                        "the queue is unreachable, try again later "
                                        f"({type(exc).__name__})"),
                            status_code=503,
                            headers={"Retry-After": str(BROKER_RETRY_AFTER_S)})

    for kind in (BrokerUnavailableError, redis.ConnectionError, redis.TimeoutError,
                 OperationalError):
        api.add_exception_handler(kind, _broker)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never the exception's text (paths, hosts, data): the log has it.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(_error_body("internal_error",
                                        "unexpected server error; see the server log"),
                            status_code=500)
