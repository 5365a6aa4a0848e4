"""One attempt of a job, from claim to outcome: what every worker pool does around its handler.

- The job's lease (ARQ's in-progress key, holding the claim's token) is renewed while it runs, so a
  SIGKILLed worker's job is picked up again after `lease_seconds`, however long its timeout is.
- Every write of an attempt is fenced by its lease: an attempt that lost it (Redis stalled for longer
  than the lease, and another worker took the job) writes nothing more, stops, and never touches the
  newer attempt's files (artifacts are staged per attempt and published only while the lease holds).
- Attempts are counted on the record (`attempt`/`max_attempts`), not by ARQ, so a job that keeps
  killing its worker ends `failed` with `max_attempts_exceeded` instead of staying `running`.
- The outcome is written by the one write that ends a job (store.py), which also retires it from
  ARQ (`retire`); a Redis blip is waited out rather than losing work that is done.
- A cancelled job ends `cancelled`; a drained one goes back on the queue without using up a try.

Nothing here touches ARQ's Worker: it reaches the worker only through `WorkerPort` (arq_worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import metrics
from ..errors import Conflict, MediaflowError
from ..jobs import keys
from ..jobs.family import Workflows, child_ended
from ..jobs.model import Job, JobError, JobState, JobType, utcnow
from ..jobs.queues import retry_delay, timeout_for
from ..jobs.store import Events, Fence, JobStore, KeyChanges, LeaseLost, state_event
from ..settings import Settings
from ..storage import Storage
from ..telemetry import job_span
from .context import DETACHED, Handler, JobCancelled, JobContext

log = logging.getLogger("mediaflow.worker")
REDIS_BLIP_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)  # how long a job's writes wait out a Redis restart (~8 s)


@dataclass(frozen=True)
class RetryIn:
    """An attempt's answer: run the job again after `seconds` (a retryable failure with `code`)."""

    seconds: float
    code: str = ""


Outcome = bool | RetryIn  # True: the job ended and its last write retired it from ARQ


class WorkerPort(Protocol):
    """What an attempt needs from the worker running it (MediaflowWorker in arq_worker.py)."""

    settings: Settings
    store: JobStore
    storage: Storage
    worker_id: str
    queue_name: str
    shutting_down: bool
    workflows: Workflows

    def lease(self, job_id: str) -> Fence:
        """The lease key and the token this worker's claim put in it."""
        ...

    def lose_lease(self, job_id: str) -> None:
        """Another attempt owns the job now: stop ours, and leave ARQ's keys to the new owner."""
        ...

    def has_lost_lease(self, job_id: str) -> bool: ...

    def mark_settled(self, job_id: str) -> None:
        """An interrupted attempt's last write also settled ARQ's keys for the job: leave them be."""
        ...

    def take_claimed_record(self, job_id: str) -> bytes | None:
        """The record as the claim read it (once), so the start needs no second read."""
        ...

    def free_slot(self, job_id: str) -> None: ...

    def abort(self, job_id: str) -> None:
        """Stop the job's running task as an abort (not a shutdown)."""
        ...

    def aborting(self, job_id: str) -> bool: ...


