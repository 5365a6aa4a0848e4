"""The job system end to end in one process: submit -> ARQ -> worker -> record, on a real Valkey."""

from __future__ import annotations

import asyncio
import shutil

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.runtime.arq_worker import create_worker
from mediaflow.common.storage import open_storage
from mediaflow.compositor import jobs as compositor_jobs


async def test_probe_job_runs_to_success(redis, settings, media):
    storage = open_storage(settings.storage_url)
    storage.put_file("media/m_test/jfk.flac", media / "jfk.flac")
    dispatcher = Dispatcher(redis)
    job = Job(id=new_job_id(), type=JobType.probe, queue=COMPOSE_QUEUE, input={"storage_key": "media/m_test/jfk.flac"})
    await dispatcher.submit(job)
    worker = create_worker(
        COMPOSE_QUEUE, {JobType.probe: compositor_jobs.probe}, settings, burst=True, handle_signals=False
    )
    await asyncio.wait_for(worker.async_run(), 30)
    await worker.close()
    done = await dispatcher.store.get(job.id)
    assert done.state == JobState.succeeded, done
    assert done.result["duration"] == 11.0
    assert done.attempt == 1
    events = await dispatcher.store.events(job.id)
    assert [d["state"] for _, e, d in events if e == "state"] == ["queued", "running", "succeeded"]
    shutil.rmtree(storage.root, ignore_errors=True)
