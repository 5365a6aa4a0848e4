"""Submitting, cancelling and retrying jobs: the record and the ARQ queue entry change together.

We write ARQ's own keys (`arq:job:{id}` + the queue's sorted set) in the same script as the record,
so a job can never exist without its queue entry (or the reverse), and the ARQ job id is the job id.
Jobs are serialised as JSON, never pickle: nothing read from Redis can execute code.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from arq.jobs import serialize_job
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from ..errors import Conflict, MediaflowError, NotFound
from . import keys
from .family import add_child, settle_cancelled_parent
from .model import Job, JobState, utcnow
from .queues import FUNCTION_FOR_TYPE, PRIORITY_AGING_DEFAULT, queue_score
from .store import EVENTS_MAXLEN, IDEMPOTENCY_TTL_S, Events, JobStore, KeyChanges, state_event

# ARQ drops a queued job whose definition key has expired; ours live as long as a week of backlog.
JOB_EXPIRY_MS = 7 * 24 * 3600 * 1000


def json_serializer(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def json_deserializer(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


# Put a job's record and queue it, atomically and in one round trip: a new job (ARGV[1] empty) also
# joins its tenant's index; an existing one (retry) is compare-and-set against the record as read.
# ARQ's keys for the id get a clean slate (a stale try count, result or abort request would block or
# abort the new run - arq issue #485), then its definition and queue entry, and a wake token naming it.
# With an Idempotency-Key (KEYS[11]) a key already seen returns its value and changes nothing.
# Returns 1 (queued), 0 (the record changed meanwhile) or the Idempotency-Key's earlier value.
ENQUEUE_SCRIPT = """
if KEYS[11] then
  local seen = redis.call('GET', KEYS[11])
  if seen then return seen end
end
if ARGV[1] == '' then
  redis.call('ZADD', KEYS[3], 0, ARGV[3])
