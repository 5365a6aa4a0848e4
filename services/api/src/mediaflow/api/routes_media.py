"""Media: `POST /v1/media` (streamed upload into storage, sniffed with PyAV, described by the compositor),
list, get, content, delete."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from mediaflow.common.errors import MediaflowError
from mediaflow.common.ids import new_media_id
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import Artifact, Media
from mediaflow.common.jobs.retention import delete_media as delete_media_and_upload
from mediaflow.common.probe import probe_file

from .artifacts import artifact_response
from .auth import require_tenant
from .problems import Problem, problem_responses
from .services import Services, services
from .upload import move_into_storage, receive_upload, temp_dir_for

router = APIRouter(prefix="/v1/media", tags=["media"])
MEDIA_ID = re.compile(r"^m_[0-9a-z]{26}$")


class MediaResource(BaseModel):
    id: str
    filename: str
    content_type: str
    size: int
    duration: float | None
    format: str
    streams: list[dict[str, Any]]
    probed_by: str  # "compositor" (gRPC Probe) or "gateway" (local PyAV fallback)
    created_at: str


def media_resource(media: Media) -> dict[str, Any]:
    return media.model_dump(mode="json", exclude={"key", "tenant"})


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "the media file"}},
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=MediaResource,
    openapi_extra=UPLOAD_BODY,
    responses=problem_responses(400, 401, 413, 415, 422, 503, 507),
    summary="Upload media (multipart/form-data, streamed to storage)",
)
async def upload_media(
    request: Request, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> dict[str, Any]:
    settings = svc.settings
    await svc.pressure.check_upload()
    upload = await receive_upload(request, settings.max_upload_bytes, temp_dir_for(svc.storage))
    try:
        # Sniff before anything is stored: non-media is refused with 415 unsupported_media.
        try:
            local_info = await asyncio.to_thread(probe_file, upload.path)
        except MediaflowError as exc:
            # PyAV names the file it failed on: our temporary path, which is nobody's business.
            exc.message = exc.message.replace(str(upload.path), upload.filename)
            raise
        media_id = new_media_id()
        key = keys.upload(media_id, upload.filename)
        size = await asyncio.to_thread(move_into_storage, svc.storage, key, upload.path)
    finally:
        upload.path.unlink(missing_ok=True)

    info = await svc.compositor.probe(key)
    probed_by = "compositor"
    if info is None:
        info, probed_by = local_info, "gateway"
    media = Media(
        id=media_id,
        tenant=tenant,
        filename=upload.filename,
        content_type=upload.content_type,
        size=size,
        duration=info.get("duration"),
        format=info.get("format", ""),
        streams=info.get("streams", []),
        key=key,
        probed_by=probed_by,
    )
    try:
        await svc.media.put(media)
    except BaseException:
        # No record, no bytes: an upload refused for any reason (Redis down, ...) leaves nothing behind.
        await asyncio.to_thread(svc.storage.delete_prefix, keys.upload_prefix(media_id))
        raise
    svc.metrics.uploads.inc(size)
    return media_resource(media)


class MediaList(BaseModel):
    media: list[MediaResource]
    next_cursor: str | None


@router.get(
    "", response_model=MediaList, responses=problem_responses(401, 422), summary="List media, newest first (cursor)"
)
async def list_media(
    tenant: str = Depends(require_tenant),
    svc: Services = Depends(services),
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> dict[str, Any]:
    if cursor is not None and not MEDIA_ID.match(cursor):
        raise Problem(422, "invalid_cursor", "cursor must be the next_cursor of a previous page")
    found, next_cursor = await svc.store.list_media(tenant, limit, cursor)
    return {"media": [media_resource(m) for m in found], "next_cursor": next_cursor}


@router.get(
    "/{media_id}", response_model=MediaResource, responses=problem_responses(401, 404), summary="Get a media resource"
)
async def get_media(
    media_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> dict[str, Any]:
    media = await svc.media.get(media_id, tenant)
    return media_resource(media)


@router.get(
    "/{media_id}/content",
    response_class=Response,
    responses={
        200: {"description": "the upload, with its own type (audio/flac, video/mp4, ...)", "content": {"*/*": {}}},
        206: {"description": "a range"},
        **problem_responses(401, 404, 416),
    },
    summary="The uploaded bytes (HTTP Range honoured), e.g. for the console's player",
)
async def get_media_content(
    media_id: str, request: Request, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> Response:
    media = await svc.media.get(media_id, tenant)
    content = Artifact(name=media.filename or media.id, size=media.size, content_type=media.content_type or "")
    return await artifact_response(svc.storage, media.key, content, request)


@router.delete(
    "/{media_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 404, 409, 503),
    summary="Delete media and its upload (409 media_in_use while a queued or running job names it)",
)
async def delete_media(
    media_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> Response:
    await delete_media_and_upload(svc.store, svc.storage, media_id, tenant)
    svc.media.forget(media_id)
    return Response(status_code=204)
