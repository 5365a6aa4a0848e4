"""`GET /v1/jobs/{id}/events`: the job's event stream as Server-Sent Events.

SSE ids are the Redis stream ids, so a client that reconnects with `Last-Event-ID` (EventSource does
this by itself) gets exactly the events it missed. The stream ends after the job reaches a terminal
state; comment pings keep proxies from closing an idle connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, Query
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from mediaflow.common.jobs.model import TERMINAL

from .auth import require_tenant_or_token
from .event_hub import Event, Subscription, parse_id
from .problems import Problem, problem_responses
from .services import Services, services

log = logging.getLogger("mediaflow.api.sse")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)
CATCH_UP_COUNT = 500


class _Stream(EventSourceResponse):
    """Frees the subscription however the response ends (even when the body never started)."""

    def __init__(self, sub: Subscription, content: AsyncIterator[ServerSentEvent], **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self.sub = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.sub.close()


async def job_events(svc: Services, sub: Subscription) -> AsyncIterator[ServerSentEvent]:
    """What the client missed (a plain read), then the hub's deliveries. A stream resumed after the
    job's final event ends at once."""

    async def ends(event: Event, more: bool) -> bool:
        _id, name, data = event
        if more or name != "state" or data.get("state") not in TERMINAL_VALUES:
            return False
        # A terminal event can be followed by a retry: end only if the record agrees.
        return (await svc.store.get(sub.job_id)).terminal

    try:
        ended = (await svc.store.get(sub.job_id)).terminal  # read before the catch-up: see its end
        after = sub.after
        while batch := await svc.store.events(sub.job_id, after, count=CATCH_UP_COUNT):
            for position, event in enumerate(batch):
                after = event[0]
                if sub.sent(event[0]):
                    yield ServerSentEvent(data=json.dumps(event[2]), event=event[1], id=event[0])
                    more = position < len(batch) - 1 or len(batch) == CATCH_UP_COUNT
                    if not ended and await ends(event, more):
                        return
            if len(batch) < CATCH_UP_COUNT:
                break
        if ended:
            return
        while (batch := await sub.queue.get()) is not None:
            for position, event in enumerate(batch):
                if sub.sent(event[0]):
                    yield ServerSentEvent(data=json.dumps(event[2]), event=event[1], id=event[0])
                    more = position < len(batch) - 1 or not sub.queue.empty()
                    if await ends(event, more):
                        return
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # The client reconnects with Last-Event-ID and misses nothing.
        log.warning("event stream of %s interrupted: %s", sub.job_id, exc)
    finally:
        sub.close()


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "text/event-stream of `state`, `progress` and `log` events",
            "content": {"text/event-stream": {}},
        },
        **problem_responses(401, 404, 422, 429, 503),
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
    if parse_id(resume) is None:
        raise Problem(
            422,
            "invalid_event_id",
            "Last-Event-ID must be an event id of this stream (e.g. 1700000000000-0; each part below 2^64)",
        )
    await svc.store.get(job_id, tenant)  # 404 for a missing or another tenant's job, before streaming
    sub = svc.events.subscribe(job_id, tenant, resume)
    return _Stream(sub, job_events(svc, sub), ping=svc.sse_ping, send_timeout=30)
