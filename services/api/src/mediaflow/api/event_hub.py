"""One Redis connection for every open event stream of a gateway process.

A single reader task blocks in one XREAD over the streams of every followed job and hands what it
reads to the subscribers of each job. A new subscriber first reads what it missed with a plain
(non-blocking) read, then takes the hub's deliveries, dropping ids it already sent; a job the reader
did not follow yet wakes it with CLIENT UNBLOCK so the new stream joins the XREAD at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mediaflow.common.jobs import keys

from .problems import Problem

log = logging.getLogger("mediaflow.api.sse")

Event = tuple[str, str, dict[str, Any]]  # (stream id, event name, data)
BLOCK_MS = 2000  # a lost wake-up costs at most this much delay
MAX_PENDING = 1000  # a subscriber this far behind is dropped (its client resumes with Last-Event-ID)
MAX_ID_PART = 2**64 - 1


def parse_id(raw: str) -> tuple[int, int] | None:
    """A stream id `ms-seq` as a pair, or None when it is not one Redis could hold."""
    ms, sep, seq = raw.partition("-")
    if not (sep and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
        return None
    pair = (int(ms), int(seq))
    return pair if max(pair) <= MAX_ID_PART else None


def decode_entries(entries: list[Any]) -> list[Event]:
    out: list[Event] = []
    for entry_id, fields in entries:
        f = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        out.append((eid, f["event"], json.loads(f["data"])))
    return out


class Subscription:
    def __init__(self, hub: EventHub, job_id: str, tenant: str, after: str) -> None:
        self.hub, self.job_id, self.tenant = hub, job_id, tenant
        self.after = after
        self.last = parse_id(after) or (0, 0)
        self.queue: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self.closed = False

    def sent(self, event_id: str) -> bool:
        """Record `event_id` as sent; False when it was sent already."""
        position = parse_id(event_id) or (0, 0)
        if position <= self.last:
            return False
        self.last = position
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub._remove(self)


class EventHub:
    def __init__(self, redis_url: str, pool: Redis, per_tenant: int) -> None:
        # The reader's own connection: a blocked XREAD must not hold one of the pool's.
        self.reader = Redis.from_url(
            redis_url, single_connection_client=True, socket_connect_timeout=2.0, socket_timeout=BLOCK_MS / 1000 + 10
        )
        self.pool, self.per_tenant = pool, per_tenant
        self.subscribers: dict[str, set[Subscription]] = {}
        self.positions: dict[str, str] = {}  # job id -> last id the reader has read
        self.open_by_tenant: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._client_id: int | None = None
        self._blocked = False

    def subscribe(self, job_id: str, tenant: str, after: str) -> Subscription:
        """Follow a job's events after `after`; 429 too_many_streams past the tenant's limit."""
        if self.open_by_tenant.get(tenant, 0) >= self.per_tenant:
            raise Problem(
                429,
                "too_many_streams",
                f"at most {self.per_tenant} open event streams per tenant; close one first",
                headers={"Retry-After": "5"},
                limit=self.per_tenant,
            )
        sub = Subscription(self, job_id, tenant, after)
        self.open_by_tenant[tenant] = self.open_by_tenant.get(tenant, 0) + 1
        followers = self.subscribers.setdefault(job_id, set())
        followers.add(sub)
        if job_id not in self.positions:
            self.positions[job_id] = after
            self._wake()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="sse-reader")
        return sub

    def _remove(self, sub: Subscription) -> None:
        left = self.open_by_tenant.get(sub.tenant, 1) - 1
        if left > 0:
            self.open_by_tenant[sub.tenant] = left
        else:
            self.open_by_tenant.pop(sub.tenant, None)
        followers = self.subscribers.get(sub.job_id)
        if followers is not None:
            followers.discard(sub)
            if not followers:
                del self.subscribers[sub.job_id]
                self.positions.pop(sub.job_id, None)

    def _wake(self) -> None:
        if self._blocked and self._client_id is not None:
            client_id = self._client_id
            task = asyncio.get_running_loop().create_task(self._unblock(client_id))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _unblock(self, client_id: int) -> None:
        with contextlib.suppress(RedisError):
            await self.pool.client_unblock(client_id)

    async def _run(self) -> None:
        while self.positions:
            try:
                if self._client_id is None:
                    self._client_id = int(await self.reader.client_id())
                streams = {keys.events(job_id): after for job_id, after in self.positions.items()}
                if not streams:  # the last follower left while we asked for the client id
                    break
                self._blocked = True
                try:
                    reply = await self.reader.xread(streams, count=100, block=BLOCK_MS)  # type: ignore[arg-type]
                finally:
                    self._blocked = False
            except (RedisError, OSError) as exc:
                log.warning("event reader lost Redis: %s", exc)
                self._client_id = None
                self._fail_all()
                await asyncio.sleep(0.5)
                continue
            for stream, entries in reply or []:
                name = stream.decode() if isinstance(stream, bytes) else stream
                job_id = name.rsplit(":", 1)[-1]
                events = decode_entries(entries)
                if not events or job_id not in self.positions:
                    continue
                self.positions[job_id] = events[-1][0]
                for sub in list(self.subscribers.get(job_id, ())):
                    if sub.queue.qsize() >= MAX_PENDING:
                        sub.queue.put_nowait(None)
                        sub.close()
                    else:
                        sub.queue.put_nowait(events)

    def _fail_all(self) -> None:
        """Redis went away: end every stream (clients resume with Last-Event-ID, nothing is lost)."""
        for followers in list(self.subscribers.values()):
            for sub in list(followers):
                sub.queue.put_nowait(None)
                sub.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.reader.aclose()
