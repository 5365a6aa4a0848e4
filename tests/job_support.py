"""Helpers for tests that run real workers in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.runtime.arq_worker import MediaflowWorker, create_worker
from mediaflow.common.runtime.context import Handler
from mediaflow.common.settings import Settings
from mediaflow.common.workflows import WORKFLOWS


@contextlib.asynccontextmanager
async def in_process_worker(
    settings: Settings, handlers: dict[JobType, Handler], queue: str = COMPOSE_QUEUE
) -> AsyncIterator[MediaflowWorker]:
    """A real ARQ worker of `queue` running as a task until the block ends."""
    worker = create_worker(queue, handlers, settings, workflows=WORKFLOWS, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


async def wait_state(dispatcher: Dispatcher, job_id: str, states: set[JobState], timeout: float = 60) -> Job:
    """Poll the record until it reaches one of `states`."""
    deadline = time.monotonic() + timeout
    job = await dispatcher.store.get(job_id)
    while job.state not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached {sorted(states)}; it is {job.state}: {job}")
        await asyncio.sleep(0.05)
        job = await dispatcher.store.get(job_id)
    return job
