"""RFC 9457 problem details for every error the gateway returns.

Each problem carries a stable machine-readable `code` (also the last segment of `type`), so clients
branch on `code` and humans read `title`/`detail`. Routing errors (404/405), request validation,
malformed JSON, MediaflowError and a lost Redis connection all end up here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediaflow.common.errors import MediaflowError

log = logging.getLogger("mediaflow.api")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://mediaflow.dev/problems/"

# Codes for plain HTTP errors raised by the framework (routing, methods, ...).
CODE_FOR_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media",
    416: "range_not_satisfiable",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    507: "insufficient_storage",
}


def problem_body(
    status: int, code: str, detail: str = "", *, instance: str = "", title: str | None = None, **extensions: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
    }
    body.update(extensions)
    return body


def problem(
    status: int,
    code: str,
    detail: str = "",
    *,
    instance: str = "",
    headers: dict[str, str] | None = None,
    title: str | None = None,
    **extensions: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, detail, instance=instance, title=title, **extensions),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


class Problem(Exception):
    """Raised by routes for errors that have no MediaflowError class of their own."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers
        self.extensions = extensions


def _instance(request: Request) -> str:
    return request.url.path


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem(exc.status, exc.code, exc.detail, instance=_instance(request), headers=exc.headers, **exc.extensions)


async def _on_mediaflow_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MediaflowError)
    extensions = {"errors": exc.detail["errors"]} if "errors" in exc.detail else {}
    return problem(exc.status, exc.code, exc.message, instance=_instance(request), **extensions)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = CODE_FOR_STATUS.get(status, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    headers = dict(getattr(exc, "headers", None) or {})
    extensions: dict[str, Any] = {}
    if status == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
        headers["Allow"] = allowed_methods(request)
    elif status == 413 and isinstance(getattr(exc, "limit", None), int):
        extensions["limit"] = exc.limit  # type: ignore[attr-defined]
    return problem(status, code, detail, instance=_instance(request), headers=headers or None, **extensions)


def allowed_methods(request: Request) -> str:
    """The methods the API documents for this path (Starlette's 405 names only the first route's). A
    literal path wins over a template: /v1/jobs/{job_id}/events is not /v1/jobs/{job_id}."""
    paths: dict[str, dict[str, Any]] = request.app.openapi()["paths"]
    path = request.url.path
    template = path if path in paths else next((t for t in paths if _template(t).fullmatch(path)), None)
    return ", ".join(m.upper() for m in paths.get(template or "", {}) if m != "parameters")


def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    if any(e.get("type") == "json_invalid" for e in raw):
        first = next(e for e in raw if e.get("type") == "json_invalid")
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        return problem(
            400, "malformed_json", f"the request body is not valid JSON: {reason}", instance=_instance(request)
        )
    errors = [
        {"loc": _printable(".".join(str(p) for p in e.get("loc", ()))), "msg": _printable(e.get("msg", ""))}
        for e in raw
    ]
    first_error = errors[0] if errors else {"loc": "", "msg": "invalid request"}
    return problem(
        422,
        "invalid_request",
        f"{first_error['loc']}: {first_error['msg']}",
        instance=_instance(request),
        errors=errors,
    )


def _printable(text: str) -> str:
    """Text a JSON response can carry (a lone surrogate from the request is shown escaped)."""
    return text.encode("utf-8", "backslashreplace").decode()


def _store_503(code: str, message: str, retry_after: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """A handler for the job store (Redis) failing: 503 with `code` and a Retry-After."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        log.warning("job store: %s: %s", code, exc)
        return problem(503, code, message, instance=_instance(request), headers={"Retry-After": str(retry_after)})

    return handler


_on_redis_down = _store_503("store_unavailable", "the job store (Redis) is unreachable; try again shortly", 1)
_on_redis_full = _store_503("store_full", "the job store (Redis) is out of memory; try again later", 5)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal_error", "an unexpected error occurred", instance=_instance(request))


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(MediaflowError, _on_mediaflow_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(RedisConnectionError, _on_redis_down)
    app.add_exception_handler(RedisTimeoutError, _on_redis_down)
    app.add_exception_handler(RedisOutOfMemoryError, _on_redis_full)
    app.add_exception_handler(Exception, _on_unexpected)


# OpenAPI: the problem schema every error response shares.
PROBLEM_SCHEMA = {
    "description": "RFC 9457 problem details",
    "content": {
        PROBLEM_JSON: {
            "schema": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                    "instance": {"type": "string"},
                },
                "required": ["type", "title", "status", "code"],
            }
        }
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: PROBLEM_SCHEMA for s in statuses}
