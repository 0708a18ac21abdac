"""ASGI middleware of the HTTP API: the body limit (size and JSON depth) and latency."""

from __future__ import annotations

import json
import re
import time
from itertools import accumulate

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pdftasks.api.constants import BODY_DEPTH_MARGIN, INLINE_BYTES
from pdftasks.api.errors import _error_body

#: A JSON string once its escapes are gone (see json_depth_above).
_JSON_STRING = re.compile(rb'"[^"]*"')
#: Brackets as +1 / -1 (signed bytes), everything else dropped.
_BRACKET_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_above(body: bytes, limit: int) -> int:
    """How deep the JSON text ``body`` nests arrays and objects if that is more than
    ``limit``, else 0; without parsing it (no recursion, a few passes in C).

    Strings are skipped (their escapes removed first, so each ends where JSON says).
    Text that is not JSON is measured up to an unterminated string; its parse error comes
    later, from the parser. About 0.4 s for 10 MB of nothing but brackets."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return 0
    text = _JSON_STRING.sub(b"", body.replace(b"\\\\", b"").replace(b'\\"', b""))
    quote = text.find(b'"')
    if quote >= 0:
        text = text[:quote]
    steps = memoryview(text.translate(_BRACKET_STEPS, _NOT_BRACKETS)).cast("b")
    level = deepest = 0
    for start in range(0, len(steps), 1 << 16):  # chunks: other threads run in between
        levels = list(accumulate(steps[start:start + (1 << 16)], initial=level))
        deepest, level = max(deepest, max(levels)), levels[-1]
    return deepest if deepest > limit else 0


class BodyLimitMiddleware:
    """413 for bodies above ``max_bytes``: by Content-Length at once, else while reading.

    With ``max_depth``, a JSON body (or one without a Content-Type, which FastAPI parses as
    JSON) nested deeper than that is a 422 before anything parses it: the JSON parser,
    pydantic and every serializer after them recurse per level, and a 100,000-level body
    must not reach them."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def _reject(self, send: Send, size: str) -> None:
        body = json.dumps(_error_body(
            "payload_too_large",
            f"request body is {size} bytes; the limit is {self.max_bytes} bytes "
            "(PDFTASKS_API_MAX_BODY_BYTES)")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def _too_deep(self, scope: Scope, body: bytes) -> bytes | None:
        """The 422 body for a JSON body nested deeper than ``max_depth``, else None."""
        if self.max_depth is None or not body:
            return None
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
        if content_type is not None and b"json" not in content_type.lower():
            return None
        if len(body) > INLINE_BYTES:
            depth = await run_in_threadpool(json_depth_above, body, self.max_depth)
        else:
            depth = json_depth_above(body, self.max_depth)
        if not depth:
            return None
        data_depth = self.max_depth - BODY_DEPTH_MARGIN
        detail = (f"body: the JSON is nested {depth} levels deep, above the limit of "
                  f"{self.max_depth} (job data may be nested at most {data_depth} levels: "
                  "PDFTASKS_MAX_DATA_DEPTH)")
        return json.dumps(_error_body("invalid_request", detail, field="body")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await self._reject(send, str(declared))
                return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send, f"more than {self.max_bytes}")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = await self._too_deep(scope, body)
        if refusal is not None:
            await send({"type": "http.response.start", "status": 422,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(refusal)).encode())]})
            await send({"type": "http.response.body", "body": refusal})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class LatencyMiddleware:
    """Observes every request's latency, labelled by route template (not by raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            state = getattr(scope.get("app"), "state", None)
            api = getattr(state, "api", None) if state is not None else None
            if api is not None:
                route = scope.get("route")
                api.metrics.observe(scope["method"], getattr(route, "path", "unmatched"),
                                    status, time.perf_counter() - started)
