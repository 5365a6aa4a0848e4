"""Submitting, cancelling and retrying jobs: the record and the ARQ queue entry change together.

We write ARQ's own keys (`arq:job:{id}` + the queue's sorted set) in the same MULTI as the record, so
a job can never exist without its queue entry (or the reverse), and the ARQ job id is the job id.
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
from redis.exceptions import WatchError

from .errors import Conflict, MediaflowError, NotFound
from .jobs import Job, JobState, utcnow
from .queues import FUNCTION_FOR_TYPE, wake_key
from .store import JobStore, job_key, state_event

# ARQ drops a queued job whose definition key has expired; ours live as long as a week of backlog.
JOB_EXPIRY_MS = 7 * 24 * 3600 * 1000


def json_serializer(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def json_deserializer(raw: bytes) -> dict[str, Any]:
    return json.loads(raw)


def stage_enqueue(pipe: Pipeline, job: Job, defer_ms: int = 0) -> None:
    payload = serialize_job(FUNCTION_FOR_TYPE[job.type], (job.id,), {}, None, int(time.time() * 1000),
                            serializer=json_serializer)
    pipe.psetex(job_key_prefix + job.id, JOB_EXPIRY_MS, payload)
    # ARQ would abort a job whose id lingers in its abort set (arq issue #485): clear it.
    pipe.zrem(abort_jobs_ss, job.id)
    pipe.zadd(job.queue, {job.id: int(time.time() * 1000) + defer_ms})
    # Wake one idle worker of that pool with the id to claim; trimmed so a burst cannot grow it unbounded.
    pipe.lpush(wake_key(job.queue), job.id)
    pipe.ltrim(wake_key(job.queue), 0, 999)


class Dispatcher:
    def __init__(self, redis: Redis, max_tries: int = 3) -> None:
        self.redis = redis
        self.max_tries = max_tries
        self.store = JobStore(redis)

    async def submit(self, job: Job, idempotency_key: str | None = None,
                     fingerprint: str = "") -> tuple[Job, bool]:
        """Create and enqueue `job`. Returns (job, created); with a known Idempotency-Key the job
        that key created before is returned instead — unless the request differs (`fingerprint`),
        which is an error (422 `idempotency_key_reused`), as the IETF Idempotency-Key draft asks."""
        idem = JobStore.idempotency_key(job.tenant, idempotency_key) if idempotency_key else None
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    if idem:
                        await pipe.watch(idem)
                        existing = await pipe.get(idem)
                        if existing:
                            await pipe.reset()
                            job_id, _, seen = existing.decode().partition(" ")
                            if fingerprint and seen and seen != fingerprint:
                                raise MediaflowError(
                                    "this Idempotency-Key was used for a different request", status=422,
                                    code="idempotency_key_reused", detail={"job_id": job_id})
                            return await self.store.get(job_id, job.tenant), False
                    pipe.multi()
                    self.store.stage_create(pipe, job)
                    stage_enqueue(pipe, job)
                    if idem:
                        JobStore.stage_idempotency(pipe, job.tenant, idempotency_key or "", job.id, fingerprint)
                    await pipe.execute()
                    return job, True
                except WatchError:
                    continue

    async def submit_many(self, jobs: list[Job]) -> None:
        """Create and enqueue many jobs in one round trip (batch submit)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for job in jobs:
                self.store.stage_create(pipe, job)
                stage_enqueue(pipe, job)
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
        def mutate(j: Job) -> list[tuple[str, dict[str, Any]]]:
            if j.state not in (JobState.failed, JobState.cancelled):
                raise Conflict(f"job {job_id} is {j.state.value}; only failed or cancelled jobs can be retried",
                               code="not_retryable")
            j.state = JobState.queued
            j.progress, j.stage, j.message = 0.0, "", "retry requested"
            j.error, j.result, j.artifacts = None, None, []
            j.started_at = j.finished_at = None
            j.worker = None
            j.max_attempts = j.attempt + self.max_tries  # a retry grants a fresh budget of tries
            return [("state", state_event(j))]

        def extra(pipe: Pipeline, j: Job) -> None:
            # A clean slate in ARQ for the same id: stale result/retry/abort entries would block or
            # abort the new attempt.
            pipe.delete(result_key_prefix + j.id, retry_key_prefix + j.id, in_progress_key_prefix + j.id)
            pipe.zrem(abort_jobs_ss, j.id)
            stage_enqueue(pipe, j)

        await self.store.get(job_id, tenant)
        return await self.store.update(job_id, mutate, extra)


__all__ = ["Dispatcher", "job_key", "json_deserializer", "json_serializer", "stage_enqueue"]
