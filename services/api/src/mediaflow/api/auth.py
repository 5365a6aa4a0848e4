"""API keys -> tenants. Keys are only held as SHA-256 digests (settings.tenant_by_key_hash)."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mediaflow.common.settings import Settings

from .problems import Problem, problem_body

bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")


class KeyRing:
    """Maps a presented key to its tenant, comparing digests in constant time."""

    def __init__(self, settings: Settings) -> None:
        self.entries = [(digest.encode(), tenant) for digest, tenant in settings.tenant_by_key_hash().items()]

    def tenant_for(self, api_key: str) -> str | None:
        digest = hashlib.sha256(api_key.encode()).hexdigest().encode()
        found: str | None = None
        for candidate, tenant in self.entries:  # no early exit: timing does not tell which key matched
            if hmac.compare_digest(candidate, digest):
                found = tenant
        return found


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="mediaflow"'})


def unauthorized_body(detail: str, instance: str) -> dict[str, object]:
    return problem_body(401, "unauthorized", detail, instance=instance)


def _resolve(request: Request, key: str | None) -> str:
    checked = request.scope.get("mediaflow.tenant")  # GuardMiddleware already checked the key
    if checked is not None:
        request.state.tenant = checked
        return str(checked)
    if not key:
        raise _unauthorized("send an API key: Authorization: Bearer <key>")
    tenant = request.app.state.services.keyring.tenant_for(key)
    if tenant is None:
        raise _unauthorized("the API key is not valid")
    request.state.tenant = tenant
    return tenant


async def require_tenant(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
    """The tenant of the request's bearer key (401 otherwise)."""
    return _resolve(request, credentials.credentials if credentials else None)


async def require_tenant_or_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    access_token: str | None = None,
) -> str:
    """Like require_tenant, but also accepts `?access_token=` — only for the SSE route, because a
    browser's EventSource cannot send headers."""
    key = credentials.credentials if credentials else access_token
    return _resolve(request, key)
