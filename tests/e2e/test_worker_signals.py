"""Real worker processes (`mediaflow-compositor`) killed and stopped mid-job, on a real Valkey.

- SIGKILL mid-job: the job's lease (MEDIAFLOW_LEASE_SECONDS) runs out, the next worker runs it again
  and it completes exactly once (one `succeeded` event, attempt 2, nothing left in its storage folder).
- SIGTERM mid-job with a long drain: the job completes before the worker exits.
- SIGTERM mid-job with a short drain: the job is requeued without using up a try, and completes on
  the next worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from up_support import BIN, clean_env, free_port

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.jobs.store import JobStore
from mediaflow.common.storage import open_storage

LEASE_SECONDS = 3


@pytest.fixture
async def workers(redis_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts compositor worker processes (own process groups); kills any left at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(job_completion_wait: int = 10) -> subprocess.Popen[bytes]:
        env = clean_env(
            MEDIAFLOW_REDIS_URL=redis_url,
            MEDIAFLOW_STORAGE_URL=f"file://{tmp_path / 'storage'}",
            MEDIAFLOW_LEASE_SECONDS=str(LEASE_SECONDS),
            MEDIAFLOW_JOB_COMPLETION_WAIT=str(job_completion_wait),
            MEDIAFLOW_PROGRESS_INTERVAL="0.1",
            MEDIAFLOW_TEST_HOOKS="true",
            MEDIAFLOW_COMPOSITOR_GRPC_PORT=str(free_port()),
        )
        log = (tmp_path / f"worker-{len(started)}.log").open("wb")
        proc = subprocess.Popen(
            [str(BIN / "mediaflow-compositor"), "--queue", "compose"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
async def probe_job(redis, tmp_path: Path, media: Path) -> Callable[[float], asyncio.Future]:
    storage = open_storage(f"file://{tmp_path / 'storage'}")
    dispatcher = Dispatcher(redis)

    async def submit(hold_seconds: float) -> Job:
        key = f"media/m_signals/hold-{hold_seconds:g}s.flac"  # the workers hold it that long (test hooks)
        if not storage.exists(key):
            storage.put_file(key, media / "jfk.flac")
        job = Job(id=new_job_id(), type=JobType.probe, queue=COMPOSE_QUEUE, input={"storage_key": key})
        await dispatcher.submit(job)
        return job

    return submit


async def wait_for(store: JobStore, job_id: str, predicate: Callable[[Job], bool], timeout: float, what: str) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await store.get(job_id)
        if predicate(job):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; job is {job.state} (attempt {job.attempt})")


async def state_events(store: JobStore, job_id: str) -> list[dict]:
    return [data for _id, name, data in await store.events(job_id, count=10_000) if name == "state"]


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


def job_files(tmp_path: Path, job_id: str) -> list[Path]:
    folder = tmp_path / "storage" / "jobs" / job_id
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


async def test_sigkill_mid_job_completes_exactly_once_after_restart(redis, workers, probe_job, tmp_path):
    store = JobStore(redis)
    first = workers()
    job = await probe_job(5.0)
    running = await wait_for(
        store,
        job.id,
        lambda j: j.state == JobState.running and j.stage == "hold",
        30,
        "the job to run on the first worker",
    )
    assert running.attempt == 1 and str(first.pid) in (running.worker or "")
    os.killpg(first.pid, signal.SIGKILL)
    assert await wait_exit(first, 10) == -signal.SIGKILL

    killed_at = time.monotonic()
    second = workers()
    done = await wait_for(store, job.id, lambda j: j.terminal, LEASE_SECONDS + 5 + 30, "the job to finish")
    assert done.state == JobState.succeeded, done.error
    assert done.attempt == 2
    assert str(second.pid) in (done.worker or "")
    assert done.result["duration"] == pytest.approx(11.0, abs=0.05)
    # Picked up again only once the lease ran out, not after the hours of a job timeout.
    assert time.monotonic() - killed_at < LEASE_SECONDS + 5 + 15
    states = [e["state"] for e in await state_events(store, job.id)]
    assert states.count("succeeded") == 1
    assert states == ["queued", "running", "running", "succeeded"]
    logs = [d["message"] for _i, n, d in await store.events(job.id, count=10_000) if n == "log"]
    assert any("was lost" in m for m in logs)
    assert job_files(tmp_path, job.id) == []  # no half or duplicate artifacts

    # The job never runs a third time: a later check still finds it succeeded once.
    await asyncio.sleep(LEASE_SECONDS + 1)
    assert (await store.get(job.id)).attempt == 2
    assert [e["state"] for e in await state_events(store, job.id)].count("succeeded") == 1


async def test_sigterm_mid_job_drains_and_completes(redis, workers, probe_job):
    store = JobStore(redis)
    worker = workers(job_completion_wait=20)
    job = await probe_job(3.0)
    await wait_for(store, job.id, lambda j: j.state == JobState.running and j.stage == "hold", 30, "running")
    os.killpg(worker.pid, signal.SIGTERM)
    assert await wait_exit(worker, 30) == 0
    done = await store.get(job.id)
    assert done.state == JobState.succeeded and done.attempt == 1
    assert [e["state"] for e in await state_events(store, job.id)] == ["queued", "running", "succeeded"]


async def test_sigterm_with_short_drain_requeues_without_using_a_try(redis, workers, probe_job):
    store = JobStore(redis)
    worker = workers(job_completion_wait=1)
    job = await probe_job(6.0)
    await wait_for(store, job.id, lambda j: j.state == JobState.running and j.stage == "hold", 30, "running")
    os.killpg(worker.pid, signal.SIGTERM)
    assert await wait_exit(worker, 30) == 0

    requeued = await store.get(job.id)
    assert requeued.state == JobState.queued
    assert requeued.attempt == 0  # the interrupted attempt does not count
    last = (await state_events(store, job.id))[-1]
    assert last["state"] == "queued" and last["message"] == "requeued: worker shut down"

    workers(job_completion_wait=10)
    done = await wait_for(store, job.id, lambda j: j.terminal, 40, "the requeued job to finish")
    assert done.state == JobState.succeeded and done.attempt == 1
    states = [e["state"] for e in await state_events(store, job.id)]
    assert states == ["queued", "running", "queued", "running", "succeeded"]


async def test_random_sigkills_over_a_hundred_jobs_leave_none_stuck(redis, workers, probe_job, tmp_path):
    """Workers are SIGKILLed at random while 100 jobs run: every job ends, none is stuck, and none
    succeeds twice (a job killed on each of its tries ends failed with max_attempts_exceeded)."""
    import random

    store = JobStore(redis)
    pool = [workers() for _ in range(3)]
    jobs = [await probe_job(0.3) for _ in range(100)]
    rng, kills = random.Random(7), 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ended = [j for j in await store.get_many([job.id for job in jobs]) if j.terminal]
        if len(ended) == len(jobs):
            break
        if kills < 12:  # a kill every ~1.5 s, then let the pool drain the rest
            victim = pool.pop(rng.randrange(len(pool)))
            os.killpg(victim.pid, signal.SIGKILL)
            await wait_exit(victim, 10)
            kills += 1
            pool.append(workers())
        await asyncio.sleep(1.5)
    final = await store.get_many([job.id for job in jobs])
    stuck = [(j.id, j.state.value, j.attempt) for j in final if not j.terminal]
    assert not stuck, f"{len(stuck)} jobs never ended: {stuck[:5]}"
    for job in final:
        states = [e["state"] for e in await state_events(store, job.id)]
        assert states.count("succeeded") + states.count("failed") == 1, (job.id, states)
        if job.state == JobState.failed:
            assert job.error is not None and job.error.code == "max_attempts_exceeded"
        else:
            assert job.state == JobState.succeeded and job.result["duration"] == pytest.approx(11.0, abs=0.05)
    assert kills >= 10
    assert sum(j.state == JobState.succeeded for j in final) >= 90
