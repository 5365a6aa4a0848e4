"""Deleting jobs and media: at once (`DELETE /v1/jobs/{id}`, `DELETE /v1/media/{id}`) or when their
retention ends (the sweeper, runtime/sweeper.py). docs/operations.md, "Retention", is the user's side.

A job goes with everything it owns: record, event stream, tenant-index entry, ARQ keys (one script,
`JobStore.delete`), then its files (`jobs/{id}/`). A caption parent takes its children with it. Media
goes with its upload (`media/{id}/`), never while a queued or running job names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Any

from ..errors import Conflict, NotFound
from ..settings import Settings
from ..storage import Storage
from . import keys
from .batches import Batch, BatchStore, cancel_batch
from .dispatch import Dispatcher
from .model import Job, JobState, Media
from .search import SearchIndex
from .store import JobStore

LIVE = frozenset({JobState.queued, JobState.running, JobState.cancelling})
DELETE_WAIT_S = 5.0  # how long DELETE waits for a running job to stop before deleting it anyway
CLOCK_SKEW_S = 60.0  # hosts' clocks may differ this much (ids are made from the local clock)
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # ULID's alphabet, as our ids spell it (ids.py)


def id_time(resource_id: str) -> float | None:
    """When the id (`j_…`, `m_…`: a prefix and a ULID) was made, in Unix seconds; None if it is no id."""
    _, _, ulid = resource_id.partition("_")
    if len(ulid) != 26:
        return None
    ms = 0
    for char in ulid[:10].lower():
        digit = _CROCKFORD.find(char)
        if digit < 0:
            return None
        ms = ms * 32 + digit
    return ms / 1000


def id_floor(prefix: str, when: float) -> str:
    """The smallest id with `prefix` made at `when`: ids made later sort after it."""
    ms, chars = max(0, int(when * 1000)), []
    for _ in range(10):
        ms, digit = divmod(ms, 32)
        chars.append(_CROCKFORD[digit])
    return f"{prefix}_{''.join(reversed(chars))}{'0' * 16}"


def retention_for(settings: Settings, tenant: str) -> float:
    """Seconds an ended job of `tenant` is kept (0: for ever)."""
    return settings.tenant_retention.get(tenant, settings.retention_seconds)


def media_retention_for(settings: Settings, tenant: str) -> float:
    """Seconds media of `tenant` that no live job names is kept after its upload (0: for ever)."""
    return settings.tenant_media_retention.get(tenant, settings.media_retention_seconds)


def expired(at: datetime | None, keep: float, now: float | None = None) -> bool:
    return keep > 0 and at is not None and at.timestamp() <= (time.time() if now is None else now) - keep


def media_ids(value: Any) -> set[str]:
    """Every media id a job names: its input's and its options' (compose timelines, logos)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "media_id" and isinstance(item, str):
                found.add(item)
            else:
                found |= media_ids(item)
    elif isinstance(value, list):
        for item in value:
            found |= media_ids(item)
    return found


def names_media(job: Job, media_id: str) -> bool:
    return media_id in media_ids(job.input) or media_id in media_ids(job.options)


# ---- jobs ----------------------------------------------------------------------------------------
async def family(store: JobStore, job: Job) -> list[Job]:
    """The job's children (as they are now), then the job itself."""
    return [*await store.get_many(job.children), job]


async def delete_job(
    dispatcher: Dispatcher, storage: Storage, job_id: str, tenant: str | None = None, wait: float = DELETE_WAIT_S
) -> list[str]:
    """Cancel the job (and so its children) unless it has ended, wait up to `wait` s for it to stop,
    then delete it and its children with their files. Returns the ids deleted. A job still running
    after the wait is deleted all the same: its worker's later writes find no record and fail, and
    files or events it leaves behind are orphans the sweeper removes."""
    store = dispatcher.store
    job = await store.get(job_id, tenant)
    if not job.terminal:
        with contextlib.suppress(Conflict):  # it ended meanwhile
            await dispatcher.cancel(job.id)
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(NotFound):  # deleted meanwhile: its family is what we saw
            job = await store.get(job.id)
        members = await family(store, job)
        if all(m.terminal for m in members) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    for member in members:
        await remove_job(store, storage, member, if_unchanged=False)
    return [m.id for m in members]


async def remove_job(store: JobStore, storage: Storage, job: Job, *, if_unchanged: bool = True) -> bool:
    """Delete one job's keys, then its files; with `if_unchanged`, only if its record is still `job`."""
    if not await store.delete(job, if_unchanged=if_unchanged):
        return False
    await SearchIndex(store).remove_job(job.id)  # after the record: a late index_transcript finds it gone
    await asyncio.to_thread(storage.delete_prefix, keys.job_files(job.id))
    # A caption parent's URL input is kept as media whose bytes are the parent's files: that record goes too.
    key, media_id = job.input.get("storage_key"), job.input.get("media_id")
    if isinstance(media_id, str) and isinstance(key, str) and key.startswith(keys.job_files(job.id) + "/"):
        await store.delete_media(media_id)
    return True


async def delete_batch(
    dispatcher: Dispatcher, storage: Storage, batch: Batch, wait: float = DELETE_WAIT_S
) -> list[str]:
    """Cancel the batch's live jobs, wait up to `wait` s in all for them to stop (one deadline for the
    whole batch, not one per job), delete every job it made with its files, then the batch record.
    Returns the job ids deleted."""
    await cancel_batch(dispatcher, batch)
    batches = BatchStore(dispatcher.redis)
    deadline = time.monotonic() + wait
    while any(not job.terminal for job in batch.jobs()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        await batches.with_jobs(batch)
    deleted: list[str] = []
    for job in batch.jobs():
        with contextlib.suppress(NotFound):  # deleted meanwhile
            deleted += await delete_job(dispatcher, storage, job.id, wait=0)
    await batches.delete(batch)
    return deleted


# ---- media ---------------------------------------------------------------------------------------
async def live_job_using(store: JobStore, media: Media, batch: int = 500) -> str | None:
    """A queued or running job of the media's tenant that names it, if any. Only jobs made after the
    media can name it, so the tenant index is read from the media's upload time on (ids sort by time)."""
    index = keys.tenant_index(media.tenant)
    lower = "[" + id_floor("j", media.created_at.timestamp() - CLOCK_SKEW_S)
    while True:
        found = await store.redis.zrangebylex(index, lower, "+", start=0, num=batch)
        if not found:
            return None
        ids = [i.decode() if isinstance(i, bytes) else i for i in found]
        for job in await store.get_many(ids):
            if job.state in LIVE and names_media(job, media.id):
                return job.id
        lower = "(" + ids[-1]


async def delete_media(store: JobStore, storage: Storage, media_id: str, tenant: str | None = None) -> Media:
    """Delete media and its upload; Conflict `media_in_use` (409) while a queued or running job names it."""
    media = await store.get_media(media_id, tenant)
    user = await live_job_using(store, media)
    if user is not None:
        raise Conflict(
            f"media {media_id} is used by job {user}, which has not ended; cancel it or wait for it to end",
            code="media_in_use",
            detail={"job_id": user},
        )
    await remove_media(store, storage, media)
    return media


async def remove_media(store: JobStore, storage: Storage, media: Media) -> bool:
    """Delete the media record, then its upload (media kept from a job's URL input has its bytes among
    that job's files, which go with the job). False: the record was gone already."""
    deleted = await store.delete_media(media.id)
    if media.key.startswith(keys.upload_prefix(media.id) + "/"):
        await asyncio.to_thread(storage.delete_prefix, keys.upload_prefix(media.id))
    return deleted
