"""Job and media records in Redis: the record, a per-tenant index and a per-job event stream.

Keys (all under `mediaflow:`):
  job:{id}           JSON record (internal fields included)
  jobs:{tenant}      sorted set of job ids (score 0, ordered by id = ULID = creation time) for paging
  events:{id}        stream of `state` / `progress` / `log` events; stream ids are the SSE ids
  media:{id}         JSON media record
  idem:{tenant}:{k}  Idempotency-Key -> "<job id> <request fingerprint>" (24 h)
  stats:{queue}:{succeeded|failed}  sorted set of finish times (recent counts for /v1/queues)
Every change to a record goes through `update`, an optimistic read-modify-write (a compare-and-set
script, or WATCH/MULTI when other keys change with it), so a cancel and a worker's progress report
never overwrite each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from .errors import Conflict, NotFound
from .jobs import TERMINAL, Job, JobState, Media, can_transition, utcnow

EVENTS_MAXLEN = 2000
STATS_WINDOW_S = 3600
IDEMPOTENCY_TTL_S = 24 * 3600


def job_key(job_id: str) -> str:
    return f"mediaflow:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"mediaflow:events:{job_id}"


def tenant_index_key(tenant: str) -> str:
    return f"mediaflow:jobs:{tenant}"


def media_key(media_id: str) -> str:
    return f"mediaflow:media:{media_id}"


def stats_key(queue: str, outcome: str) -> str:
    return f"mediaflow:stats:{queue}:{outcome}"


def state_event(job: Job) -> dict[str, Any]:
    return {
        "state": job.state.value,
        "progress": job.progress,
        "stage": job.stage,
        "message": job.message,
        "attempt": job.attempt,
        "error": job.error.model_dump() if job.error else None,
    }


def add_event(pipe: Pipeline, job_id: str, event: str, data: dict[str, Any]) -> None:
    pipe.xadd(events_key(job_id), {"event": event, "data": json.dumps(data)},
              maxlen=EVENTS_MAXLEN, approximate=True)


Mutation = Callable[[Job], "list[tuple[str, dict[str, Any]]] | None"]


# Set the record only if it is still what we read, append the events, and in the same atomic step:
# count a job that has just finished in its queue's recent outcomes (ARGV[7] = 1: the next key), queue
# its webhook (ARGV[10] = 1: the next key, a stream), delete the ARGV[8] keys that follow and drop the
# job from the ARGV[9] sorted sets after them (`Cleanup`). Events start at ARGV[12].
CAS_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
for i = 12, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[i], 'data', ARGV[i + 1])
end
local k = 3
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[k], ARGV[4], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[k], 0, ARGV[6])
  k = k + 1
end
if ARGV[10] == '1' then
  redis.call('XADD', KEYS[k], 'MAXLEN', '~', 100000, '*', 'job_id', ARGV[5], 'state', ARGV[11])
  k = k + 1
end
for _ = 1, tonumber(ARGV[8]) do redis.call('DEL', KEYS[k]); k = k + 1 end
for _ = 1, tonumber(ARGV[9]) do redis.call('ZREM', KEYS[k], ARGV[5]); k = k + 1 end
return 1
"""
WEBHOOK_STREAM = "mediaflow:webhooks"  # jobs whose webhook is due (webhooks.py delivers)


def notifies(before: JobState, job: Job) -> bool:
    """Whether this write ends a job that has a webhook to call."""
    return bool(job.webhook_url) and before not in TERMINAL and job.state in TERMINAL


class Cleanup(NamedTuple):
    """What goes away with the write that ends a job: keys to delete, sorted sets to leave (the
    queue system's bookkeeping, so ending a job and retiring it is one atomic step)."""

    delete: tuple[str, ...] = ()
    leave: tuple[str, ...] = ()


def just_finished(before: JobState, job: Job) -> bool:
    """Whether this write is the one that made the job succeeded or failed (counted in the stats)."""
    return before != job.state and job.state in (JobState.succeeded, JobState.failed) and bool(job.queue)


class JobStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._cas = redis.register_script(CAS_SCRIPT)

    # ---- jobs -------------------------------------------------------------------------------
    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        raw = await self.redis.get(job_key(job_id))
        if raw is None:
            raise NotFound(f"job {job_id} does not exist", code="job_not_found")
        job = Job.from_stored(raw)
        if tenant is not None and job.tenant != tenant:
            # Another tenant's job is indistinguishable from a missing one.
            raise NotFound(f"job {job_id} does not exist", code="job_not_found")
        return job

    async def get_many(self, job_ids: list[str]) -> list[Job]:
        if not job_ids:
            return []
        raws = await self.redis.mget([job_key(i) for i in job_ids])
        return [Job.from_stored(r) for r in raws if r is not None]

    async def update(self, job_id: str, mutate: Mutation,
                     extra: Callable[[Pipeline, Job], Awaitable[None] | None] | None = None,
                     known: Job | bytes | None = None, cleanup: Cleanup | None = None) -> Job:
        """Read-modify-write. `mutate` changes the job in place and returns events to append; it may
        raise to abort. `extra` adds more commands to the same transaction (WATCH/MULTI); without it
        the write is one compare-and-set script. `known` is the record as the caller last saw it: while
        it is still current, the read is skipped (a stale one only costs a retry). `cleanup` is applied
        with the write."""
        if extra is None:
            return await self._update_cas(job_id, mutate, known, cleanup)
        key = job_key(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(f"job {job_id} does not exist", code="job_not_found")
                    job = Job.from_stored(raw)
                    before = job.state
                    events = mutate(job) or []
                    pipe.multi()
                    new = job.internal_json().encode()
                    pipe.set(key, new)
                    for name, data in events:
                        add_event(pipe, job_id, name, data)
                    if just_finished(before, job):
                        now = time.time()
                        pipe.zadd(stats_key(job.queue, job.state.value), {job.id: now})
                        pipe.zremrangebyscore(stats_key(job.queue, job.state.value), 0, now - STATS_WINDOW_S)
                    if notifies(before, job):
                        pipe.xadd(WEBHOOK_STREAM, {"job_id": job.id, "state": job.state.value},
                                  maxlen=100_000, approximate=True)
                    if cleanup:
                        if cleanup.delete:
                            pipe.delete(*cleanup.delete)
                        for zset in cleanup.leave:
                            pipe.zrem(zset, job.id)
                    maybe = extra(pipe, job)
                    if maybe is not None:
                        await maybe
                    await pipe.execute()
                    job._stored = new
                    return job
                except WatchError:
                    continue

    async def _update_cas(self, job_id: str, mutate: Mutation, known: Job | bytes | None = None,
                          cleanup: Cleanup | None = None) -> Job:
        raw = known._stored if isinstance(known, Job) else known
        job = known.model_copy() if isinstance(known, Job) and raw is not None else None
        while True:
            if job is None:
                if raw is None:
                    raw = await self.redis.get(job_key(job_id))
                if raw is None:
                    raise NotFound(f"job {job_id} does not exist", code="job_not_found")
                job = Job.from_stored(raw)
            before = job.state
            events = mutate(job) or []
            if await self.write_if_unchanged(job, raw, before, events, cleanup):
                return job
            raw = job = None  # changed since we read it: read again

    async def write_if_unchanged(self, job: Job, raw: bytes, before: JobState,
                                 events: list[tuple[str, dict[str, Any]]], cleanup: Cleanup | None = None) -> bool:
        """Write `job` (changed from the record `raw`, which was in state `before`) and its events,
        unless the record is no longer `raw`. One round trip; False when it changed meanwhile."""
        new = job.internal_json().encode()
        keys = [job_key(job.id), events_key(job.id)]
        now = time.time()
        counted, notify = just_finished(before, job), notifies(before, job)
        if counted:
            keys.append(stats_key(job.queue, job.state.value))
        if notify:
            keys.append(WEBHOOK_STREAM)
        cleanup = cleanup or Cleanup()
        keys += [*cleanup.delete, *cleanup.leave]
        args: list[str | bytes | int | float] = [raw, new, EVENTS_MAXLEN, now, job.id, now - STATS_WINDOW_S,
                                                 int(counted), len(cleanup.delete), len(cleanup.leave),
                                                 int(notify), job.state.value]
        for name, data in events:
            args += [name, json.dumps(data)]
        if not await self._cas(keys=keys, args=args):
            return False
        job._stored = new
        return True

    async def transition(self, job_id: str, dst: JobState, *, allowed_from: set[JobState] | None = None,
                         extra: Callable[[Pipeline, Job], Awaitable[None] | None] | None = None,
                         known: Job | None = None, cleanup: Cleanup | None = None, **fields: Any) -> Job:
        def mutate(job: Job) -> list[tuple[str, dict[str, Any]]]:
            if (allowed_from is not None and job.state not in allowed_from) or not can_transition(
                job.state, dst
            ):
                raise Conflict(f"job {job.id} is {job.state.value}; it cannot become {dst.value}",
                               code="invalid_state")
            job.state = dst
            for name, value in fields.items():
                setattr(job, name, value)
            if dst in TERMINAL:
                job.finished_at = utcnow()
            return [("state", state_event(job))]

        return await self.update(job_id, mutate, extra, known, cleanup)

    async def list(self, tenant: str, *, state: str | None = None, type: str | None = None,
                   limit: int = 50, cursor: str | None = None) -> tuple[list[Job], str | None]:
        """Newest first. The cursor is the last id of the previous page (ids sort by time)."""
        index = tenant_index_key(tenant)
        found: list[Job] = []
        upper = f"({cursor}" if cursor else "+"
        while len(found) < limit:
            ids = await self.redis.zrevrangebylex(index, upper, "-", start=0, num=max(limit * 2, 50))
            if not ids:
                return found, None
            ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
            for job in await self.get_many(ids):
                if (state is None or job.state == state) and (type is None or job.type == type):
                    found.append(job)
                    if len(found) == limit:
                        return found, job.id
            upper = f"({ids[-1]}"
        return found, None

    async def events(self, job_id: str, after: str = "0-0", block_ms: int | None = None,
                     count: int = 100) -> list[tuple[str, str, dict[str, Any]]]:
        """Events after stream id `after` as (id, event, data)."""
        reply = await self.redis.xread({events_key(job_id): after}, count=count, block=block_ms)
        out: list[tuple[str, str, dict[str, Any]]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                     for k, v in fields.items()}
                out.append((eid, f["event"], json.loads(f["data"])))
        return out

    async def log(self, job_id: str, message: str, level: str = "info") -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            add_event(pipe, job_id, "log", {"level": level, "message": message})
            await pipe.execute()

    # ---- idempotency ------------------------------------------------------------------------
    @staticmethod
    def idempotency_key(tenant: str, key: str) -> str:
        return f"mediaflow:idem:{tenant}:{key}"

    # ---- media ------------------------------------------------------------------------------
    async def put_media(self, media: Media) -> None:
        await self.redis.set(media_key(media.id), media.internal_json())

    async def get_media(self, media_id: str, tenant: str | None = None) -> Media:
        raw = await self.redis.get(media_key(media_id))
        if raw is None:
            raise NotFound(f"media {media_id} does not exist", code="media_not_found")
        media = Media.model_validate_json(raw)
        if tenant is not None and media.tenant != tenant:
            raise NotFound(f"media {media_id} does not exist", code="media_not_found")
        return media

    # ---- queue statistics -------------------------------------------------------------------
    async def recent_outcomes(self, queue: str) -> dict[str, int]:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for outcome in ("succeeded", "failed"):
                pipe.zcount(stats_key(queue, outcome), now - STATS_WINDOW_S, "+inf")
            succeeded, failed = await pipe.execute()
        return {"succeeded": succeeded, "failed": failed}
