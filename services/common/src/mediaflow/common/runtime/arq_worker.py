"""The worker process every pool runs: ARQ's Worker, with its weak spots fixed. This is the only
module that touches ARQ's Worker and its private attributes (import-linter holds that; pinned arq).

- Dispatch latency: instead of polling every 0.5 s, an idle worker blocks on a wake list that every
  enqueue pushes to (BLPOP), and polls only as a fallback (deferred jobs, lost wake-ups).
- Claiming: one Lua script instead of ARQ's four round trips, and the in-progress key is a short
  lease (renewed by attempts.py).
- Draining: on SIGTERM the worker stops picking jobs and waits `job_completion_wait`; a job still
  running then is put back on the queue without using up a try (attempts.py).
- Cancel: ARQ's abort set is only used for jobs a worker holds (arq issue #485), and stale entries
  are purged.
What happens inside one attempt is attempts.py; this module only runs attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from arq.connections import RedisSettings
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import metrics
from ..jobs import keys
from ..jobs.dispatch import json_deserializer, json_serializer
from ..jobs.family import Workflows
from ..jobs.model import JobType
from ..jobs.queues import FUNCTION_FOR_TYPE, timeout_for
from ..jobs.store import Fence, JobStore
from ..jobs.webhooks import WebhookDeliverer
from ..settings import Settings
from ..storage import Storage, open_storage
from .attempts import RetryIn, run_attempt
from .context import Handler
from .sweeper import sweeping

log = logging.getLogger("mediaflow.worker")

# Claim a queued job: it must still be on the queue and due, and no other worker may hold it. The lease
# holds this claim's token, which fences every write of the attempt (store.py).
CLAIM_SCRIPT = """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'PX', ARGV[3]) then return false end
local try = redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], 88400)
return {score, redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4]), try, redis.call('ZREM', KEYS[6], ARGV[1])}
"""


class MediaflowWorker(Worker):
    """ARQ worker with wake-on-enqueue, lease renewal, graceful requeue and a worker registry."""

    def __init__(self, *args: Any, settings: Settings, queue: str, workflows: Workflows, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.workflows = workflows
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{queue.rsplit(':', 1)[-1]}"
        self.shutting_down = False
        self.ctx["worker"] = self
        self._wake_redis: Redis | None = None
        self._last_registry = 0.0
        self._last_abort_purge = 0.0
        self._next_scan = 0.0
        self._slot_freed = asyncio.Event()
        self.claimed_records: dict[str, bytes] = {}
        self.leases: dict[str, str] = {}  # job id -> the token its lease holds
        self.lost_leases: set[str] = set()  # jobs another attempt took over: ARQ's keys are not ours
        self.settled: set[str] = set()  # interrupted jobs whose last write also settled ARQ's keys
        self._holding: set[str] = set()  # jobs claimed whose slot is not yet given back
        self.store = JobStore(Redis.from_url(settings.redis_url))  # connects on first use
        self._claim: AsyncScript = self.store.redis.register_script(CLAIM_SCRIPT)  # EVALSHA: not resent
        self._webhooks: asyncio.Task[None] | None = None
        self.storage: Storage = open_storage(settings.storage_url)
        self.info: dict[str, Any] = {}
        self.metrics_url: str | None = None
        self._type_of_function = {name: t.value for t, name in FUNCTION_FOR_TYPE.items()}

    async def main(self) -> None:
        # Prometheus (metrics.py): one server per process, before on_startup (a model may load for a while)
        self.metrics_url = metrics.serve(self.settings.worker_metrics_port, self.settings.worker_metrics_host)
        metrics.SLOTS.labels(self.queue_name).set(self.max_jobs)
        self._wake_redis = Redis.from_url(self.settings.redis_url)
        if self.settings.webhook_secret:  # every worker process also delivers due webhooks
            deliverer = WebhookDeliverer(self.store.redis, self.store, self.settings, self.worker_id)
            self._webhooks = asyncio.create_task(deliverer.run())
        await sweeping(self, super().main())  # the sweeper runs beside every worker (sweeper.py)

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
            await self.pool.zremrangebyscore(keys.ABORTS, 0, int((now - 60) * 1000))

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
            # redis-py types commands for its sync and async clients alike, and BLPOP takes float seconds
            wake = [keys.wake(self.queue_name)]
            woken = await self._wake_redis.blpop(wake, self.settings.poll_delay)  # type: ignore[misc, arg-type]
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
            token = f"{self.worker_id}:{secrets.token_hex(6)}"
            claimed = await self._claim(
                keys=[
                    keys.arq_lease(job_id),
                    self.queue_name,
                    keys.job(job_id),
                    keys.arq_definition(job_id),
                    keys.arq_tries(job_id),
                    keys.ABORTS,
                ],
                args=[job_id, int(time.time() * 1000), lease_ms, token],
            )
            if not claimed:  # running elsewhere, finished, or deferred
                self.job_counter -= 1
                self.sem.release()
                continue
            score, record, payload, job_try, aborted = claimed
            self._holding.add(job_id)
            metrics.BUSY_SLOTS.labels(self.queue_name).set(len(self._holding))
            self.leases[job_id] = token
            if record:  # the record as of the claim: the job's start needs no second read
                self.claimed_records[job_id] = record
            self.tasks[job_id] = self.loop.create_task(
                self._run_claimed(job_id, int(score), payload, job_try, bool(aborted), token)
            )

    async def _run_claimed(
        self, job_id: str, score: int, payload: bytes | None, job_try: int, aborted: bool, token: str
    ) -> None:
        """ARQ's run_job for our jobs, minus its first round trip (the claim script did that work)
        and minus what we do not use (pickle, results, cron). Same outcomes: finished, retried with a
        delay, or left on the queue when the worker shuts down."""
        try:
            outcome = await self._execute(job_id, score, payload, job_try, aborted)
        finally:
            if self.leases.get(job_id) == token:  # a retry may have claimed the id again meanwhile
                del self.leases[job_id]
            self.claimed_records.pop(job_id, None)  # left over when ARQ never called our function
            self.free_slot(job_id)
        if outcome is not None:
            finish, incr_score = outcome
            await _unless_cancelled(self.finish_job(job_id, finish, None, None, False, incr_score, None))

    async def _execute(
        self, job_id: str, score: int, payload: bytes | None, job_try: int, aborted: bool
    ) -> tuple[bool, int | None] | None:
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
        # the score is when the job became due (enqueue time, or the end of a retry's delay)
        waited = max(0.0, time.time() - score / 1000)
        metrics.QUEUE_WAIT.labels(self.queue_name, self._type_of_function.get(data["f"], "")).observe(waited)
        ctx = {**self.ctx, "job_id": job_id, "job_try": job_try, "score": score}
        task = self.loop.create_task(function.coroutine(ctx, *data["a"], **data["k"]))
        self.job_tasks[job_id] = task
        try:
            outcome = await asyncio.wait_for(task, function.timeout_s)
            if isinstance(outcome, RetryIn):
                self.jobs_retried += 1
                return False, int(outcome.seconds * 1000) + (int(time.time() * 1000) - score)
            self.jobs_complete += 1
            if outcome is True:
                return None
        except (Exception, asyncio.CancelledError) as exc:
            if job_id in self.lost_leases or job_id in self.settled:
                return None  # ARQ's keys are settled already (by our last write, or by the new owner)
            if isinstance(exc, asyncio.CancelledError) and job_id not in self.aborting_tasks:
                self.jobs_retried += 1  # shutdown: the job stays on the queue (our wrapper requeued its record)
                return False, None
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("job %s failed outside its handler", job_id)
            self.jobs_failed += 1
        finally:
            self.job_tasks.pop(job_id, None)
            self.aborting_tasks.discard(job_id)
            self.lost_leases.discard(job_id)
            self.settled.discard(job_id)
        return True, None

    # ---- WorkerPort (attempts.py) -----------------------------------------------------------------
    def lease(self, job_id: str) -> Fence:
        return keys.arq_lease(job_id), self.leases[job_id]

    def lose_lease(self, job_id: str) -> None:
        self.lost_leases.add(job_id)
        self.abort(job_id)

    def mark_settled(self, job_id: str) -> None:
        self.settled.add(job_id)

    def has_lost_lease(self, job_id: str) -> bool:
        return job_id in self.lost_leases

    def take_claimed_record(self, job_id: str) -> bytes | None:
        return self.claimed_records.pop(job_id, None)

    def abort(self, job_id: str) -> None:
        if (task := self.job_tasks.get(job_id)) is not None:
            self.aborting_tasks.add(job_id)
            task.cancel()

    def aborting(self, job_id: str) -> bool:
        return job_id in self.aborting_tasks

    def free_slot(self, job_id: str) -> None:
        """Give back the job's slot (once). Done as soon as its handler is over: recording the outcome
        uses no device, so the next job need not wait for those writes."""
        if job_id in self._holding:
            self._holding.discard(job_id)
            self._release_sem_dec_counter_on_complete()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()
        metrics.BUSY_SLOTS.labels(self.queue_name).set(len(self._holding))

    async def heart_beat(self) -> None:
        await super().heart_beat()
        now = time.time()
        if now - self._last_registry >= 1.0:
            self._last_registry = now
            entry = {
                "id": self.worker_id,
                "queue": self.queue_name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "heartbeat": now,
                "jobs": sorted(self.job_tasks),
                "draining": self.shutting_down,
                "metrics_url": self.metrics_url,
                **self.info,
            }
            await self.pool.hset(keys.WORKERS, self.worker_id, json.dumps(entry))  # type: ignore[misc]  # as above

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
                await self.pool.hdel(keys.WORKERS, self.worker_id)  # type: ignore[misc]  # as above
        await super().close()
        for client in (self._wake_redis, self.store.redis):
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


def _attempt_of(handler: Handler, job_type: JobType) -> WorkerCoroutine:
    async def attempt(ctx: dict[str, Any], job_id: str) -> bool | RetryIn:
        return await run_attempt(handler, job_type, ctx["worker"], job_id)

    attempt.__name__ = FUNCTION_FOR_TYPE[job_type]
    return attempt


def create_worker(
    queue: str,
    handlers: dict[JobType, Handler],
    settings: Settings,
    *,
    on_startup: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    on_shutdown: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    workflows: Workflows | None = None,
    burst: bool = False,
    handle_signals: bool = True,
) -> MediaflowWorker:
    """A worker of `queue` running `handlers`; `workflows` drive the parents of the children it runs
    (mediaflow.common.workflows.WORKFLOWS)."""
    functions = [
        func(
            _attempt_of(h, t),
            name=FUNCTION_FOR_TYPE[t],
            # our own timeout (in the wrapper) fails the job cleanly; ARQ's is only a backstop
            timeout=timeout_for(t, settings) + 60,
            max_tries=1_000_000,
        )
        for t, h in handlers.items()
    ]
    return MediaflowWorker(
        functions=functions,
        queue_name=queue,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        settings=settings,
        queue=queue,
        workflows=workflows or {},
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
