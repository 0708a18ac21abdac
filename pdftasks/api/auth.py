"""API keys and tenants, the caller of a request, and the FastAPI dependencies that
authenticate and rate-limit it."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pdftasks.api.errors import ApiError

if TYPE_CHECKING:
    from pdftasks.api.state import ApiState

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")


# Keys and tenants.


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of an API key: what ``PDFTASKS_API_KEYS`` holds."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A new random API key (256 bits, URL-safe)."""
    return "pdft_" + secrets.token_urlsafe(32)


def parse_api_keys(spec: str) -> dict[str, str]:
    """``"tenant:sha256hex,..."`` → ``{sha256hex: tenant}``. A tenant may have several keys.

    Raises:
        ValueError: an entry is not ``tenant:<64 hex digits>``, or a hash appears twice.
    """
    out: dict[str, str] = {}
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        tenant, sep, digest = entry.rpartition(":")
        digest = digest.strip().lower()
        tenant = tenant.strip()
        if not sep or not _TENANT.match(tenant) or not _SHA256_HEX.match(digest):
            raise ValueError(
                f"PDFTASKS_API_KEYS entry {entry[:80]!r} is not tenant:<sha256 hex of the key> "
                "(tenant: 1-64 letters, digits, '_', '.', '-', starting with a letter or "
                "digit; make the hash with `pdftasks api --hash-key KEY`)")
        if digest in out:
            raise ValueError(f"PDFTASKS_API_KEYS lists the key hash {digest[:12]}… twice")
        out[digest] = tenant
    return out


@dataclass(frozen=True)
class Caller:
    """Who is calling (the tenant of the API key and the key's id, a hash prefix), and the
    API state serving the request."""

    tenant: str
    key_id: str
    state: ApiState = dataclasses.field(repr=False, compare=False)


bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer <key>")


async def _state(request: Request) -> ApiState:
    state: ApiState | None = getattr(request.app.state, "api", None)
    if state is None:
        raise ApiError(503, "starting", "the API is starting", headers={"Retry-After": "1"})
    return state


async def authenticated(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Security(bearer)
                        ) -> Caller:
    """Dependency: the caller of a job route (401 without a valid key; 429 over the limit)."""
    state = await _state(request)
    caller = state.authenticate(credentials)
    await state.rate_limit(caller)
    return caller


def _open_or_authenticated(flag: str) -> Any:
    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Security(bearer)
                         ) -> ApiState:
        state = await _state(request)
        if not getattr(state.settings, flag):
            await state.rate_limit(state.authenticate(credentials))
        return state

    return dependency


CallerDep = Annotated[Caller, Depends(authenticated)]
