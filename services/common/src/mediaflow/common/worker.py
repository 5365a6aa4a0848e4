"""The worker base every pool runs: ARQ, with its weak spots fixed.

- Dispatch latency: instead of polling every 0.5 s, an idle worker blocks on a wake list that every
  enqueue pushes to (BLPOP), and polls only as a fallback (deferred jobs, lost wake-ups).
- Lost workers: a job's ARQ in-progress key is a short *lease* renewed while the job runs, so a
  SIGKILLed worker's job is picked up again after `lease_seconds`, however long its timeout is.
- Draining: on SIGTERM the worker stops picking jobs and waits `job_completion_wait`; a job still
  running then is put back on the queue without using up a try.
- Cancel: a cancelled job is marked in its record first; a worker never starts a job whose record
  is not runnable, and ARQ's abort set is only used for jobs a worker holds (arq issue #485).
- Attempts are counted on the record (`attempt`/`max_attempts`), not by ARQ, so a job that keeps
  killing its worker ends `failed` with `max_attempts_exceeded` instead of staying `running`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from arq.connections import RedisSettings
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.worker import Retry, Worker, func
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import pipeline
from .context import Handler, JobCancelled, JobContext
from .dispatch import json_deserializer, json_serializer
from .errors import Conflict, MediaflowError
from .jobs import Job, JobError, JobState, JobType, utcnow
from .queues import FUNCTION_FOR_TYPE, timeout_for, wake_key
from .settings import Settings
from .storage import Storage, open_storage
from .store import Cleanup, JobStore, job_key, state_event
from .telemetry import job_span, setup_tracing
from .webhooks import WebhookDeliverer

log = logging.getLogger("mediaflow.worker")
WORKERS_KEY = "mediaflow:workers"
REDIS_BLIP_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)  # how long a job's writes wait out a Redis restart (~8 s)

# Claim a queued job: it must still be on the queue and due, and no other worker may hold it.
CLAIM_SCRIPT = """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then return false end
local try = redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], 88400)
return {score, redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4]), try, redis.call('ZREM', KEYS[6], ARGV[1])}
"""


class MediaflowWorker(Worker):
    """ARQ worker with wake-on-enqueue, lease renewal, graceful requeue and a worker registry."""

    def __init__(self, *args: Any, settings: Settings, queue: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{queue.rsplit(':', 1)[-1]}"
        self.shutting_down = False
        self.ctx["worker"] = self
        self._wake_redis: Redis | None = None
        self._last_registry = 0.0
        self._last_abort_purge = 0.0
        self._next_scan = 0.0
        self._slot_freed = asyncio.Event()
        self.claimed_records: dict[str, bytes] = {}
        self._holding: set[str] = set()  # jobs claimed whose slot is not yet given back
        self.store: JobStore | None = None
        self._claim: AsyncScript | None = None
        self._webhooks: asyncio.Task[None] | None = None
        self.storage: Storage = open_storage(settings.storage_url)
        self.info: dict[str, Any] = {}

    async def main(self) -> None:
        self._wake_redis = Redis.from_url(self.settings.redis_url)
        self.store = JobStore(Redis.from_url(self.settings.redis_url))
        self._claim = self.store.redis.register_script(CLAIM_SCRIPT)  # EVALSHA: the script is not resent
        if self.settings.webhook_secret:  # every worker process also delivers due webhooks
            deliverer = WebhookDeliverer(self.store.redis, self.store, self.settings, self.worker_id)
            self._webhooks = asyncio.create_task(deliverer.run())
        await super().main()

    async def _poll_iteration(self) -> None:
        try:
            # ARQ's iteration (scan the queue, look for aborts, heartbeat) costs three round trips.
            # Wake tokens name the jobs to claim, so it is only the fallback - deferred jobs, lost
            # tokens, cancels of running jobs - and runs once per poll_delay, not after every wake.
            now = time.monotonic()
            if self.burst or now >= self._next_scan:
                self._next_scan = now + self.settings.poll_delay
                await super()._poll_iteration()
                await self._purge_stale_aborts()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # Redis is away (restart, failover): keep the process and try again, rather than crash
            # and lose the jobs running here; their leases keep them safe meanwhile.
            log.warning("redis unavailable (%s); retrying in 1 s", exc)
            await asyncio.sleep(1.0)
            return
        await self._wait_for_work()

    async def _purge_stale_aborts(self) -> None:
        # ARQ never removes abort requests for ids no worker holds (its age check is inverted);
        # drop them after a minute so they cannot abort a later attempt of the same id.
        now = time.time()
        if now - self._last_abort_purge >= 10:
            self._last_abort_purge = now
            await self.pool.zremrangebyscore(abort_jobs_ss, 0, int((now - 60) * 1000))

    async def _wait_for_work(self) -> None:
        if self.burst:
            await asyncio.sleep(0.005)
            return
        if not self.allow_pick_jobs or self.job_counter >= self.max_jobs:
            # Busy: wake when a slot frees up, so a finished job's slot is refilled at once.
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), self.settings.poll_delay)
            return
        assert self._wake_redis is not None
        try:
            woken = await self._wake_redis.blpop([wake_key(self.queue_name)], timeout=self.settings.poll_delay)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await asyncio.sleep(self.settings.poll_delay)
            return
        if woken:
            # The token names the job just enqueued: claim it now instead of scanning the queue first.
            await self.start_jobs([woken[1]])

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """ARQ's start_jobs with the claim done in one round trip (a Lua script) instead of four
        (WATCH/EXISTS/ZSCORE/MULTI), and the in-progress key set as a short lease."""
        lease_ms = int(self.settings.lease_seconds * 1000)
        for job_id_b in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            job_id = job_id_b.decode()
            claimed = await self._claim(
                keys=[in_progress_key_prefix + job_id, self.queue_name, job_key(job_id),
                      job_key_prefix + job_id, retry_key_prefix + job_id, abort_jobs_ss],
                args=[job_id, int(time.time() * 1000), lease_ms])
            if not claimed:  # running elsewhere, finished, or deferred
                self.job_counter -= 1
                self.sem.release()
                continue
            score, record, payload, job_try, aborted = claimed
            self._holding.add(job_id)
            if record:  # the record as of the claim: the job's start needs no second read
                self.claimed_records[job_id] = record
            self.tasks[job_id] = self.loop.create_task(
                self._run_claimed(job_id, int(score), payload, job_try, bool(aborted)))

    async def _run_claimed(self, job_id: str, score: int, payload: bytes | None, job_try: int,
                           aborted: bool) -> None:
        """ARQ's run_job for our jobs, minus its first round trip (the claim script did that work)
        and minus what we do not use (pickle, results, cron). Same outcomes: finished, retried with a
        delay, or left on the queue when the worker shuts down."""
        try:
            outcome = await self._execute(job_id, score, payload, job_try, aborted)
        finally:
            self.claimed_records.pop(job_id, None)  # left over when ARQ never called our function
            self.free_slot(job_id)
        if outcome is not None:
            finish, incr_score = outcome
            await _unless_cancelled(self.finish_job(job_id, finish, None, None, False, incr_score, None))

    async def _execute(self, job_id: str, score: int, payload: bytes | None, job_try: int,
                       aborted: bool) -> tuple[bool, int | None] | None:
        """Run the job's function; returns (finish, incr_score) for ARQ's finish_job, or None when
        the job's last write already retired it from ARQ."""
        if not payload or aborted:  # definition expired, or aborted before it started
            self.jobs_failed += 1
            return True, None
        data = json_deserializer(payload)
        function = self.functions.get(data["f"])
        if function is None:
            log.warning("job %s: no function %r on this worker", job_id, data["f"])
            self.jobs_failed += 1
            return True, None
        ctx = {**self.ctx, "job_id": job_id, "job_try": job_try, "score": score}
        task = self.loop.create_task(function.coroutine(ctx, *data["a"], **data["k"]))
        self.job_tasks[job_id] = task
        try:
            retired = await asyncio.wait_for(task, function.timeout_s)
            self.jobs_complete += 1
            if retired is True:
                return None
        except Retry as exc:
            self.jobs_retried += 1
            return False, (exc.defer_score or 0) + (int(time.time() * 1000) - score)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and job_id not in self.aborting_tasks:
                self.jobs_retried += 1  # shutdown: the job stays on the queue (our wrapper requeued its record)
                return False, None
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("job %s failed outside its handler", job_id)
            self.jobs_failed += 1
        finally:
            self.job_tasks.pop(job_id, None)
            self.aborting_tasks.discard(job_id)
        return True, None

    def free_slot(self, job_id: str) -> None:
        """Give back the job's slot (once). Done as soon as its handler is over: recording the outcome
        uses no device, so the next job need not wait for those writes."""
        if job_id in self._holding:
            self._holding.discard(job_id)
            self._release_sem_dec_counter_on_complete()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def heart_beat(self) -> None:
        await super().heart_beat()
        now = time.time()
        if now - self._last_registry >= 1.0:
            self._last_registry = now
            import json

            entry = {"id": self.worker_id, "queue": self.queue_name, "host": socket.gethostname(),
                     "pid": os.getpid(), "heartbeat": now, "jobs": sorted(self.job_tasks),
                     "draining": self.shutting_down, **self.info}
            await self.pool.hset(WORKERS_KEY, self.worker_id, json.dumps(entry))

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        self.shutting_down = True
        super().handle_sig_wait_for_completion(signum)

    def handle_sig(self, signum: signal.Signals) -> None:
        self.shutting_down = True
        super().handle_sig(signum)

    async def close(self) -> None:
        if self._webhooks is not None:
            self._webhooks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._webhooks
        with contextlib.suppress(Exception):
            if self._pool is not None:
                await self.pool.hdel(WORKERS_KEY, self.worker_id)
        await super().close()
        for client in (self._wake_redis, self.store.redis if self.store else None):
            if client is not None:
                await client.aclose()


