"""Batches: one template applied to many inputs, submitted, followed, cancelled, retried and deleted as
one unit (`mediaflow.common.jobs.batches`). Each item is validated on its own: a bad item is rejected
with its code and the others go ahead."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette import EventSourceResponse, ServerSentEvent

from mediaflow.common.errors import MediaflowError, NotFound
from mediaflow.common.ids import new_batch_id
from mediaflow.common.jobs.batches import ENDED, Batch, BatchItem, BatchStore, cancel_batch, retry_batch
from mediaflow.common.jobs.model import Job, JobType
from mediaflow.common.jobs.retention import delete_batch as delete_batch_and_jobs
from mediaflow.common.options import parse_options
from mediaflow.common.storage import allowed_directory_files
from mediaflow.common.telemetry import send_span

from .auth import require_tenant, require_tenant_or_token
from .problems import Problem, problem_responses
from .services import Services, services
from .submission import MediaCache, build_job, parse_priority, parse_type, rejection

router = APIRouter(prefix="/v1/batches", tags=["batches"])

BATCH_ID = re.compile(r"^b_[0-9a-z]{26}$")
POLL_S = 0.5  # how often a batch's event stream looks at its jobs


class Directory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="an absolute directory under one of the server's allowed roots")
    glob: str = Field("*", description="relative pattern of the files to take, e.g. *.mp4 or **/*.wav")


class BatchRequest(BaseModel):
    """`items` (each `{"media_id"}`, `{"url"}` or `{"path"}`) and/or a server `directory`; the
    `template` is a job body without `input` (type, priority, options, webhook_url)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [{"media_id": "m_01j..."}, {"url": "https://example.com/talk.mp4"}],
                    "template": {"type": "caption", "options": {"mode": "burn"}},
                },
                {"directory": {"path": "/srv/media/lectures", "glob": "*.mp4"}, "template": {"type": "transcribe"}},
            ]
        },
    )

    items: list[Any] = Field(default_factory=list)
    directory: Directory | None = None
    template: dict[str, Any]


class BatchAccepted(BaseModel):
    index: int
    job_id: str


class BatchRejected(BaseModel):
    index: int
    code: str
    detail: str
    status: int


class BatchCreated(BaseModel):
    id: str
    accepted: list[BatchAccepted]
    rejected: list[BatchRejected]


class BatchItemView(BaseModel):
    index: int
    job_id: str
    source: str
    state: str  # a job state, or `deleted` (the job was deleted or expired on its own)
    progress: float
    stage: str | None = None
    type: str | None = None
    error: dict[str, Any] | None = None


class BatchResource(BaseModel):
    id: str
    state: str  # queued | running | succeeded | failed | cancelled | partial (ended, mixed) | deleted
    progress: float
    counts: dict[str, int]
    total: int
    created_at: str
    template: dict[str, Any]
    rejected: list[dict[str, Any]]
    items: list[BatchItemView] | None = None


class BatchList(BaseModel):
    batches: list[BatchResource]
    next_cursor: str | None


def _check_template(template: dict[str, Any]) -> JobType:
    """A template wrong for every item is one 422 for the request, not one rejection per item."""
    if "input" in template:
        raise Problem(422, "invalid_template", "the template must not name an input: the items do")
    job_type = parse_type(template.get("type"))
    parse_priority(template.get("priority"))
    raw = template.get("options")
    if raw is not None and not isinstance(raw, dict):
        raise Problem(422, "invalid_options", "template.options must be an object")
    if job_type == JobType.compose:
        placeholders = [i for i in (raw or {}).get("items") or [] if isinstance(i, dict) and i.get("item") is True]
        if len(placeholders) != 1:
            raise Problem(
                422,
                "invalid_template",
                'a compose template names its one per-item clip as a timeline item with "item": true',
            )
        raw = _job_body(template, job_type, {"media_id": "m_item"})["options"]  # its shape, with a stand-in clip
    parse_options(job_type, raw)
    return job_type


