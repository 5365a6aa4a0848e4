"""The store's one write (a compare-and-set script) on a real Valkey: the record, its events, and the
other keys that change with it, in one atomic step."""

from __future__ import annotations

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.family import add_child, settle_cancelled_parent
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.jobs.store import JobStore, KeyChanges


def probe(**fields: object) -> Job:
    return Job(id=new_job_id(), type=JobType.probe, queue=keys.COMPOSE_QUEUE, input={"path": "/x"}, **fields)


async def test_the_write_that_ends_a_job_applies_its_key_changes(redis) -> None:
    job, _ = await Dispatcher(redis).submit(probe())
    await redis.set("mediaflow:test:scratch", "1")
    store = JobStore(redis)
    ended = await store.transition(
        job.id,
        JobState.failed,
        changes=KeyChanges(delete=("mediaflow:test:scratch",), leave=(job.queue,), join=(keys.ABORTS,)),
    )
    assert ended.state == JobState.failed and ended.finished_at is not None
    assert not await redis.exists("mediaflow:test:scratch")
    assert await redis.zscore(job.queue, job.id) is None
    assert await redis.zscore(keys.ABORTS, job.id) is not None
    assert await redis.zscore(keys.stats(job.queue, "failed"), job.id) is not None  # counted once, same write
    events = [name for _, name, _ in await store.events(job.id)]
    assert events == ["state", "state"]  # queued, failed
    await redis.zrem(keys.ABORTS, job.id)


async def test_a_stale_known_record_costs_a_retry_not_a_lost_update(redis) -> None:
    store = JobStore(redis)
    job, _ = await Dispatcher(redis).submit(probe())
    stale = await store.get(job.id)

    def half(j: Job) -> list:
        j.progress = 0.5
        return [("progress", {"progress": 0.5})]

    def note(j: Job) -> list:
        j.message = "seen"
        return []

    await store.update(job.id, half)
    written = await store.update(job.id, note, known=stale)
    assert written.progress == 0.5 and written.message == "seen"  # read again, nothing overwritten


async def test_a_cancelled_parent_settles_once_its_children_have_ended(redis) -> None:
    store, dispatcher = JobStore(redis), Dispatcher(redis)
    parent, _ = await dispatcher.submit(
        Job(
            id=new_job_id(), type=JobType.caption, queue=keys.COMPOSE_QUEUE, input={"path": "/x"}, state=JobState.queued
        )
    )
    await store.transition(parent.id, JobState.running)
    child = probe(parent_id=parent.id)
    await add_child(store, parent.id, child)
    await dispatcher.submit(child)
    await store.transition(parent.id, JobState.cancelling)
    await settle_cancelled_parent(store, parent.id)
    assert (await store.get(parent.id)).state == JobState.cancelling  # its child is still queued
    await dispatcher.cancel(child.id)  # a queued child ends at once, and settles its parent
    assert (await store.get(parent.id)).state == JobState.cancelled
