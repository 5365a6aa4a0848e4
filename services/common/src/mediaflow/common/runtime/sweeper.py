"""The sweeper: every worker process runs one beside its worker (`sweeping`), and one sweep at a time
runs across all replicas (a Redis lock, `SET NX PX`, that also spaces sweeps one interval apart).

A sweep (every `MEDIAFLOW_SWEEP_INTERVAL_SECONDS`) walks the job records with SCAN, in batches:
- expires ended jobs past their tenant's retention (a caption parent with its children) and media
  past its retention that no queued or running job names (jobs/retention.py);
- settles stuck parents: a caption parent still `running`/`cancelling` whose children all ended a while
  ago is moved on as the end of its last child would have (jobs/family.py);
- recovers jobs whose worker is gone: `running` with no lease (ARQ's in-progress key) and not on its
  queue, so no worker would ever claim it again: enqueued again as a retry is, or failed
  `max_attempts_exceeded` when it has no attempt left (a `cancelling` one ends `cancelled`);
- removes orphans: event streams and tenant-index entries without a record, storage folders
  `jobs/{id}`, `media/{id}` without one, and batch records whose jobs have all gone.
Every step is idempotent and every record write is a compare-and-set against the record as scanned,
so two sweeps at once (a lock that expired mid-sweep) do no harm. Counts go to the hash `mediaflow:sweeper`
(read by the gateway's /metrics). docs/operations.md, "The sweeper", is the operator's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from ..errors import MediaflowError
from ..jobs import keys
from ..jobs.batches import BatchStore
from ..jobs.dispatch import Dispatcher
from ..jobs.family import Workflows, child_ended, settle_cancelled_parent
from ..jobs.model import Job, JobError, JobState, utcnow
from ..jobs.retention import (
    LIVE,
    expired,
    family,
    id_time,
    media_ids,
    media_retention_for,
    remove_job,
    remove_media,
    retention_for,
)
from ..jobs.store import SCAN_BATCH, JobStore, state_event
from ..settings import Settings
from ..storage import Storage
from .attempts import retire

log = logging.getLogger("mediaflow.sweeper")

SETTLE_GRACE_S = 60.0  # a parent whose children all ended this long ago, and that has not moved on, is stuck
ORPHAN_GRACE_S = 600.0  # files of a younger id may belong to a record still being written (an upload)
FILES_EVERY = 10  # storage is listed for orphans every 10th sweep (a listing of all jobs is the dearest step)
# Keep the lock while it is still ours (a sweep longer than the interval).
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass
class SweepCounts:
    """What one sweep did (each is also a counter of the hash `mediaflow:sweeper`)."""

    jobs_expired: int = 0
    media_expired: int = 0
    parents_settled: int = 0
    jobs_requeued: int = 0  # running, worker gone: back on the queue
    jobs_failed_lost: int = 0  # running, worker gone, no attempt left: failed max_attempts_exceeded
    jobs_cancelled_lost: int = 0  # cancelling, worker gone: cancelled
    orphan_streams: int = 0
    orphan_index_entries: int = 0
    orphan_files: int = 0
    batches_expired: int = 0  # batch records whose jobs had all gone (expired or deleted)


class SweeperHost(Protocol):
    """What the sweeper needs from the worker process it runs in (MediaflowWorker)."""

    settings: Settings
    store: JobStore
    storage: Storage
    workflows: Workflows
    worker_id: str


async def sweeping(host: SweeperHost, main: Awaitable[None]) -> None:
    """Run the worker's `main` with a sweeper beside it (none when the interval is 0)."""
    task = None
    if host.settings.sweep_interval_seconds > 0:
        sweeper = Sweeper(host.store, host.storage, host.settings, host.workflows, host.worker_id)
        task = asyncio.create_task(sweeper.run())
    try:
        await main
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Sweeper:
    def __init__(self, store: JobStore, storage: Storage, settings: Settings, workflows: Workflows, owner: str) -> None:
        self.store, self.storage, self.settings, self.workflows, self.owner = store, storage, settings, workflows, owner
        self.redis: Redis = store.redis
        self.dispatcher = Dispatcher(
            store.redis, max_tries=settings.max_tries, priority_aging_seconds=settings.priority_aging_seconds
        )
        self._renew = store.redis.register_script(RENEW_SCRIPT)

    @property
    def _lock_ms(self) -> int:
        # A little under one interval: the next sweep, on whichever replica, is about one interval later.
        return max(1000, int(self.settings.sweep_interval_seconds * 900))

    async def run(self) -> None:
        """Try to sweep about once per interval, for ever (errors are logged; the next interval tries again)."""
        interval = self.settings.sweep_interval_seconds
        while True:
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))
            try:
                await self.sweep_if_due()
            except Exception:
                log.exception("sweep failed; trying again in %s s", interval)

    async def sweep_if_due(self) -> SweepCounts | None:
        """Sweep, unless another replica swept less than an interval ago (or is sweeping now)."""
        if not await self.redis.set(keys.SWEEPER_LOCK, self.owner, nx=True, px=self._lock_ms):
            return None
        started = time.monotonic()
        runs = int(await self.redis.hincrby(keys.SWEEPER, "runs", 1))  # type: ignore[misc]  # redis-py: sync|async type
        counts = await self.sweep(files=runs % FILES_EVERY == 1)
        await self._record(counts, time.monotonic() - started)
        return counts

    async def sweep(self, now: float | None = None, files: bool = True) -> SweepCounts:
        """One sweep (whether or not this replica holds the lock); `files`: look for orphaned files too."""
        now = time.time() if now is None else now
        counts = SweepCounts()
        referenced: set[str] = set()  # media named by live jobs
        async for batch in self.store.scan_jobs():
            for job in batch:
                if job.state in LIVE:
                    referenced |= media_ids(job.input) | media_ids(job.options)
                try:
                    await self._job(job, now, counts)
                except MediaflowError as exc:
                    log.warning("sweep: job %s: %s", job.id, exc.message)
            await self._keep_lock()
        await self._media(referenced, now, counts)
        await self._orphan_streams(counts)
        await self._orphan_index_entries(counts)
        await self._empty_batches(now, counts)
        if files:
            await self._orphan_files(now, counts)
        if any(dataclasses.astuple(counts)):
            log.info("sweep: %s", {k: v for k, v in dataclasses.asdict(counts).items() if v})
        return counts

    async def _keep_lock(self) -> None:
        await self._renew(keys=[keys.SWEEPER_LOCK], args=[self.owner, self._lock_ms])

    async def _record(self, counts: SweepCounts, seconds: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, value in dataclasses.asdict(counts).items():
                pipe.hincrby(keys.SWEEPER, name, value)
            pipe.hset(keys.SWEEPER, mapping={"last_run_at": time.time(), "last_duration_seconds": round(seconds, 3)})
            await pipe.execute()

    # ---- jobs --------------------------------------------------------------------------------
    async def _job(self, job: Job, now: float, counts: SweepCounts) -> None:
        if job.terminal:
            await self._expire(job, now, counts)
        elif job.children:
            await self._settle(job, now, counts)
        elif job.state in (JobState.running, JobState.cancelling):
            await self._recover(job, now, counts)

    async def _expire(self, job: Job, now: float, counts: SweepCounts) -> None:
        if not expired(job.finished_at, retention_for(self.settings, job.tenant), now):
            return
        if job.parent_id and await self.redis.exists(keys.job(job.parent_id)):
            return  # a child goes with its parent
        members = await family(self.store, job)
        if any(not m.terminal for m in members):
            return
        # The job first (only if unchanged: not retried meanwhile), then its children.
        if not await remove_job(self.store, self.storage, job):
            return
        counts.jobs_expired += 1
        for child in members[:-1]:
            counts.jobs_expired += await remove_job(self.store, self.storage, child)

    async def _settle(self, parent: Job, now: float, counts: SweepCounts) -> None:
        if parent.state not in (JobState.running, JobState.cancelling):
            return
        children = await self.store.get_many(parent.children)
        if not children or any(not c.terminal for c in children):
            return
        ended = max((c.finished_at.timestamp() for c in children if c.finished_at), default=0.0)
        if now - ended < SETTLE_GRACE_S:
            return  # its workflow may be moving it on right now
        if parent.state == JobState.cancelling or any(c.state == JobState.cancelled for c in children):
            await settle_cancelled_parent(self.store, parent.id)
        else:  # as the end of its last child would have (idempotent: Workflow.child_succeeded)
            await child_ended(self.store, self.storage, self.settings, children[-1].id, self.workflows)
        if (await self.store.get(parent.id))._stored != parent._stored:
            counts.parents_settled += 1
            log.warning("sweep: parent %s was stuck %s; moved on", parent.id, parent.state.value)

    async def _recover(self, job: Job, now: float, counts: SweepCounts) -> None:
        """A running (or cancelling) job no worker holds and none can claim: its lease is gone and it is
        not on its queue (a held job always is: ARQ removes it only when it finishes)."""
        if job.started_at is not None and now - job.started_at.timestamp() < self.settings.lease_seconds:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.arq_lease(job.id))
            pipe.zscore(job.queue, job.id)
            held, queued = await pipe.execute()
        if held or queued is not None or job._stored is None:
            return
        before, raw = job.state, job._stored
        if job.state == JobState.running and job.attempt < job.max_attempts:
            job.state, job.worker = JobState.queued, None
            job.progress, job.stage, job.message = 0.0, "", "requeued: its worker was lost"
            if await self.dispatcher.requeue(job):  # compare-and-set against the record as scanned
                counts.jobs_requeued += 1
                log.warning("sweep: job %s had lost its worker; queued again", job.id)
            return
        if job.state == JobState.cancelling:
            job.state, job.message = JobState.cancelled, "cancelled (its worker was lost)"
        else:
            job.state = JobState.failed
            job.error = JobError(
                code="max_attempts_exceeded",
                message=f"gave up after {job.attempt} attempts (the worker was lost each time)",
            )
        job.finished_at = utcnow()
        if not await self.store.write_if_unchanged(job, raw, before, [("state", state_event(job))], retire(job)):
            return
        if job.state == JobState.cancelled:
            counts.jobs_cancelled_lost += 1
        else:
            counts.jobs_failed_lost += 1
        log.warning("sweep: job %s had lost its worker; now %s", job.id, job.state.value)
        if job.parent_id:
            await child_ended(self.store, self.storage, self.settings, job.id, self.workflows)

    # ---- media -------------------------------------------------------------------------------
    async def _media(self, referenced: set[str], now: float, counts: SweepCounts) -> None:
        async for batch in self.store.scan_media():
            for media in batch:
                keep = media_retention_for(self.settings, media.tenant)
                if media.id not in referenced and expired(media.created_at, keep, now):
                    counts.media_expired += await remove_media(self.store, self.storage, media)
            await self._keep_lock()

    # ---- orphans -----------------------------------------------------------------------------
    async def _orphan_streams(self, counts: SweepCounts) -> None:
        """Event streams of jobs that no longer exist (a late progress event of a deleted job)."""
        async for ids in self.store.scan_ids(keys.EVENTS_PATTERN):
            gone = set(ids) - await self.store.existing(keys.job, ids)
            if gone:
                counts.orphan_streams += await self.redis.delete(*(keys.events(i) for i in gone))

    async def _orphan_index_entries(self, counts: SweepCounts) -> None:
        """Ids in the tenants' job and media indexes whose record is gone."""
        for pattern, key_of in ((keys.TENANT_INDEX_PATTERN, keys.job), (keys.MEDIA_INDEX_PATTERN, keys.media)):
            indexes = [k async for k in self.redis.scan_iter(match=pattern, count=SCAN_BATCH)]
            for index in indexes:
                batch: list[str] = []
                async for member, _score in self.redis.zscan_iter(index, count=SCAN_BATCH):
                    batch.append(member.decode() if isinstance(member, bytes) else member)
                    if len(batch) >= SCAN_BATCH:
                        counts.orphan_index_entries += await self._drop_missing(index, batch, key_of)
                        batch = []
                counts.orphan_index_entries += await self._drop_missing(index, batch, key_of)

    async def _empty_batches(self, now: float, counts: SweepCounts) -> None:
        batches = BatchStore(self.redis)
        for batch in await batches.scan():
            if now - batch.created_at.timestamp() < ORPHAN_GRACE_S:
                continue  # its jobs may still be on their way (written in the same transaction, but be safe)
            ids = [item.job_id for item in batch.items]
            if not ids or not await self.store.existing(keys.job, ids):
                await batches.delete(batch)
                counts.batches_expired += 1

    async def _drop_missing(self, index: bytes | str, ids: list[str], key_of: Callable[[str], str]) -> int:
        gone = set(ids) - await self.store.existing(key_of, ids)
        return int(await self.redis.zrem(index, *gone)) if gone else 0

    async def _orphan_files(self, now: float, counts: SweepCounts) -> None:
        """Storage folders `jobs/{id}`, `media/{id}` whose record is gone (a job deleted while its worker
        still wrote), once their id is old enough that no record can be on its way."""
        for folder, key_of, prefix in ((keys.JOB_FILES, keys.job, "j_"), (keys.MEDIA_FILES, keys.media, "m_")):
            names = await asyncio.to_thread(self.storage.names, folder)
            old = [n for n in names if n.startswith(prefix) and (id_time(n) or now) < now - ORPHAN_GRACE_S]
            for start in range(0, len(old), SCAN_BATCH):
                batch = old[start : start + SCAN_BATCH]
                for name in set(batch) - await self.store.existing(key_of, batch):
                    await asyncio.to_thread(self.storage.delete_prefix, f"{folder}/{name}")
                    counts.orphan_files += 1