async def _unless_cancelled(bookkeeping: Awaitable[Any]) -> None:
    """Write a job's outcome even if shutdown cancels the task meanwhile: the job itself is over,
    so the cancel has nothing left to stop and must not escape into ARQ's close()."""
    finishing = asyncio.ensure_future(bookkeeping)
    try:
        await asyncio.shield(finishing)
    except asyncio.CancelledError:
        await finishing


async def _renew_lease(redis: Redis, job_id: str, lease_ms: int) -> None:
    key = in_progress_key_prefix + job_id
    while True:
        await asyncio.sleep(lease_ms / 3000)  # the claim set the first lease
        with contextlib.suppress(Exception):
            await redis.pexpire(key, lease_ms)


def _runnable(handler: Handler, job_type: JobType) -> Callable[..., Awaitable[Any]]:
    async def run(ctx: dict[str, Any], job_id: str) -> bool:
        worker: MediaflowWorker = ctx["worker"]
        settings, store = worker.settings, worker.store
        assert store is not None
        lease_ms = int(settings.lease_seconds * 1000)
        lease = asyncio.create_task(_renew_lease(worker.pool, job_id, lease_ms))
        final: Job | None = None
        try:
            final = await _run_attempt(handler, job_type, worker, store, job_id)
            # A job that ended was also retired from ARQ by its last write (arq_cleanup).
            return final is not None and final.terminal
        finally:
            lease.cancel()
            if final is None or final.parent_id:
                # Pipelines (common/pipeline.py): a child that just finished advances its parent.
                await asyncio.shield(pipeline.safe_advance(store, worker.storage, settings, job_id))

    run.__name__ = FUNCTION_FOR_TYPE[job_type]
    return run


