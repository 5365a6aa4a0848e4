"""Errors with stable machine-readable codes, shared by the gateway (problem details) and workers."""

from __future__ import annotations

from typing import Any


class MediaflowError(Exception):
    """An expected failure: `code` is stable, `message` is for humans, `status` for HTTP."""

    status = 400
    code = "bad_request"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable
        self.detail = detail or {}


class NotFound(MediaflowError):
    status, code = 404, "not_found"


class Conflict(MediaflowError):
    status, code = 409, "conflict"


class InvalidInput(MediaflowError):
    status, code = 422, "invalid_input"


class MediaError(MediaflowError):
    """The media itself is unusable (no audio, corrupt, zero length, ...)."""

    status, code = 422, "invalid_media"


class Unavailable(MediaflowError):
    status, code, retryable = 503, "unavailable", True