# Extend the lease only while it still holds our token; -1 when another claim owns it (or none does).
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return -1
"""


async def _keep_lease(worker: WorkerPort, job_id: str) -> None:
    key, token = worker.lease(job_id)
    lease_ms = int(worker.settings.lease_seconds * 1000)
    renew = worker.store.redis.register_script(RENEW_SCRIPT)
    while True:
        await asyncio.sleep(lease_ms / 3000)  # the claim set the first lease
        try:
            held = await renew(keys=[key], args=[token, lease_ms])
        except (RedisConnectionError, RedisTimeoutError, OSError):
            continue  # Redis away: nothing can be written meanwhile, and the fence guards what follows
        if held == -1:
            log.warning("job %s: lease lost (another worker took the job); stopping this attempt", job_id)
            worker.lose_lease(job_id)
            return


async def run_attempt(handler: Handler, job_type: JobType, worker: WorkerPort, job_id: str) -> Outcome:
    """Run one attempt of `job_id` with its lease kept; then, if it is a child, move its parent on."""
    store = worker.store
    lease = asyncio.create_task(_keep_lease(worker, job_id))
    final: Job | RetryIn | None = None
    began = time.monotonic()
    try:
        final = await _run_attempt(handler, job_type, worker, store, job_id)
        _count_outcome(worker.queue_name, job_type, final, time.monotonic() - began)
        return final if isinstance(final, RetryIn) else final is not None and final.terminal
    except LeaseLost:
        log.warning("job %s: lease lost; this attempt's outcome is dropped (the newer attempt decides)", job_id)
        metrics.count_job(worker.queue_name, job_type.value, "lease_lost", "lease_lost", time.monotonic() - began)
        return True  # nothing of ARQ's is ours any more: leave its keys alone
    finally:
        lease.cancel()
        if not isinstance(final, Job) or final.parent_id:
            await asyncio.shield(child_ended(store, worker.storage, worker.settings, job_id, worker.workflows))


def _count_outcome(queue: str, job_type: JobType, final: Job | RetryIn | None, seconds: float) -> None:
    """Count how an attempt ended (metrics.py): a final state, a retry, or a parent left running."""
    if isinstance(final, RetryIn):
        metrics.count_job(queue, job_type.value, "retried", final.code, seconds)
    elif final is not None:
        outcome = final.state.value if final.terminal else "detached"
        metrics.count_job(queue, job_type.value, outcome, final.error.code if final.error else "", seconds)


def retire(job: Job) -> KeyChanges:
    """ARQ's finish_job for a job that ended, done by the write that ends it (one round trip less)."""
    return KeyChanges(
        delete=(keys.arq_lease(job.id), keys.arq_tries(job.id), keys.arq_definition(job.id)),
        leave=(keys.ABORTS, job.queue),
    )


def _plan_start(job: Job, worker_id: str) -> tuple[str, Events]:
    """Decide whether the claimed job runs: (verdict, events). Verdict `run` (the job is changed in
    place into its new running attempt), `skip` (cancelled or finished), `cancel` (cancel requested)
    or `exhausted` (no attempt left)."""
    if job.terminal:
        return "skip", []
    if job.state == JobState.cancelling:
        return "cancel", []
    if job.attempt >= job.max_attempts:
        return "exhausted", []
    events: Events = []
    if job.state == JobState.running:
        events.append(
            ("log", {"level": "warning", "message": f"worker {job.worker} was lost; attempt {job.attempt} restarted"})
        )
    job.state = JobState.running
    job.attempt += 1
    job.worker = worker_id
    job.started_at = utcnow()
    job.progress, job.stage, job.message, job.error = 0.0, "starting", "", None
    return "run", [*events, ("state", state_event(job))]


async def _write_start(
    store: JobStore, worker: WorkerPort, job: Job, raw: bytes, before: JobState, events: Events
) -> bool:
    """Write the running record. The handler is not held back for it: the claim already made this
    worker the job's only runner, and every later write waits for this one. Only a cancel can change
    the record between claim and start; then the handler is stopped like any cancelled job's.
    Redis being away for a moment (restart, failover) is waited out; the lease keeps the job ours."""
    written = False
    for delay in (*REDIS_BLIP_DELAYS, None):
        try:
            written = await store.write_if_unchanged(job, raw, before, events, fence=worker.lease(job.id))
            break
        except LeaseLost:
            worker.lose_lease(job.id)
            return False
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if delay is None:
                log.error("job %s: could not record its start (%s)", job.id, exc)
                break
            await asyncio.sleep(delay)
            # The write may have landed before the connection dropped: then it is done.
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                new = job.internal_json().encode()
                if await store.redis.get(keys.job(job.id)) == new:
                    job._stored, written = new, True
                    break
    if not written:
        worker.abort(job.id)
    return written


