"""Artifact downloads with HTTP Range (and HEAD): local files through Starlette's FileResponse (which
implements single and multiple ranges, and HEAD), S3 objects streamed with a ranged GetObject."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from mediaflow.common.jobs.model import Artifact
from mediaflow.common.storage import FileStorage, S3Storage, Storage

from .problems import Problem

CHUNK = 256 * 1024
SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _disposition(name: str) -> str:
    return f'attachment; filename="{name}"'


async def artifact_response(storage: Storage, key: str, artifact: Artifact, request: Request) -> Response:
    if isinstance(storage, FileStorage):
        path = storage.path(key)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise Problem(404, "artifact_not_found", f"artifact {artifact.name!r} is missing from storage") from None
        _check_range(request.headers.get("range"), size)
        return FileResponse(path, media_type=artifact.content_type, filename=artifact.name)
    if isinstance(storage, S3Storage):
        return await _s3_response(storage, key, artifact, request)
    raise Problem(501, "storage_unsupported", "this storage backend cannot serve downloads")


def _check_range(header: str | None, size: int) -> None:
    """FileResponse answers a bad Range with plain text; we answer with problem details first."""
    if not header:
        return
    try:
        FileResponse._parse_range_header(header, size)
    except MalformedRangeHeader as exc:
        raise Problem(400, "malformed_range", exc.content) from None
    except RangeNotSatisfiable:
        raise Problem(
            416, "range_not_satisfiable", f"range outside 0-{size - 1}", headers={"Content-Range": f"bytes */{size}"}
        ) from None


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range; None when absent. Multiple ranges are served
    whole (allowed by RFC 9110)."""
    match = SINGLE_RANGE.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise Problem(
                416, "range_not_satisfiable", "empty suffix range", headers={"Content-Range": f"bytes */{size}"}
            )
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise Problem(
            416, "range_not_satisfiable", f"range outside 0-{size - 1}", headers={"Content-Range": f"bytes */{size}"}
        )
    return start, end


async def _s3_response(storage: S3Storage, key: str, artifact: Artifact, request: Request) -> Response:
    size = await asyncio.to_thread(storage.size, key)
    wanted = _parse_range(request.headers.get("range", ""), size)
    params: dict[str, Any] = {"Bucket": storage.bucket, "Key": storage._key(key)}
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": _disposition(artifact.name)}
    status = 200
    if wanted is not None:
        start, end = wanted
        params["Range"] = f"bytes={start}-{end}"
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        status = 206
    else:
        headers["Content-Length"] = str(size)
    if request.method == "HEAD":  # the headers a GET would send, without fetching the object
        return Response(status_code=status, media_type=artifact.content_type, headers=headers)
    body = (await asyncio.to_thread(lambda: storage.client.get_object(**params)))["Body"]

    async def stream() -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK):
                yield chunk
        finally:
            body.close()

    return StreamingResponse(stream(), status_code=status, media_type=artifact.content_type, headers=headers)