elseif redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'event', 'state', 'data', ARGV[4])
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[8], ARGV[3])
redis.call('PSETEX', KEYS[4], ARGV[6], ARGV[5])
redis.call('ZADD', KEYS[9], ARGV[7], ARGV[3])
redis.call('LPUSH', KEYS[10], ARGV[3])
redis.call('LTRIM', KEYS[10], 0, 999)
if KEYS[11] then redis.call('SET', KEYS[11], ARGV[9], 'EX', ARGV[10]) end
return 1
"""


class Dispatcher:
    def __init__(
        self, redis: Redis, max_tries: int = 3, *, priority_aging_seconds: float = PRIORITY_AGING_DEFAULT
    ) -> None:
        self.redis = redis
        self.max_tries = max_tries
        self.priority_aging_seconds = priority_aging_seconds  # queues.queue_score's B (Settings)
        self.store = JobStore(redis)
        self._enqueue = redis.register_script(ENQUEUE_SCRIPT)

    def _enqueue_call(
        self, job: Job, expected: bytes = b"", idem: tuple[str, str] | None = None
    ) -> tuple[list[str], list[str | bytes | int]]:
        """KEYS and ARGV of ENQUEUE_SCRIPT for `job`; `idem` is (Idempotency-Key's key, value)."""
        now_ms = int(time.time() * 1000)
        payload = serialize_job(FUNCTION_FOR_TYPE[job.type], (job.id,), {}, None, now_ms, serializer=json_serializer)
        script_keys = [
            *keys.of_job(job.id, job.tenant),
            keys.arq_definition(job.id),
            keys.arq_lease(job.id),
            keys.arq_tries(job.id),
            keys.arq_result(job.id),
            keys.ABORTS,
            job.queue,
            keys.wake(job.queue),
        ]
        args: list[str | bytes | int] = [
            expected,
            job.internal_json(),
            job.id,
            json.dumps(state_event(job)),
            payload,
            JOB_EXPIRY_MS,
            queue_score(job.priority, now_ms, self.priority_aging_seconds),  # its place in the queue
            EVENTS_MAXLEN,
        ]
        if idem:
            script_keys.append(idem[0])
            args += [idem[1], IDEMPOTENCY_TTL_S]
        return script_keys, args

    async def submit(self, job: Job, idempotency_key: str | None = None, fingerprint: str = "") -> tuple[Job, bool]:
        """Create and enqueue `job`. Returns (job, created); with a known Idempotency-Key the job
        that key created before is returned instead - unless the request differs (`fingerprint`),
        which is an error (422 `idempotency_key_reused`), as the IETF Idempotency-Key draft asks."""
        idem = None
        if idempotency_key:
            idem = (keys.idempotency(job.tenant, idempotency_key), f"{job.id} {fingerprint}")
        script_keys, args = self._enqueue_call(job, idem=idem)
        outcome = await self._enqueue(keys=script_keys, args=args)
        if outcome == 1:
            return job, True
        job_id, _, seen = outcome.decode().partition(" ")
        if fingerprint and seen and seen != fingerprint:
            raise MediaflowError(
                "this Idempotency-Key was used for a different request",
                status=422,
                code="idempotency_key_reused",
                detail={"job_id": job_id},
            )
        return await self.store.get(job_id, job.tenant), False

    async def submit_many(self, jobs: list[Job], also: Callable[[Pipeline], None] | None = None) -> None:
        """Create and enqueue many jobs in one round trip, all or none (batch submit); `also` queues
        more writes in the same transaction (the batch record)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for job in jobs:
                script_keys, args = self._enqueue_call(job)
                await self._enqueue(keys=script_keys, args=args, client=pipe)
            if also is not None:
                also(pipe)
            await pipe.execute()

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        job = await self.store.get(job_id, tenant)
        if job.terminal:
            raise Conflict(f"job {job_id} already {job.state.value}", code="job_finished")
        if job.state == JobState.cancelling:
            return job

        def mutate(j: Job) -> Events:
            if j.terminal:
                raise Conflict(f"job {job_id} already {j.state.value}", code="job_finished")
            if j.state == JobState.queued:
                # Never started: take it off the queue in the same write, so it never starts.
                j.state = JobState.cancelled
                j.message = "cancelled before it started"
                j.finished_at = utcnow()
            elif j.state == JobState.running:
                j.state = JobState.cancelling
            return [("state", state_event(j))]

        def off_the_queue(j: Job) -> KeyChanges:
            if j.state == JobState.cancelled:
                return KeyChanges(delete=(keys.arq_definition(j.id), keys.arq_tries(j.id)), leave=(j.queue,))
            # Only a job a worker holds is sent to ARQ's abort set: an id that no worker runs would
            # linger there and abort a later attempt with the same id (arq issue #485).
            return KeyChanges(join=(keys.ABORTS,))

        job = await self.store.update(job_id, mutate, off_the_queue)
        for child in job.children:
            with contextlib.suppress(Conflict):
                await self.cancel(child)
        # Parents (family.py): a parent that no worker holds ends here once its children have, and a
        # child cancelled while queued (no worker runs it, so nobody else would) settles its parent.
        if job.children:
            await settle_cancelled_parent(self.store, job.id)
            job = await self.store.get(job.id)
        if job.parent_id and job.state == JobState.cancelled:
            with contextlib.suppress(NotFound):
                await settle_cancelled_parent(self.store, job.parent_id)
        return job

    async def submit_child(self, parent_id: str, child: Job) -> None:
        """Record `child` on its parent, then enqueue it (Conflict `parent_finished` if the parent is
        ending)."""
        await add_child(self.store, parent_id, child)
        await self.submit(child)

    async def requeue(self, job: Job) -> bool:
        """Enqueue `job` (changed in place, e.g. back to `queued`) again, as a retry does, if its record is
        still the one it was read as (the sweeper's recovery of a job whose worker is gone). False: the
        record changed meanwhile."""
        script_keys, args = self._enqueue_call(job, job._stored or b"")
        return bool(await self._enqueue(keys=script_keys, args=args) == 1)

    async def retry(self, job_id: str, tenant: str | None = None) -> Job:
        def mutate(j: Job) -> None:
            if j.state not in (JobState.failed, JobState.cancelled):
                raise Conflict(
                    f"job {job_id} is {j.state.value}; only failed or cancelled jobs can be retried",
                    code="not_retryable",
                )
            j.state = JobState.queued
            j.progress, j.stage, j.message = 0.0, "", "retry requested"
            j.error, j.result, j.artifacts = None, None, []
            j.started_at = j.finished_at = None
            j.worker = None
            j.max_attempts = j.attempt + self.max_tries  # a retry grants a fresh budget of tries

        while True:
            job = await self.store.get(job_id, tenant)
            expected = job._stored or b""
            mutate(job)
            script_keys, args = self._enqueue_call(job, expected)
            if await self._enqueue(keys=script_keys, args=args) == 1:
                return job
            # the record changed between our read and the write: read it again
