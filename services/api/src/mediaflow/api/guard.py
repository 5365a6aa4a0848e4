"""The gate in front of every `/v1/*` route, before any body is read: the API key (401), then the
declared body size (413), then the body's size again while the route streams it.

A pure ASGI middleware, because FastAPI resolves a route's dependencies (auth among them) only after
it has read and parsed the body: a request without a valid key must not cost a 2 GB upload.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import KeyRing, unauthorized_body
from .problems import PROBLEM_JSON, problem_body
from .upload import DRAIN_BYTES, ENVELOPE_SLACK

TENANT_SCOPE_KEY = "mediaflow.tenant"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes its limit; FastAPI re-raises HTTPExceptions
    from body parsing, so the route answers 413 payload_too_large (problems.py)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds the limit of {limit} bytes")
        self.limit = limit


def body_limit(scope: Scope, max_json: int, max_upload: int) -> int:
    """Multipart: the upload route answers 413 itself at the exact limit, after draining a little
    more so the client reads its answer; this is the hard stop behind it."""
    content_type = _header(scope, b"content-type").split(";")[0].strip().lower()
    return max_upload + ENVELOPE_SLACK + DRAIN_BYTES if content_type == "multipart/form-data" else max_json


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def presented_key(scope: Scope) -> str | None:
    """The bearer key; `?access_token=` only on the SSE route (EventSource cannot send headers)."""
    scheme, _, credentials = _header(scope, b"authorization").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if scope["path"].endswith("/events"):
        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("access_token")
        if tokens:
            return tokens[0]
    return None


class GuardMiddleware:
    def __init__(
        self, app: ASGIApp, keyring: Callable[[], KeyRing], max_json_bytes: int, max_upload_bytes: int
    ) -> None:
        self.app, self.keyring = app, keyring
        self.max_json, self.max_upload = max_json_bytes, max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        tenant = self.keyring().tenant_for(key) if key else None
        if tenant is None:
            detail = "the API key is not valid" if key else "send an API key: Authorization: Bearer <key>"
            await _respond(
                send, 401, unauthorized_body(detail, scope["path"]), {"www-authenticate": 'Bearer realm="mediaflow"'}
            )
            return
        scope[TENANT_SCOPE_KEY] = tenant

        limit = body_limit(scope, self.max_json, self.max_upload)
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            body = problem_body(
                413, "payload_too_large", f"the request body exceeds the limit of {limit} bytes", instance=scope["path"]
            )
            await _respond(send, 413, body | {"limit": limit}, {})
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _respond(send: Send, status: int, body: dict[str, object], headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
