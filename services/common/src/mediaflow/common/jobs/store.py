"""Job and media records in Redis: the record, a per-tenant index and a per-job event stream (keys.py).

Every change to a record goes through `update`, an optimistic read-modify-write in one compare-and-set
script, so a cancel and a worker's progress report never overwrite each other. It is also the only
write that ends a job: with the record it counts the outcome, queues the webhook and applies the
`KeyChanges` that retire the job from the queue system, all in the same atomic step.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

from pydantic import ValidationError
from redis.asyncio import Redis

from ..errors import Conflict, NotFound
from . import keys
from .model import TERMINAL, Job, JobState, Media, can_transition, utcnow

EVENTS_MAXLEN = 2000
STATS_WINDOW_S = 3600
IDEMPOTENCY_TTL_S = 24 * 3600
WEBHOOKS_MAXLEN = 100_000

Events = list[tuple[str, dict[str, Any]]]
Mutation = Callable[[Job], "Events | None"]


def state_event(job: Job) -> dict[str, Any]:
    return {
        "state": job.state.value,
        "progress": job.progress,
        "stage": job.stage,
        "message": job.message,
        "attempt": job.attempt,
        "error": job.error.model_dump() if job.error else None,
    }


class KeyChanges(NamedTuple):
    """Other keys a record write changes in the same atomic step (the queue system's bookkeeping):
    keys to delete, sorted sets the job id leaves, and sorted sets it joins (scored now, in ms)."""

    delete: tuple[str, ...] = ()
    leave: tuple[str, ...] = ()
    join: tuple[str, ...] = ()


# Set the record only if it is still what we read - and, with a fence (ARGV[15] = 1), only while KEYS[3]
# holds ARGV[16] (the writer's lease) - append the events, and in the same atomic step: count a job that
# has just finished in its queue's recent outcomes (ARGV[7] = 1: the next key), queue its webhook
# (ARGV[10] = 1: the next key, a stream), then apply the KeyChanges that follow: delete ARGV[8] keys,
# drop the job from ARGV[9] sorted sets, add it to ARGV[12] sorted sets (score ARGV[13]).
# Events start at ARGV[17]. Returns 1 (written), 0 (the record changed) or -1 (the fence is gone).
CAS_SCRIPT = """
local k = 3
if ARGV[15] == '1' then
  if redis.call('GET', KEYS[3]) ~= ARGV[16] then return -1 end
  k = 4
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
for i = 17, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[i], 'data', ARGV[i + 1])
end
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[k], ARGV[4], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[k], 0, ARGV[6])
  k = k + 1
end
if ARGV[10] == '1' then
  redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[14], '*', 'job_id', ARGV[5], 'state', ARGV[11])
  k = k + 1
end
for _ = 1, tonumber(ARGV[8]) do redis.call('DEL', KEYS[k]); k = k + 1 end
for _ = 1, tonumber(ARGV[9]) do redis.call('ZREM', KEYS[k], ARGV[5]); k = k + 1 end
for _ = 1, tonumber(ARGV[12]) do redis.call('ZADD', KEYS[k], ARGV[13], ARGV[5]); k = k + 1 end
return 1
"""


# Delete a job's record, events, index entry and ARQ keys, if the record is still ARGV[1] (ARGV[1] empty:
# whatever it is); the id (ARGV[2]) also leaves the sorted sets KEYS[7..] (its queue, the abort set).
DELETE_SCRIPT = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[3], ARGV[2])
for i = 7, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
return 1
"""
SCAN_BATCH = 500


def notifies(before: JobState, job: Job) -> bool:
    """Whether this write ends a job that has a webhook to call."""
    return bool(job.webhook_url) and before not in TERMINAL and job.state in TERMINAL


def just_finished(before: JobState, job: Job) -> bool:
    """Whether this write is the one that made the job succeeded or failed (counted in the stats)."""
    return before != job.state and job.state in (JobState.succeeded, JobState.failed) and bool(job.queue)


Changes = KeyChanges | Callable[[Job], KeyChanges] | None
Fence = tuple[str, str]  # (key, value): a write that only lands while the key holds the value


class LeaseLost(Conflict):
    """A fenced write found its fence gone: another attempt owns the job now."""

    code = "lease_lost"


async def newest_ids(redis: Redis, index: str, count: int, cursor: str | None = None) -> builtins.list[str]:
    """Up to `count` ids of a per-tenant index (a sorted set of ids, all score 0: ids sort by creation
    time), newest first, after `cursor` (the last id of the previous page)."""
    upper = f"({cursor}" if cursor else "+"
    ids = await redis.zrevrangebylex(index, upper, "-", start=0, num=count)
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


class JobStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._cas = redis.register_script(CAS_SCRIPT)
        self._delete = redis.register_script(DELETE_SCRIPT)

    # ---- jobs -------------------------------------------------------------------------------
    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        raw = await self.redis.get(keys.job(job_id))
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
        raws = await self.redis.mget([keys.job(i) for i in job_ids])
        return [Job.from_stored(r) for r in raws if r is not None]

    async def update(
        self,
        job_id: str,
        mutate: Mutation,
        changes: Changes = None,
        known: Job | bytes | None = None,
        fence: Fence | None = None,
    ) -> Job:
        """Read-modify-write. `mutate` changes the job in place and returns events to append; it may
        raise to abort. `changes` (or a function of the changed job giving them) are applied with the
        write. `known` is the record as the caller last saw it: while it is still current, the read is
        skipped (a stale one only costs a retry). With a `fence` the write lands only while the fence
        holds (LeaseLost otherwise): a job attempt fences every write with its lease."""
        raw = known._stored if isinstance(known, Job) else known
        job = known.model_copy() if isinstance(known, Job) and raw is not None else None
        while True:
            if job is None:
                if raw is None:
                    raw = await self.redis.get(keys.job(job_id))
                if raw is None:
                    raise NotFound(f"job {job_id} does not exist", code="job_not_found")
                job = Job.from_stored(raw)
            assert raw is not None  # `job` is only ever set together with the record it was read from
            before = job.state
            events = mutate(job) or []
            also = changes(job) if callable(changes) else changes
            if await self.write_if_unchanged(job, raw, before, events, also, fence):
                return job
            raw = job = None  # changed since we read it: read again

    async def write_if_unchanged(
        self,
        job: Job,
        raw: bytes,
        before: JobState,
        events: Events,
        changes: KeyChanges | None = None,
        fence: Fence | None = None,
    ) -> bool:
        """Write `job` (changed from the record `raw`, which was in state `before`) and its events,
        unless the record is no longer `raw`. One round trip; False when it changed meanwhile,
        LeaseLost when the `fence` no longer holds."""
        new = job.internal_json().encode()
        script_keys = [keys.job(job.id), keys.events(job.id), *([fence[0]] if fence else [])]
        now = time.time()
        counted, notify = just_finished(before, job), notifies(before, job)
        if counted:
            script_keys.append(keys.stats(job.queue, job.state.value))
        if notify:
            script_keys.append(keys.WEBHOOKS)
        changes = changes or KeyChanges()
        script_keys += [*changes.delete, *changes.leave, *changes.join]
        args: list[str | bytes | int | float] = [
            raw,
            new,
            EVENTS_MAXLEN,
            now,
            job.id,
            now - STATS_WINDOW_S,
            int(counted),
            len(changes.delete),
            len(changes.leave),
            int(notify),
            job.state.value,
            len(changes.join),
            int(now * 1000),
            WEBHOOKS_MAXLEN,
            int(fence is not None),
            fence[1] if fence else "",
        ]
        for name, data in events:
            args += [name, json.dumps(data)]
        written = await self._cas(keys=script_keys, args=args)
        if written == -1:
            raise LeaseLost(f"job {job.id}: this attempt's lease is gone (another attempt owns the job)")
        if not written:
            return False
        job._stored = new
        return True

    async def transition(
        self,
        job_id: str,
        dst: JobState,
        *,
        allowed_from: set[JobState] | None = None,
        changes: Changes = None,
        known: Job | None = None,
        fence: Fence | None = None,
        **fields: Any,
    ) -> Job:
        def mutate(job: Job) -> Events:
            if (allowed_from is not None and job.state not in allowed_from) or not can_transition(job.state, dst):
                raise Conflict(f"job {job.id} is {job.state.value}; it cannot become {dst.value}", code="invalid_state")
            job.state = dst
            for name, value in fields.items():
                setattr(job, name, value)
            if dst in TERMINAL:
                job.finished_at = utcnow()
            return [("state", state_event(job))]

        return await self.update(job_id, mutate, changes, known, fence)

    async def list(
        self,
        tenant: str,
        *,
        state: str | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[builtins.list[Job], str | None]:
        """Newest first. The cursor is the last id of the previous page (ids sort by time)."""
        found: list[Job] = []
        while len(found) < limit:
            ids = await newest_ids(self.redis, keys.tenant_index(tenant), max(limit * 2, 50), cursor)
            if not ids:
                return found, None
            for job in await self.get_many(ids):
                if (state is None or job.state == state) and (type is None or job.type == type):
                    found.append(job)
                    if len(found) == limit:
                        return found, job.id
            cursor = ids[-1]
        return found, None

    async def events(
        self, job_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 100
    ) -> builtins.list[tuple[str, str, dict[str, Any]]]:
        """Events after stream id `after` as (id, event, data)."""
        reply = await self.redis.xread({keys.events(job_id): after}, count=count, block=block_ms)
        out: list[tuple[str, str, dict[str, Any]]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                f = {
                    (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                    for k, v in fields.items()
                }
                out.append((eid, f["event"], json.loads(f["data"])))
        return out

    async def log(self, job_id: str, message: str, level: str = "info") -> None:
        data = json.dumps({"level": level, "message": message})
        await self.redis.xadd(
            keys.events(job_id), {"event": "log", "data": data}, maxlen=EVENTS_MAXLEN, approximate=True
        )

    # ---- media ------------------------------------------------------------------------------
    async def put_media(self, media: Media) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.media(media.id), media.internal_json())
            pipe.zadd(keys.tenant_media(media.tenant), {media.id: 0})
            await pipe.execute()

    async def list_media(
        self, tenant: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[Media], str | None]:
        """The tenant's media, newest first; the cursor is the last id of the previous page."""
        ids = await newest_ids(self.redis, keys.tenant_media(tenant), limit + 1, cursor)
        raws = await self.redis.mget([keys.media(i) for i in ids[:limit]]) if ids else []
        found = [Media.model_validate_json(raw) for raw in raws if raw is not None]
        return found, (ids[limit - 1] if len(ids) > limit else None)

    async def get_media(self, media_id: str, tenant: str | None = None) -> Media:
        raw = await self.redis.get(keys.media(media_id))
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
                pipe.zcount(keys.stats(queue, outcome), now - STATS_WINDOW_S, "+inf")
            succeeded, failed = await pipe.execute()
        return {"succeeded": succeeded, "failed": failed}

    # ---- deletion and enumeration (retention, the sweeper) ----------------------------------
    async def delete(self, job: Job, *, if_unchanged: bool = True) -> bool:
        """Delete the job's record, event stream, tenant-index entry and ARQ keys in one step - only
        while the record is still the one `job` was read as, unless `if_unchanged` is False. An ended
        job also leaves its queue and the abort set (a held one keeps them: its worker still needs
        them). Its files are the caller's (jobs/retention.py). False: the record changed meanwhile."""
        script_keys = [
            *keys.of_job(job.id, job.tenant),
            keys.arq_definition(job.id),
            keys.arq_tries(job.id),
            keys.arq_result(job.id),
        ]
        if job.terminal and job.queue:
            script_keys += [job.queue, keys.ABORTS]
        expected = (job._stored or b"") if if_unchanged else b""
        return bool(await self._delete(keys=script_keys, args=[expected, job.id]))

    async def delete_media(self, media_id: str) -> bool:
        """False: there was no such record."""
        raw = await self.redis.get(keys.media(media_id))
        if raw is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.media(media_id))
            pipe.zrem(keys.tenant_media(Media.model_validate_json(raw).tenant), media_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def scan_ids(self, pattern: str, batch: int = SCAN_BATCH) -> AsyncIterator[builtins.list[str]]:
        """The ids of the keys matching `pattern` (keys.JOB_PATTERN, ...), in batches (bounded memory;
        SCAN may return an id twice, and keys made meanwhile may be missed)."""
        ids: list[str] = []
        async for key in self.redis.scan_iter(match=pattern, count=batch):
            ids.append(keys.id_of(key))
            if len(ids) >= batch:
                yield ids
                ids = []
        if ids:
            yield ids

    async def scan_jobs(self, batch: int = SCAN_BATCH) -> AsyncIterator[builtins.list[Job]]:
        """Every job record, in batches (records that do not parse are skipped)."""
        async for ids in self.scan_ids(keys.JOB_PATTERN, batch):
            raws = await self.redis.mget([keys.job(i) for i in ids])
            jobs: list[Job] = []
            for raw in raws:
                if raw is not None:
                    try:
                        jobs.append(Job.from_stored(raw))
                    except ValidationError:
                        continue
            yield jobs

    async def scan_media(self, batch: int = SCAN_BATCH) -> AsyncIterator[builtins.list[Media]]:
        """Every media record, in batches."""
        async for ids in self.scan_ids(keys.MEDIA_PATTERN, batch):
            raws = await self.redis.mget([keys.media(i) for i in ids])
            found: list[Media] = []
            for raw in raws:
                if raw is not None:
                    try:
                        found.append(Media.model_validate_json(raw))
                    except ValidationError:
                        continue
            yield found

    async def existing(self, key_of: Callable[[str], str], ids: builtins.list[str]) -> set[str]:
        """Those of `ids` whose key (`key_of(id)`, e.g. keys.job) exists: one round trip."""
        if not ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.exists(key_of(i))
            found = await pipe.execute()
        return {i for i, n in zip(ids, found, strict=True) if n}