async def _run_attempt(
    handler: Handler, job_type: JobType, worker: WorkerPort, store: JobStore, job_id: str
) -> Job | RetryIn | None:
    """One attempt of the job; returns the record as it ended (None when it was not runnable)."""
    settings = worker.settings
    raw = worker.take_claimed_record(job_id) or await store.redis.get(keys.job(job_id))
    if raw is None:
        return None
    job = Job.from_stored(raw)
    before = job.state
    verdict, events = _plan_start(job, worker.worker_id)
    if verdict == "skip":
        return None
    fence = worker.lease(job_id)
    if verdict == "cancel":
        return await store.transition(
            job_id, JobState.cancelled, message="cancelled", known=job, changes=retire(job), fence=fence
        )
    if verdict == "exhausted":
        return await store.transition(
            job_id,
            JobState.failed,
            known=job,
            changes=retire(job),
            fence=fence,
            error=JobError(
                code="max_attempts_exceeded",
                message=f"gave up after {job.attempt} attempts (the worker was lost each time)",
            ),
        )
    if before == JobState.running:  # its last attempt's worker was lost: this is a retry
        metrics.RETRIES.labels(worker.queue_name, job.type.value, "worker_lost").inc()
    started = asyncio.ensure_future(_write_start(store, worker, job, raw, before, events))

    jctx = JobContext(
        job=job,
        store=store,
        storage=worker.storage,
        settings=settings,
        worker_id=worker.worker_id,
        workflows=worker.workflows,
        started=started,
        fence=fence,
        _loop=asyncio.get_running_loop(),
    )
    with job_span(job.id, job.type.value, job.queue, job.traceparent, job.attempt, tenant=job.tenant) as span:
        try:
            async with asyncio.timeout(timeout_for(job_type, settings)):
                try:
                    result = await handler(jctx)
                finally:
                    worker.free_slot(job_id)
                    await asyncio.shield(started)  # the outcome is written after the running record
        except asyncio.CancelledError:
            await asyncio.shield(_on_cancelled(worker, store, jctx))
            raise
        except LeaseLost:
            await asyncio.to_thread(jctx.discard_staged)
            raise
        except JobCancelled:
            await asyncio.to_thread(jctx.discard_staged)
            return await store.transition(
                job_id, JobState.cancelled, message="cancelled", known=jctx.job, changes=retire(job), fence=fence
            )
        except TimeoutError:
            return await _fail(
                store,
                jctx,
                MediaflowError(f"job exceeded its time limit of {timeout_for(job_type, settings)} s", code="timeout"),
            )
        except MediaflowError as exc:
            span.set_attribute("error.type", exc.code)
            if exc.retryable and jctx.job.attempt < jctx.job.max_attempts:
                delay = retry_delay(job_type, jctx.job.attempt, settings)
                await store.transition(
                    job_id,
                    JobState.queued,
                    attempt=jctx.job.attempt,
                    known=jctx.job,
                    fence=fence,
                    message=f"{exc.code}: retrying in {delay:g} s",
                )
                await asyncio.to_thread(jctx.discard_staged)
                metrics.RETRIES.labels(worker.queue_name, job.type.value, exc.code).inc()
                return RetryIn(delay, exc.code)
            return await _fail(store, jctx, exc)
        except Exception as exc:  # anything unexpected is a failed job, never a lost one
            span.record_exception(exc)
            await store.log(job_id, traceback.format_exc(), "error")
            return await _fail(store, jctx, MediaflowError(f"{type(exc).__name__}: {exc}", code="internal_error"))
        if result is DETACHED:  # a parent stays running; its children finish it (jobs/family.py)
            return jctx.job
        return await _succeed(store, jctx, result or {})


async def _succeed(store: JobStore, jctx: JobContext, result: dict[str, Any]) -> Job:
    """Record success in one write - or cancelled, if a cancel was requested meanwhile."""

    def mutate(job: Job) -> Events:
        if job.state == JobState.cancelling:
            job.state, job.message = JobState.cancelled, "cancelled"
        elif job.state == JobState.running:
            job.state, job.progress, job.stage, job.message = JobState.succeeded, 1.0, "done", ""
            job.result, job.artifacts = result, jctx.artifacts
        else:
            raise Conflict(f"job {job.id} is {job.state.value}; it cannot succeed", code="invalid_state")
        job.finished_at = utcnow()
        return [("state", state_event(job))]

    await _publish(store, jctx)
    return await _outcome(
        store,
        jctx.job.id,
        lambda: store.update(jctx.job.id, mutate, known=jctx.job, changes=retire(jctx.job), fence=jctx.fence),
    )