def arq_cleanup(job: Job) -> Cleanup:
    """ARQ's finish_job for a job that ended, done by the write that ends it (one round trip less)."""
    return Cleanup(delete=(in_progress_key_prefix + job.id, retry_key_prefix + job.id, job_key_prefix + job.id),
                   leave=(abort_jobs_ss, job.queue))


def _plan_start(job: Job, worker_id: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """Decide whether the claimed job runs: (verdict, events). Verdict `run` (the job is changed in
    place into its new running attempt), `skip` (cancelled or finished), `cancel` (cancel requested)
    or `exhausted` (no attempt left)."""
    if job.terminal:
        return "skip", []
    if job.state == JobState.cancelling:
        return "cancel", []
    if job.attempt >= job.max_attempts:
        return "exhausted", []
    events: list[tuple[str, dict[str, Any]]] = []
    if job.state == JobState.running:
        events.append(("log", {"level": "warning",
                               "message": f"worker {job.worker} was lost; attempt {job.attempt} restarted"}))
    job.state = JobState.running
    job.attempt += 1
    job.worker = worker_id
    job.started_at = utcnow()
    job.progress, job.stage, job.message, job.error = 0.0, "starting", "", None
    return "run", [*events, ("state", state_event(job))]


async def _write_start(store: JobStore, worker: MediaflowWorker, job: Job, raw: bytes, before: JobState,
                       events: list[tuple[str, dict[str, Any]]]) -> bool:
    """Write the running record. The handler is not held back for it: the claim already made this
    worker the job's only runner, and every later write waits for this one. Only a cancel can change
    the record between claim and start; then the handler is stopped like any cancelled job's.
    Redis being away for a moment (restart, failover) is waited out; the lease keeps the job ours."""
    written = False
    for delay in (*REDIS_BLIP_DELAYS, None):
        try:
            written = await store.write_if_unchanged(job, raw, before, events)
            break
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if delay is None:
                log.error("job %s: could not record its start (%s)", job.id, exc)
                break
            await asyncio.sleep(delay)
            # The write may have landed before the connection dropped: then it is done.
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                new = job.internal_json().encode()
                if await store.redis.get(job_key(job.id)) == new:
                    job._stored, written = new, True
                    break
    if not written and (task := worker.job_tasks.get(job.id)) is not None:
        worker.aborting_tasks.add(job.id)
        task.cancel()
    return written


async def _run_attempt(handler: Handler, job_type: JobType, worker: MediaflowWorker, store: JobStore,
                       job_id: str) -> Job | None:
    """One attempt of the job; returns the record as it ended (None when it was not runnable)."""
    settings = worker.settings
    raw = worker.claimed_records.pop(job_id, None) or await store.redis.get(job_key(job_id))
    if raw is None:
        return None
    job = Job.from_stored(raw)
    before = job.state
    verdict, events = _plan_start(job, worker.worker_id)
    if verdict == "skip":
        return None
    if verdict == "cancel":
        return await store.transition(job_id, JobState.cancelled, message="cancelled", known=job,
                                      cleanup=arq_cleanup(job))
    if verdict == "exhausted":
        return await store.transition(job_id, JobState.failed, known=job, cleanup=arq_cleanup(job), error=JobError(
            code="max_attempts_exceeded",
            message=f"gave up after {job.attempt} attempts (the worker was lost each time)"))
    started = asyncio.ensure_future(_write_start(store, worker, job, raw, before, events))

    jctx = JobContext(job=job, store=store, storage=worker.storage, settings=settings,
                      worker_id=worker.worker_id, started=started, _loop=asyncio.get_running_loop())
    if job.attempt > 1:
        # A new attempt starts from a clean slate: no artifact of an earlier attempt survives.
        await asyncio.to_thread(worker.storage.delete_prefix, f"jobs/{job.id}")
    with job_span(job.id, job.type.value, job.queue, job.traceparent, job.attempt) as span:
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
        except JobCancelled:
            return await store.transition(job_id, JobState.cancelled, message="cancelled", known=jctx.job,
                                          cleanup=arq_cleanup(job))
        except TimeoutError:
            return await _fail(store, jctx, MediaflowError(
                f"job exceeded its time limit of {timeout_for(job_type, settings)} s", code="timeout"))
        except MediaflowError as exc:
            span.set_attribute("error.type", exc.code)
            if exc.retryable and jctx.job.attempt < jctx.job.max_attempts:
                delay = min(60, 2 ** jctx.job.attempt)
                await store.transition(job_id, JobState.queued, attempt=jctx.job.attempt, known=jctx.job,
                                       message=f"{exc.code}: retrying in {delay} s")
                raise Retry(defer=delay) from exc
            return await _fail(store, jctx, exc)
        except Exception as exc:  # anything unexpected is a failed job, never a lost one
            span.record_exception(exc)
            await store.log(job_id, traceback.format_exc(), "error")
            return await _fail(store, jctx, MediaflowError(f"{type(exc).__name__}: {exc}", code="internal_error"))
        if result is pipeline.DETACHED:  # a pipeline parent stays running; its children finish it
            return jctx.job
        return await _succeed(store, jctx, result or {})


async def _succeed(store: JobStore, jctx: JobContext, result: dict[str, Any]) -> Job:
    """Record success in one write - or cancelled, if a cancel was requested meanwhile."""

    def mutate(job: Job) -> list[tuple[str, dict[str, Any]]]:
        if job.state == JobState.cancelling:
            job.state, job.message = JobState.cancelled, "cancelled"
        elif job.state == JobState.running:
            job.state, job.progress, job.stage, job.message = JobState.succeeded, 1.0, "done", ""
            job.result, job.artifacts = result, jctx.artifacts
        else:
            raise Conflict(f"job {job.id} is {job.state.value}; it cannot succeed", code="invalid_state")
        job.finished_at = utcnow()
        return [("state", state_event(job))]

    return await _outcome(store, jctx.job.id, lambda: store.update(jctx.job.id, mutate, known=jctx.job,
                                                                   cleanup=arq_cleanup(jctx.job)))


async def _fail(store: JobStore, jctx: JobContext, exc: MediaflowError) -> Job:
    error = JobError(code=exc.code, message=exc.message, retryable=exc.retryable)
    return await _outcome(store, jctx.job.id, lambda: store.transition(
        jctx.job.id, JobState.failed, artifacts=jctx.artifacts, known=jctx.job, cleanup=arq_cleanup(jctx.job),
        error=error))


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
        except Conflict:
            if not retried:
                raise
            job = await store.get(job_id)
            if not job.terminal:
                raise
            return job


async def _on_cancelled(worker: MediaflowWorker, store: JobStore, jctx: JobContext) -> None:
    job = await store.get(jctx.job.id)
    if job.terminal:  # cancelled before its start was recorded: nothing left to write
        return
    if job.state == JobState.cancelling or jctx.job.id in worker.aborting_tasks:
        await store.transition(job.id, JobState.cancelled, message="cancelled while running")
    elif worker.shutting_down and job.state == JobState.running:
        # Drained: back on the queue, and this attempt does not count (ARQ's try neither).
        await store.transition(job.id, JobState.queued, attempt=max(0, job.attempt - 1), worker=None,
                               message="requeued: worker shut down")
        await worker.pool.decr(retry_key_prefix + job.id)
        await worker.pool.lpush(wake_key(job.queue), job.id)
    elif job.state == JobState.running:
        await _fail(store, jctx, MediaflowError("job was interrupted", code="interrupted", retryable=True))


def create_worker(queue: str, handlers: dict[JobType, Handler], settings: Settings, *,
                  on_startup: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                  on_shutdown: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                  burst: bool = False, handle_signals: bool = True) -> MediaflowWorker:
    functions = [
        func(_runnable(h, t), name=FUNCTION_FOR_TYPE[t],
             # our own timeout (in the wrapper) fails the job cleanly; ARQ's is only a backstop
             timeout=timeout_for(t, settings) + 60, max_tries=1_000_000)
        for t, h in handlers.items()
    ]
    return MediaflowWorker(
        functions=functions,
        queue_name=queue,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        settings=settings,
        queue=queue,
        poll_delay=0,  # waiting is done in _wait_for_work
        max_jobs=settings.worker_concurrency,
        job_completion_wait=settings.job_completion_wait,
        allow_abort_jobs=True,
        keep_result=0,  # the job record is the result
        job_serializer=json_serializer,
        job_deserializer=json_deserializer,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        burst=burst,
        handle_signals=handle_signals,
        health_check_interval=5,
        max_burst_jobs=-1,
    )


def run_worker(queue: str, handlers: dict[JobType, Handler], settings: Settings, service_name: str,
               **kwargs: Any) -> None:
    """Run a worker until SIGTERM/SIGINT (which drain; see the module docstring)."""
    logging.basicConfig(level=os.environ.get("MEDIAFLOW_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    setup_tracing(service_name)
    with contextlib.suppress(ImportError):  # uvloop: less per-job overhead in the event loop
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    create_worker(queue, handlers, settings, **kwargs).run()
