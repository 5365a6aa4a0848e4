"""Submitting, cancelling and retrying jobs: the record and the ARQ queue entry change together.

We write ARQ's own keys (`arq:job:{id}` + the queue's sorted set) in the same script as the record,
so a job can never exist without its queue entry (or the reverse), and the ARQ job id is the job id.
Jobs are serialised as JSON, never pickle: nothing read from Redis can execute code.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import serialize_job
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from .errors import Conflict, MediaflowError, NotFound
from .jobs import Job, JobState, utcnow
from .queues import FUNCTION_FOR_TYPE, wake_key
from .store import (
    EVENTS_MAXLEN,
    IDEMPOTENCY_TTL_S,
    JobStore,
    events_key,
    job_key,
    state_event,
    tenant_index_key,
)

# ARQ drops a queued job whose definition key has expired; ours live as long as a week of backlog.
JOB_EXPIRY_MS = 7 * 24 * 3600 * 1000


def json_serializer(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def json_deserializer(raw: bytes) -> dict[str, Any]:
    return json.loads(raw)


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
    def __init__(self, redis: Redis, max_tries: int = 3) -> None:
        self.redis = redis
        self.max_tries = max_tries
        self.store = JobStore(redis)
        self._enqueue = redis.register_script(ENQUEUE_SCRIPT)

    def _enqueue_call(self, job: Job, expected: bytes = b"", idem: tuple[str, str] | None = None
                      ) -> tuple[list[str], list[str | bytes | int]]:
        """KEYS and ARGV of ENQUEUE_SCRIPT for `job`; `idem` is (Idempotency-Key's key, value)."""
        now_ms = int(time.time() * 1000)
        payload = serialize_job(FUNCTION_FOR_TYPE[job.type], (job.id,), {}, None, now_ms,
                                serializer=json_serializer)
        keys = [job_key(job.id), events_key(job.id), tenant_index_key(job.tenant), job_key_prefix + job.id,
                in_progress_key_prefix + job.id, retry_key_prefix + job.id, result_key_prefix + job.id,
                abort_jobs_ss, job.queue, wake_key(job.queue)]
        args: list[str | bytes | int] = [expected, job.internal_json(), job.id, json.dumps(state_event(job)),
                                         payload, JOB_EXPIRY_MS, now_ms, EVENTS_MAXLEN]
        if idem:
            keys.append(idem[0])
            args += [idem[1], IDEMPOTENCY_TTL_S]
        return keys, args

    async def submit(self, job: Job, idempotency_key: str | None = None,
                     fingerprint: str = "") -> tuple[Job, bool]:
        """Create and enqueue `job`. Returns (job, created); with a known Idempotency-Key the job
        that key created before is returned instead - unless the request differs (`fingerprint`),
        which is an error (422 `idempotency_key_reused`), as the IETF Idempotency-Key draft asks."""
        idem = None
        if idempotency_key:
            idem = (JobStore.idempotency_key(job.tenant, idempotency_key), f"{job.id} {fingerprint}")
        keys, args = self._enqueue_call(job, idem=idem)
        outcome = await self._enqueue(keys=keys, args=args)
        if outcome == 1:
            return job, True
        job_id, _, seen = outcome.decode().partition(" ")
        if fingerprint and seen and seen != fingerprint:
            raise MediaflowError("this Idempotency-Key was used for a different request", status=422,
                                 code="idempotency_key_reused", detail={"job_id": job_id})
        return await self.store.get(job_id, job.tenant), False

    async def submit_many(self, jobs: list[Job]) -> None:
        """Create and enqueue many jobs in one round trip, all or none (batch submit)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for job in jobs:
                keys, args = self._enqueue_call(job)
                await self._enqueue(keys=keys, args=args, client=pipe)
            await pipe.execute()

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        job = await self.store.get(job_id, tenant)
        if job.terminal:
            raise Conflict(f"job {job_id} already {job.state.value}", code="job_finished")
        if job.state == JobState.cancelling:
            return job

        def mutate(j: Job) -> list[tuple[str, dict[str, Any]]]:
            if j.terminal:
                raise Conflict(f"job {job_id} already {j.state.value}", code="job_finished")
            if j.state == JobState.queued:
                # Never started: take it off the queue in the same transaction, so it never starts.
                j.state = JobState.cancelled
                j.message = "cancelled before it started"
                j.finished_at = utcnow()
            elif j.state == JobState.running:
                j.state = JobState.cancelling
            return [("state", state_event(j))]

        def extra(pipe: Pipeline, j: Job) -> None:
            if j.state == JobState.cancelled:
                pipe.zrem(j.queue, j.id)
                pipe.delete(job_key_prefix + j.id, retry_key_prefix + j.id)
            else:
                # Only a job a worker holds is sent to ARQ's abort set: an id that no worker runs would
                # linger there and abort a later attempt with the same id (arq issue #485).
                pipe.zadd(abort_jobs_ss, {j.id: int(time.time() * 1000)})

        job = await self.store.update(job_id, mutate, extra)
        for child in job.children:
            with contextlib.suppress(Conflict):
                await self.cancel(child)
        # Pipelines (common/pipeline.py): a parent that no worker holds ends here once its children have,
        # and a child cancelled while queued (no worker hook runs for it) settles its parent.
        from .pipeline import settle_cancelled_parent

        if job.children:
            await settle_cancelled_parent(self.store, job.id)
            job = await self.store.get(job.id)
        if job.parent_id and job.state == JobState.cancelled:
            with contextlib.suppress(NotFound):
                await settle_cancelled_parent(self.store, job.parent_id)
        return job

    async def retry(self, job_id: str, tenant: str | None = None) -> Job:
        def mutate(j: Job) -> None:
            if j.state not in (JobState.failed, JobState.cancelled):
                raise Conflict(f"job {job_id} is {j.state.value}; only failed or cancelled jobs can be retried",
                               code="not_retryable")
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
            keys, args = self._enqueue_call(job, expected)
            if await self._enqueue(keys=keys, args=args) == 1:
                return job
            # the record changed between our read and the write: read it again


__all__ = ["Dispatcher", "job_key", "json_deserializer", "json_serializer"]
