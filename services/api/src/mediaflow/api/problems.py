"""RFC 9457 problem details for every error the gateway returns.

Each problem carries a stable machine-readable `code` (also the last segment of `type`), so clients
branch on `code` and humans read `title`/`detail`. Routing errors (404/405), request validation,
malformed JSON, MediaflowError and a lost Redis connection all end up here.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
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
    if status == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(status, code, detail, instance=_instance(request), headers=getattr(exc, "headers", None))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    if any(e.get("type") == "json_invalid" for e in raw):
        first = next(e for e in raw if e.get("type") == "json_invalid")
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        return problem(
            400, "malformed_json", f"the request body is not valid JSON: {reason}", instance=_instance(request)
        )
    errors = [{"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": e.get("msg", "")} for e in raw]
    first_error = errors[0] if errors else {"loc": "", "msg": "invalid request"}
    return problem(
        422,
        "invalid_request",
        f"{first_error['loc']}: {first_error['msg']}",
        instance=_instance(request),
        errors=errors,
    )


async def _on_redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("job store unreachable: %s", exc)
    return problem(
        503,
        "store_unavailable",
        "the job store (Redis) is unreachable; try again shortly",
        instance=_instance(request),
        headers={"Retry-After": "1"},
    )


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