def _job_body(template: dict[str, Any], job_type: JobType, source: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(template)
    if job_type != JobType.compose:
        return {**body, "input": source}
    for item in body["options"]["items"]:
        if item.get("item") is True:
            del item["item"]
            item.update(source)
    return body


def _source_label(source: Any) -> str:
    if not isinstance(source, dict):
        return ""
    value = source.get("media_id") or source.get("url") or source.get("path") or ""
    return str(value) if isinstance(value, str) else ""


@router.post(
    "",
    status_code=202,
    response_model=BatchCreated,
    responses={
        **problem_responses(400, 401, 403, 404, 413, 503),
        422: {"description": "a bad template, no items, or every item rejected (problem with `rejected`)"},
    },
    summary="Submit a batch: one template, many inputs (each item accepted or rejected on its own)",
)
async def submit_batch(
    body: BatchRequest, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> JSONResponse:
    limit = svc.settings.max_batch_jobs
    job_type = _check_template(body.template)
    sources: list[Any] = list(body.items)
    if len(sources) > limit:
        raise Problem(413, "batch_too_large", f"a batch holds at most {limit} items", limit=limit)
    if body.directory is not None:
        paths = await asyncio.to_thread(
            allowed_directory_files,
            body.directory.path,
            body.directory.glob,
            svc.settings.allowed_roots,
            limit - len(sources),
        )
        sources += [{"path": str(p)} for p in paths]
    if len(sources) > limit:
        raise Problem(413, "batch_too_large", f"a batch holds at most {limit} items", limit=limit)
    if not sources:
        raise Problem(422, "batch_empty", "the batch has no items (give items or a directory with matching files)")
    await svc.pressure.check_submit()

    media = MediaCache(svc, tenant)
    batch = Batch(id=new_batch_id(), template=body.template, tenant=tenant)
    jobs: list[Job] = []
    for index, source in enumerate(sources):
        try:
            if not isinstance(source, dict):
                raise MediaflowError(
                    'an item is an object: {"media_id": ...}, {"url": ...} or {"path": ...}',
                    code="invalid_input",
                    status=422,
                )
            job = await build_job(_job_body(body.template, job_type, source), tenant, svc, media)
        except Exception as exc:
            batch.rejected.append(rejection(index, exc))
            continue
        job.batch_id = batch.id
        label = source.get("media_id")
        if label and label in media.known:
            label = media.known[label].filename or label
        batch.items.append(BatchItem(index=index, job_id=job.id, source=label or _source_label(source)))
        jobs.append(job)
    if not jobs:
        raise Problem(422, "batch_rejected", "every item of the batch was rejected", rejected=batch.rejected)
    for job in jobs:
        with send_span(job.queue, job.id) as traceparent:
            job.traceparent = traceparent
    await svc.dispatcher.submit_many(jobs, also=lambda pipe: BatchStore.add(pipe, batch))
    for job in jobs:
        svc.metrics.jobs_submitted.labels(job.type.value).inc()
    created = {
        "id": batch.id,
        "accepted": [{"index": item.index, "job_id": item.job_id} for item in batch.items],
        "rejected": batch.rejected,
    }
    return JSONResponse(created, status_code=202, headers={"Location": f"/v1/batches/{batch.id}"})


def _batches(svc: Services) -> BatchStore:
    return BatchStore(svc.redis)


async def _get(svc: Services, batch_id: str, tenant: str) -> Batch:
    if not BATCH_ID.match(batch_id):
        raise NotFound(f"batch {batch_id} does not exist", code="batch_not_found")
    return await _batches(svc).get(batch_id, tenant)


@router.get(
    "", response_model=BatchList, responses=problem_responses(401, 422, 503), summary="List batches, newest first"
)
async def list_batches(
    tenant: str = Depends(require_tenant),
    svc: Services = Depends(services),
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> JSONResponse:
    if cursor is not None and not BATCH_ID.match(cursor):
        raise Problem(422, "invalid_cursor", "cursor must be the next_cursor of a previous page")
    found, next_cursor = await _batches(svc).page(tenant, limit, cursor)
    return JSONResponse({"batches": [b.public(with_items=False) for b in found], "next_cursor": next_cursor})


@router.get(
    "/{batch_id}",
    response_model=BatchResource,
    responses=problem_responses(401, 404, 503),
    summary="Get a batch: state, progress, counts by state, and each item's job",
)
async def get_batch(
    batch_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> JSONResponse:
    return JSONResponse((await _get(svc, batch_id, tenant)).public())


@router.post(
    "/{batch_id}/cancel",
    status_code=202,
    response_model=BatchResource,
    responses=problem_responses(401, 404, 503),
    summary="Cancel every item of the batch that has not ended",
)
async def cancel(
    batch_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> JSONResponse:
    batch = await _get(svc, batch_id, tenant)
    await cancel_batch(svc.dispatcher, batch)
    return JSONResponse((await _batches(svc).with_jobs(batch)).public(), status_code=202)


@router.post(
    "/{batch_id}/retry",
    status_code=202,
    response_model=BatchResource,
    responses=problem_responses(401, 404, 409, 503),
    summary="Retry the batch's failed and cancelled items (409 nothing_to_retry when there are none)",
)
async def retry(
    batch_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> JSONResponse:
    batch = await _get(svc, batch_id, tenant)
    if not await retry_batch(svc.dispatcher, batch):
        raise Problem(409, "nothing_to_retry", f"batch {batch_id} has no failed or cancelled item")
    return JSONResponse((await _batches(svc).with_jobs(batch)).public(), status_code=202)


@router.delete(
    "/{batch_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 404, 503),
    summary="Delete a batch: cancel what still runs, then remove every job it made, with its files",
)
async def delete_batch(
    batch_id: str, tenant: str = Depends(require_tenant), svc: Services = Depends(services)
) -> Response:
    batch = await _get(svc, batch_id, tenant)
    await delete_batch_and_jobs(svc.dispatcher, svc.storage, batch)
    return Response(status_code=204)


async def batch_events(svc: Services, batch: Batch) -> AsyncIterator[ServerSentEvent]:
    """`batch` (the whole resource) first; then, as jobs move, `item` for each item that changed and
    `batch` without items for the totals; the stream ends after the batch has ended."""
    store = _batches(svc)
    sequence = 0

    def event(name: str, data: dict[str, Any]) -> ServerSentEvent:
        nonlocal sequence
        sequence += 1
        return ServerSentEvent(data=json.dumps(data), event=name, id=str(sequence))

    current = batch.public()
    yield event("batch", current)
    seen = {item["index"]: item for item in current["items"]}
    summary = {k: v for k, v in current.items() if k != "items"}
    try:
        while current["state"] not in ENDED:
            await asyncio.sleep(POLL_S)
            if not await store.exists(batch.id):
                yield event("deleted", {"id": batch.id})
                return
            current = (await store.with_jobs(batch)).public()
            for item in current["items"]:
                if seen.get(item["index"]) != item:
                    seen[item["index"]] = item
                    yield event("item", item)
            now = {k: v for k, v in current.items() if k != "items"}
            if now != summary:
                summary = now
                yield event("batch", now)
    except (RedisConnectionError, RedisTimeoutError):
        return  # the client reconnects and gets the whole batch again


@router.get(
    "/{batch_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"description": "text/event-stream of `batch` and `item` events", "content": {"text/event-stream": {}}},
        **problem_responses(401, 404, 503),
    },
    summary="Follow a batch (SSE; ?access_token= for EventSource)",
)
async def stream_batch(
    batch_id: str, tenant: str = Depends(require_tenant_or_token), svc: Services = Depends(services)
) -> EventSourceResponse:
    batch = await _get(svc, batch_id, tenant)
    return EventSourceResponse(batch_events(svc, batch), ping=svc.sse_ping, send_timeout=30)
