"""`GET /v1/jobs/{id}/events`: the job's event stream as Server-Sent Events.

SSE ids are the Redis stream ids, so a client that reconnects with `Last-Event-ID` (EventSource does
this by itself) gets exactly the events it missed. The stream ends after the job reaches a terminal
state; comment pings keep proxies from closing an idle connection.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, Query
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette import EventSourceResponse, ServerSentEvent

from mediaflow.common.jobs.model import TERMINAL

from .auth import require_tenant_or_token
from .problems import Problem, problem_responses
from .services import Services, services

log = logging.getLogger("mediaflow.api.sse")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

STREAM_ID = re.compile(r"^\d+-\d+$")
BLOCK_MS = 5000
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)


async def job_events(svc: Services, job_id: str, after: str) -> AsyncIterator[ServerSentEvent]:
    try:
        while True:
            batch = await svc.store.events(job_id, after, block_ms=BLOCK_MS)
            for position, (event_id, name, data) in enumerate(batch):
                after = event_id
                yield ServerSentEvent(data=json.dumps(data), event=name, id=event_id)
                last_in_batch = position == len(batch) - 1
                if name == "state" and data.get("state") in TERMINAL_VALUES and last_in_batch:
                    # A terminal event can be followed by a retry: end only if the record agrees.
                    job = await svc.store.get(job_id)
                    if job.terminal:
                        return
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # The client reconnects with Last-Event-ID and misses nothing.
        log.warning("event stream of %s interrupted: %s", job_id, exc)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "text/event-stream of `state`, `progress` and `log` events",
            "content": {"text/event-stream": {}},
        },
        **problem_responses(401, 404, 422, 503),
    },
    summary="Follow a job (SSE; Last-Event-ID replays; ?access_token= for EventSource)",
)
async def stream_events(
    job_id: str,
    tenant: str = Depends(require_tenant_or_token),
    svc: Services = Depends(services),
    last_event_id: str | None = Header(None, description="resume after this event id"),
    after: str | None = Query(None, description="like Last-Event-ID, for clients that cannot set headers"),
) -> EventSourceResponse:
    resume = last_event_id or after or "0-0"
    if not STREAM_ID.match(resume):
        raise Problem(
            422, "invalid_event_id", "Last-Event-ID must be an event id of this stream (e.g. 1700000000000-0)"
        )
    await svc.store.get(job_id, tenant)  # 404 for a missing or another tenant's job, before streaming
    return EventSourceResponse(job_events(svc, job_id, resume), ping=svc.sse_ping, send_timeout=30)
