"""``Idempotency-Key``: the same job for the same key, tenant and body."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from pdftasks.api.constants import IDEMPOTENCY_CLAIM_S
from pdftasks.api.errors import ApiError
from pdftasks.options import redact_options

if TYPE_CHECKING:
    from pdftasks.api.auth import Caller
    from pdftasks.api.state import ApiState


def _without_secrets(dumped: Any) -> Any:
    """The request body with its secret options (passwords) redacted: they take no part in
    the fingerprint kept in Redis, so nothing derived from them is stored."""
    if isinstance(dumped, dict):
        out = dict(dumped)
        if isinstance(out.get("options"), dict):
            out["options"] = redact_options(out["options"])
        if isinstance(out.get("jobs"), list):
            out["jobs"] = [_without_secrets(job) for job in out["jobs"]]
        return out
    return dumped


class Idempotency:
    """One ``Idempotency-Key`` of one tenant: ``{ns}:idem:{tenant}:{sha256(key)}`` holds
    ``{"hash", "state", "status", "body"}`` for ``PDFTASKS_IDEMPOTENCY_TTL_S``."""

    def __init__(self, state: ApiState, caller: Caller, key: str, route: str,
                 body: BaseModel) -> None:
        self.state = state
        self.key = f"{state.ns}:idem:{caller.tenant}:{hashlib.sha256(key.encode()).hexdigest()}"
        # Made after the data checks; the body's nesting is bounded before it is parsed
        # (BodyLimitMiddleware), so this cannot recurse deeply. Should anything still be
        # unserializable, it is the client's body: a 422, not a 500.
        try:
            canonical = json.dumps([route, _without_secrets(body.model_dump(mode="json"))],
                                   sort_keys=True, separators=(",", ":"))
        except (ValueError, TypeError, RecursionError) as exc:
            raise ApiError(422, "invalid_request", "body: cannot be used with an "
                           "Idempotency-Key: it cannot be serialized", field="body") from exc
        self.fingerprint = hashlib.sha256(canonical.encode()).hexdigest()

    def _claim(self) -> dict[str, Any]:
        # Held briefly while the request runs: a process that dies mid-request frees it.
        return {"name": self.key, "value": json.dumps({"hash": self.fingerprint,
                                                       "state": "running"}),
                "nx": True, "ex": IDEMPOTENCY_CLAIM_S}

    def begin(self) -> JSONResponse | None:
        """None: go ahead (the key is now reserved). Else the response to send."""
        for _ in range(3):
            if self.state.redis.set(**self._claim()):
                return None
            raw = self.state.redis.get(self.key)
            if raw is not None:  # else it expired in between: claim again
                return self._replay(raw)
        raise ApiError(409, "idempotency_in_progress", "Idempotency-Key is busy; retry")

    async def begin_async(self) -> JSONResponse | None:
        """:meth:`begin` on the event loop."""
        for _ in range(3):
            if await self.state.aredis.set(**self._claim()):
                return None
            raw = await self.state.aredis.get(self.key)
            if raw is not None:
                return self._replay(raw)
        raise ApiError(409, "idempotency_in_progress", "Idempotency-Key is busy; retry")

    def _replay(self, raw: str | bytes) -> JSONResponse:
        stored = json.loads(raw)
        if stored.get("hash") != self.fingerprint:
            raise ApiError(409, "idempotency_conflict",
                           "this Idempotency-Key was already used with a different request "
                           "body; use a new key for a new request")
        if stored.get("state") != "done":
            raise ApiError(409, "idempotency_in_progress",
                           "a request with this Idempotency-Key is still being processed; "
                           "retry shortly", headers={"Retry-After": "1"})
        return JSONResponse(stored["body"], status_code=stored["status"],
                            headers={"Idempotent-Replayed": "true"})

    def finish(self, pipe: Any, status: int, body: Any) -> None:
        done = json.dumps({"hash": self.fingerprint, "state": "done", "status": status,
                           "body": body})
        pipe.set(self.key, done, xx=True, ex=self.state.settings.idempotency_ttl_s)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.state.redis.delete(self.key)

    async def abort_async(self) -> None:
        with contextlib.suppress(Exception):
            await self.state.aredis.delete(self.key)
