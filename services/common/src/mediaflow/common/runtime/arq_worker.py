"""The worker process every pool runs: ARQ's Worker, with its weak spots fixed. This is the only
module that touches ARQ's Worker and its private attributes (import-linter holds that; pinned arq).

- Dispatch latency: instead of polling every 0.5 s, an idle worker blocks on a wake list that every
  enqueue pushes to (BLPOP), and polls only as a fallback (deferred jobs, lost wake-ups).
- Order: a worker with a free slot always claims the best due jobs (the queue's lowest scores, which
  carry the priority: jobs/queues.py), never a stale list read before its slots filled; a retry keeps
  its priority once its backoff is over (PROMOTE_SCRIPT).
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
from dataclasses import dataclass
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
from ..jobs.model import JobType, Priority
from ..jobs.queues import FUNCTION_FOR_TYPE, RANKS, boost_ms, deferred_score, read_score, timeout_for
from ..jobs.store import Fence, JobStore
from ..jobs.webhooks import WebhookDeliverer
from ..settings import Settings
from ..storage import Storage, open_storage
from .attempts import RetryIn, run_attempt
from .context import Handler
from .sweeper import sweeping

log = logging.getLogger("mediaflow.worker")

# Claim the best due job: the lowest score up to now (ARGV[1], ms) on the queue (KEYS[1]) that no worker
# holds - ARQ keeps a running job on its queue, so held ones are passed over (up to 1,024 of them).
# The lease (ARGV[2] ms) holds this claim's token (ARGV[3]), which fences every write of the attempt
# (store.py). The candidates are only known in here, so their keys are built from the prefixes in
# ARGV[4..7] (`claim_args`), not passed as KEYS: fine on one Redis or Valkey (ARQ needs one anyway), not
# on Redis Cluster. KEYS[2]: ARQ's abort set, KEYS[3]: the queue's deferred index. Returns {id, score,
# record, definition, try, abort asked, deferred score (equal to score: a retry not promoted yet)}.
CLAIM_SCRIPT = """
for offset = 0, 960, 64 do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', offset, 64)
  for _, id in ipairs(ids) do
    if redis.call('SET', ARGV[4] .. id, ARGV[3], 'NX', 'PX', ARGV[2]) then
      local try = redis.call('INCR', ARGV[7] .. id)
      redis.call('EXPIRE', ARGV[7] .. id, 88400)
      local score, record = redis.call('ZSCORE', KEYS[1], id), redis.call('GET', ARGV[5] .. id)
      local definition, aborted = redis.call('GET', ARGV[6] .. id), redis.call('ZREM', KEYS[2], id)
      return {id, score, record, definition, try, aborted, redis.call('ZSCORE', KEYS[3], id)}
    end
  end
  if #ids < 64 then return false end
end
return false
"""


def claim_keys(queue: str) -> list[str]:
    """CLAIM_SCRIPT's KEYS: the queue, ARQ's abort set, the queue's deferred index."""
    return [queue, keys.ABORTS, keys.deferred(queue)]


def claim_args(now_ms: int, lease_ms: int, token: str) -> list[str | int]:
    """CLAIM_SCRIPT's ARGV: the time, the lease, its token, and the prefixes of a job's keys."""
    prefixes = (keys.arq_lease(""), keys.job(""), keys.arq_definition(""), keys.arq_tries(""))
    return [now_ms, lease_ms, token, *prefixes]


