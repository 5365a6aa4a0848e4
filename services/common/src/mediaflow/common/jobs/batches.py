"""Batches: many jobs made from one template, followed, cancelled, retried and deleted as one unit.

A batch record holds what was asked (the template, each item's source) and the ids of the jobs it
made. Its state, progress and counts are derived from those jobs on every read (one MGET), so there
is no second copy of job state to keep in step: a job retried, cancelled or expired on its own is
reflected in its batch at once. The record goes when its last job has gone (retention or deletion).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from ..errors import Conflict, NotFound
from . import keys
from .dispatch import Dispatcher
from .model import Job, JobState, utcnow
from .store import newest_ids

GONE = "deleted"  # an item whose job was deleted or expired on its own (or a batch with no job left)
# The state of an ended batch: every item succeeded / failed / was cancelled, or a mix (partial).
ENDED = ("succeeded", "failed", "cancelled", "partial", GONE)


class BatchItem(BaseModel):
    index: int  # the item's position in the request
    job_id: str
    source: str = ""  # what the item named (a file name, media id, URL or path), for people


class Batch(BaseModel):
    id: str
    created_at: datetime = Field(default_factory=utcnow)
    template: dict[str, Any] = Field(default_factory=dict)
    items: list[BatchItem] = Field(default_factory=list)
    rejected: list[dict[str, Any]] = Field(default_factory=list)  # items refused at submit, with why
    tenant: str = Field(default="default", exclude=True)
    _jobs: dict[str, Job | None] = PrivateAttr(default_factory=dict)  # as last read (BatchStore.with_jobs)

    def internal_json(self) -> str:
        data = self.model_dump(mode="json")
        data["tenant"] = self.tenant
        return json.dumps(data, separators=(",", ":"))

    def jobs(self) -> list[Job]:
        return [job for job in self._jobs.values() if job is not None]

    def state(self) -> str:
        states = [job.state for job in self.jobs()]
        if not states:
            return GONE
        if any(not job.terminal for job in self.jobs()):
            return "queued" if all(s == JobState.queued for s in states) else "running"
        ended = set(states)
        return next(iter(ended)).value if len(ended) == 1 else "partial"

    def progress(self) -> float:
        """The share of the batch done: an ended item counts whole, a running one by its progress."""
        jobs = self.jobs()
        if not jobs:
            return 1.0
        return round(sum(1.0 if j.terminal else j.progress for j in jobs) / len(jobs), 4)

    def public(self, base_url: str = "", with_items: bool = True) -> dict[str, Any]:
        counts = Counter(job.state.value if job else GONE for job in self._jobs.values())
        data: dict[str, Any] = {
            "id": self.id,
            "state": self.state(),
            "progress": self.progress(),
            "counts": dict(sorted(counts.items())),
            "total": len(self.items),
            "created_at": self.created_at.isoformat(),
            "template": self.template,
            "rejected": self.rejected,
        }
        if with_items:
            data["items"] = [self._item(item) for item in self.items]
        return data

    def _item(self, item: BatchItem) -> dict[str, Any]:
        job = self._jobs.get(item.job_id)
        view: dict[str, Any] = {"index": item.index, "job_id": item.job_id, "source": item.source}
        if job is None:
            return {**view, "state": GONE, "progress": 0.0}
        view.update(state=job.state.value, progress=job.progress, stage=job.stage, type=job.type.value)
        if job.error is not None:
            view["error"] = job.error.model_dump()
        return view


class BatchStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def add(pipe: Pipeline, batch: Batch) -> None:
        """Queue the batch's writes on `pipe` (the transaction that enqueues its jobs)."""
        pipe.set(keys.batch(batch.id), batch.internal_json())
        pipe.zadd(keys.tenant_batches(batch.tenant), {batch.id: 0})

    async def get(self, batch_id: str, tenant: str | None = None) -> Batch:
        raw = await self.redis.get(keys.batch(batch_id))
        batch = Batch.model_validate_json(raw) if raw is not None else None
        if batch is None or (tenant is not None and batch.tenant != tenant):
            raise NotFound(f"batch {batch_id} does not exist", code="batch_not_found")
        return await self.with_jobs(batch)

    async def with_jobs(self, batch: Batch) -> Batch:
        """Read the batch's jobs as they are now (one MGET; only records that changed since the last
        read are parsed again, so a follower polling a large batch costs little while it waits)."""
        ids = [item.job_id for item in batch.items]
        raws = await self.redis.mget([keys.job(i) for i in ids]) if ids else []
        known = batch._jobs
        batch._jobs = {
            i: None if raw is None else job if (job := known.get(i)) and job._stored == raw else Job.from_stored(raw)
            for i, raw in zip(ids, raws, strict=True)
        }
        return batch

    async def exists(self, batch_id: str) -> bool:
        return bool(await self.redis.exists(keys.batch(batch_id)))

    async def page(self, tenant: str, limit: int = 50, cursor: str | None = None) -> tuple[list[Batch], str | None]:
        """Newest first; the cursor is the last id of the previous page (ids sort by time)."""
        ids = await newest_ids(self.redis, keys.tenant_batches(tenant), limit + 1, cursor)
        raws = await self.redis.mget([keys.batch(i) for i in ids[:limit]]) if ids else []
        found = [b for raw in raws if raw is not None and (b := Batch.model_validate_json(raw)).tenant == tenant]
        # every batch's jobs in one MGET (a page is two round trips, however many batches it holds)
        job_ids = [item.job_id for batch in found for item in batch.items]
        job_raws = await self.redis.mget([keys.job(i) for i in job_ids]) if job_ids else []
        records = dict(zip(job_ids, job_raws, strict=True))
        for batch in found:
            batch._jobs = {
                item.job_id: Job.from_stored(raw) if (raw := records[item.job_id]) is not None else None
                for item in batch.items
            }
        return found, (ids[limit - 1] if len(ids) > limit else None)

    async def delete(self, batch: Batch) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.batch(batch.id))
            pipe.zrem(keys.tenant_batches(batch.tenant), batch.id)
            await pipe.execute()

    async def scan(self) -> list[Batch]:
        """Every batch record (the sweeper's pass; batches are few next to jobs)."""
        found: list[Batch] = []
        async for key in self.redis.scan_iter(match=keys.BATCH_PATTERN, count=500):
            raw = await self.redis.get(key)
            if raw is not None:
                with contextlib.suppress(ValueError):
                    found.append(Batch.model_validate_json(raw))
        return found


async def cancel_batch(dispatcher: Dispatcher, batch: Batch) -> int:
    """Cancel every item that has not ended; returns how many were."""
    cancelled = 0
    for job in batch.jobs():
        if not job.terminal:
            with contextlib.suppress(Conflict, NotFound):  # it ended (or went) meanwhile
                await dispatcher.cancel(job.id)
                cancelled += 1
    return cancelled


async def retry_batch(dispatcher: Dispatcher, batch: Batch) -> int:
    """Retry every failed or cancelled item; returns how many were."""
    retried = 0
    for job in batch.jobs():
        if job.state in (JobState.failed, JobState.cancelled):
            with contextlib.suppress(Conflict, NotFound):
                await dispatcher.retry(job.id)
                retried += 1
    return retried