async def _fail(store: JobStore, jctx: JobContext, exc: MediaflowError) -> Job:
    error = JobError(code=exc.code, message=exc.message, retryable=exc.retryable)
    await _publish(store, jctx)
    return await _outcome(
        store,
        jctx.job.id,
        lambda: store.transition(
            jctx.job.id,
            JobState.failed,
            artifacts=jctx.artifacts,
            known=jctx.job,
            changes=retire(jctx.job),
            fence=jctx.fence,
            error=error,
        ),
    )


async def _publish(store: JobStore, jctx: JobContext) -> None:
    """Move the attempt's artifacts into place while it still holds its lease (the outcome write
    that follows is fenced by the same lease)."""
    assert jctx.fence is not None
    key, token = jctx.fence
    if (await store.redis.get(key) or b"").decode() != token:
        await asyncio.to_thread(jctx.discard_staged)
        raise LeaseLost(f"job {jctx.job.id}: this attempt's lease is gone")
    await asyncio.to_thread(jctx.publish_artifacts)


async def _outcome(store: JobStore, job_id: str, write: Callable[[], Awaitable[Job]]) -> Job:
    """Write a job's outcome, waiting out a Redis blip (restart, failover) rather than losing work
    that is already done. A retry that finds the outcome already written (the reply was lost) is done."""
    delays, retried = iter(REDIS_BLIP_DELAYS), False
    while True:
        try:
            return await write()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            delay = next(delays, None)
            if delay is None:
                raise
            retried = True
            await asyncio.sleep(delay)
        except LeaseLost:
            raise
        except Conflict:
            if not retried:
                raise
            job = await store.get(job_id)
            if not job.terminal:
                raise
            return job


async def _on_cancelled(worker: WorkerPort, store: JobStore, jctx: JobContext) -> None:
    await asyncio.to_thread(jctx.discard_staged)
    if worker.has_lost_lease(jctx.job.id):  # the job is another attempt's now
        return
    job = await store.get(jctx.job.id)
    if job.terminal:  # cancelled before its start was recorded: nothing left to write
        return
    fence = jctx.fence
    with contextlib.suppress(LeaseLost):
        if await _settle_interrupted(worker, store, jctx, job, fence):
            worker.mark_settled(job.id)


async def _settle_interrupted(
    worker: WorkerPort, store: JobStore, jctx: JobContext, job: Job, fence: Fence | None
) -> bool:
    """Write how an interrupted attempt ended; True when that write also settled ARQ's keys."""
    queue, job_type = worker.queue_name, job.type.value
    if job.state == JobState.cancelling or worker.aborting(jctx.job.id):
        await store.transition(
            job.id, JobState.cancelled, message="cancelled while running", changes=retire(job), fence=fence
        )
        metrics.count_job(queue, job_type, "cancelled")
    elif worker.shutting_down and job.state == JobState.running:
        # Drained: back on the queue, and this attempt does not count (ARQ's try neither).
        await store.transition(
            job.id,
            JobState.queued,
            attempt=max(0, job.attempt - 1),
            worker=None,
            message="requeued: worker shut down",
            changes=KeyChanges(delete=(keys.arq_lease(job.id),)),  # it stays on its queue, free to claim
            fence=fence,
        )
        await store.redis.decr(keys.arq_tries(job.id))
        await store.redis.lpush(keys.wake(job.queue), job.id)  # type: ignore[misc]  # redis-py: sync|async type
        metrics.count_job(queue, job_type, "requeued")
        metrics.RETRIES.labels(queue, job_type, "drained").inc()
    elif job.state == JobState.running:
        await _fail(store, jctx, MediaflowError("job was interrupted", code="interrupted", retryable=True))
        metrics.count_job(queue, job_type, "failed", "interrupted")
    else:
        return False
    return True