# A retry waits out its backoff scored when it is due, without its priority's boost (it would be due at
# once), and listed in the queue's deferred index. Once due, it gets the boost (ARGV[3..5]: the boost of
# priority rank 0, 1, 2 - the rank is the score's remainder mod 4, jobs/queues.py), so it keeps its
# priority; up to 100 per call. An entry whose score changed meanwhile (cancelled, retried by hand) is
# dropped from the index. One a worker holds (a lease, ARGV[2] .. id: claimed before its promotion) is
# passed over and kept: its score is the running attempt's, and it is promoted once nobody holds it and
# it still waits (requeued by a drain, lease lost), or dropped when its attempt ends (gone, or deferred
# again). Up to 1,024 held ones are passed over.
PROMOTE_SCRIPT = """
local done, held = 0, 0
while done < 100 and held < 1024 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', held, 64)
  for i = 1, #due, 2 do
    if redis.call('EXISTS', ARGV[2] .. due[i]) == 1 then
      held = held + 1
    else
      local score = tonumber(redis.call('ZSCORE', KEYS[1], due[i]))
      if score and score == tonumber(due[i + 1]) then
        redis.call('ZADD', KEYS[1], 'XX', score - (tonumber(ARGV[3 + score % 4]) or 0), due[i])
      end
      redis.call('ZREM', KEYS[2], due[i])
      done = done + 1
    end
  end
  if #due < 128 then break end
end
return done
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
        self._promote: AsyncScript = self.store.redis.register_script(PROMOTE_SCRIPT)
        aging = settings.priority_aging_seconds
        self._boosts = [boost_ms(p, aging) for p in sorted(RANKS, key=RANKS.__getitem__)]
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
                await self._promote(
                    keys=[self.queue_name, keys.deferred(self.queue_name)],
                    args=[now_ms(), keys.arq_lease(""), *self._boosts],
                )
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
            # Work arrived. Which job runs is the queue's order (its priority), not the token's.
            await self.start_jobs([])  # (a Redis error there is logged inside: the loop goes on)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """ARQ's start_jobs, claiming the best due jobs while slots are free, each in one round trip (a
        Lua script) instead of four (WATCH/EXISTS/ZSCORE/MULTI), with the in-progress key set as a short
        lease. `job_ids` (ARQ's read of the queue's head) are not used: unlike ARQ, it never waits for a
        slot with them in hand, when a better job (a higher priority) may have come meanwhile."""
        lease_ms = int(self.settings.lease_seconds * 1000)
        script_keys = claim_keys(self.queue_name)
        # allow_pick_jobs again each time: a SIGTERM (drain) may come while the worker waited for work
        while self.allow_pick_jobs and self.job_counter < self.max_jobs:
            await self.sem.acquire()  # free: the semaphore counts the same slots as job_counter
            self.job_counter += 1
            token = f"{self.worker_id}:{secrets.token_hex(6)}"
            try:
                claimed = await self._claim(keys=script_keys, args=claim_args(now_ms(), lease_ms, token))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                # Redis is away: claim later (a lease the script may have set runs out unused)
                log.warning("claiming a job failed (%s); trying again later", exc)
                claimed = None
            except BaseException:  # never keep the slot of a claim that did not happen
                self._release_slot()
                raise
            if not claimed:  # nothing due that no worker holds, or Redis is away: the slot stays free
                self._release_slot()
                return
            job_id_b, score, record, payload, job_try, aborted, deferred = claimed
            job_id = job_id_b.decode()
            self._holding.add(job_id)
            metrics.BUSY_SLOTS.labels(self.queue_name).set(len(self._holding))
            self.leases[job_id] = token
            if record:  # the record as of the claim: the job's start needs no second read
                self.claimed_records[job_id] = record
            boosted = deferred is None or float(deferred) != float(score)  # not a retry waiting for PROMOTE_SCRIPT
            entry = Entry(int(score), _priority(record, int(score)), boosted)
            self.tasks[job_id] = self.loop.create_task(
                self._run_claimed(job_id, entry, payload, job_try, bool(aborted), token)
            )

    def _release_slot(self) -> None:
        """Give back a slot taken for a claim that claimed nothing."""
        self.job_counter -= 1
        self.sem.release()

    async def _run_claimed(
        self, job_id: str, entry: Entry, payload: bytes | None, job_try: int, aborted: bool, token: str
    ) -> None:
        """ARQ's run_job for our jobs, minus its first round trip (the claim script did that work)
        and minus what we do not use (pickle, results, cron). Same outcomes: finished, retried with a
        delay, or left on the queue when the worker shuts down."""
        try:
            outcome = await self._execute(job_id, entry, payload, job_try, aborted)
        finally:
            if self.leases.get(job_id) == token:  # a retry may have claimed the id again meanwhile
                del self.leases[job_id]
            self.claimed_records.pop(job_id, None)  # left over when ARQ never called our function
            self.free_slot(job_id)
        if outcome is not None:
            finish, due = outcome
            await _unless_cancelled(self._finish(job_id, finish, due))

    async def _finish(self, job_id: str, finish: bool, due: int | None) -> None:
        if finish or due is None:  # ended, or left on the queue as it is (a drain)
            await self.finish_job(job_id, finish, None, None, False, None, None)
            return
        # A retry: ARQ's finish_job would move the score by a difference, which goes wrong when the score
        # changed under the attempt; this sets it. Its priority's boost is added once it is due
        # (PROMOTE_SCRIPT), so it is listed in the deferred index meanwhile - all in one transaction.
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(keys.arq_lease(job_id))
            tr.zadd(self.queue_name, {job_id: due}, xx=True)  # not back if it left meanwhile (cancel)
            tr.zadd(keys.deferred(self.queue_name), {job_id: due})
            await tr.execute()

    async def _execute(
        self, job_id: str, entry: Entry, payload: bytes | None, job_try: int, aborted: bool
    ) -> tuple[bool, int | None] | None:
        """Run the job's function; returns (finish, due): finished (ARQ's keys go), left on the queue
        (due None), or retried with the queue score `due`; or None when the job's last write already
        retired it from ARQ."""
        if not payload or aborted:  # definition expired, or aborted before it started
            self.jobs_failed += 1
            return True, None
        data = json_deserializer(payload)
        function = self.functions.get(data["f"])
        if function is None:
            log.warning("job %s: no function %r on this worker", job_id, data["f"])
            self.jobs_failed += 1
            return True, None
        # the score says when the job became due (enqueue time, or the end of a retry's delay)
        _, ready = read_score(entry.score, self.settings.priority_aging_seconds, boosted=entry.boosted)
        waited = max(0.0, time.time() - ready)
        metrics.QUEUE_WAIT.labels(self.queue_name, self._type_of_function.get(data["f"], "")).observe(waited)
        ctx = {**self.ctx, "job_id": job_id, "job_try": job_try, "score": entry.score}
        task = self.loop.create_task(function.coroutine(ctx, *data["a"], **data["k"]))
        self.job_tasks[job_id] = task
        try:
            outcome = await asyncio.wait_for(task, function.timeout_s)
            if isinstance(outcome, RetryIn):
                self.jobs_retried += 1
                return False, deferred_score(entry.priority, now_ms() + int(outcome.seconds * 1000))
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


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Entry:
    """A claimed job's queue entry: its score, its priority, and whether the score has its boost."""

    score: int
    priority: Priority
    boosted: bool


def _priority(record: bytes | None, score: int) -> Priority:
    """The job's priority: its record's (as of the claim); what its score says only without one."""
    if record:
        with contextlib.suppress(ValueError, AttributeError):  # not JSON, not an object, no such priority
            return Priority(json.loads(record).get("priority", Priority.normal))
    return read_score(score, 0)[0]


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
