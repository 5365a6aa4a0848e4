"""The `caption` pipeline: a parent with two children (transcribe → compose), on a real Valkey, a
real compositor worker (in process) and a real transcriber worker (`mediaflow-transcriber`, in a
subprocess with the real Whisper model)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from compositor_helpers import GRID, JFK, ffprobe, stream
from job_support import in_process_worker, wait_state

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType, Media
from mediaflow.common.runtime.arq_worker import MediaflowWorker
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.compositor.main import HANDLERS

TERMINAL = {JobState.succeeded, JobState.failed, JobState.cancelled}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipeline_storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline-storage")


@pytest.fixture
def pipe_settings(redis_url, pipeline_storage, media) -> Settings:
    return Settings(
        redis_url=redis_url,
        storage_url=f"file://{pipeline_storage}",
        allowed_roots=[media],
        poll_delay=0.5,
        lease_seconds=5.0,
        job_completion_wait=5,
        progress_interval=0.1,
    )


@pytest.fixture(scope="module")
def transcriber(redis_url, pipeline_storage, media) -> Iterator[subprocess.Popen]:
    """`mediaflow-transcriber` as a separate process, as deployed."""
    env = {
        **os.environ,
        "MEDIAFLOW_REDIS_URL": redis_url,
        "MEDIAFLOW_STORAGE_URL": f"file://{pipeline_storage}",
        "MEDIAFLOW_ALLOWED_ROOTS": str(media),
        "MEDIAFLOW_DEVICE": "cpu",
        "MEDIAFLOW_POLL_DELAY": "0.5",
        "MEDIAFLOW_PROGRESS_INTERVAL": "0.2",
        "HF_HUB_OFFLINE": "1",
    }
    exe = Path(sys.executable).with_name("mediaflow-transcriber")
    log = pipeline_storage / "transcriber.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "--grpc-port", str(_free_port())],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def compositor(settings: Settings) -> contextlib.AbstractAsyncContextManager[MediaflowWorker]:
    return in_process_worker(settings, HANDLERS)


wait_for = wait_state


async def upload(dispatcher: Dispatcher, settings: Settings, path: Path) -> dict:
    media_id = "m_" + new_job_id()[-10:]
    key = f"media/{media_id}/{path.name}"
    open_storage(settings.storage_url).put_file(key, path)
    await dispatcher.store.put_media(Media(id=media_id, filename=path.name, key=key))
    return {"media_id": media_id, "storage_key": key}  # what the gateway puts in a job's input


def caption_job(inp: dict, mode: str = "both") -> Job:
    return Job(
        id=new_job_id(),
        type=JobType.caption,
        queue=COMPOSE_QUEUE,
        input=inp,
        options={
            "mode": mode,
            "output": {"resolution": "1280x720", "fps": 25, "quality": "draft"},
            "transcribe": {"language": "en", "summary": False},
        },
    )


async def test_cancel_parent_cancels_queued_child_and_finishes(redis, pipe_settings):
    """No transcriber running: the transcribe child waits in its queue; cancelling the parent
    cancels it and the (detached) parent ends cancelled, not stuck in cancelling."""
    dispatcher = Dispatcher(redis)
    parent = caption_job(await upload(dispatcher, pipe_settings, GRID))
    await dispatcher.submit(parent)
    async with compositor(pipe_settings) as worker:
        running = await wait_for(dispatcher, parent.id, {JobState.running, *TERMINAL}, 20)
        deadline = time.monotonic() + 10
        while not running.children and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            running = await dispatcher.store.get(parent.id)
        assert running.state == JobState.running and len(running.children) == 1
        # The compose slot is free again while the transcription waits.
        await asyncio.sleep(0.3)
        assert worker.job_counter == 0
        child = await dispatcher.store.get(running.children[0])
        assert (child.type, child.parent_id, child.queue) == (JobType.transcribe, parent.id, TRANSCRIBE_QUEUE)
        assert child.input["storage_key"].startswith("media/")
        await dispatcher.cancel(parent.id)
    done = await dispatcher.store.get(parent.id)
    child = await dispatcher.store.get(running.children[0])
    assert (done.state, child.state) == (JobState.cancelled, JobState.cancelled)
    assert await redis.zscore(TRANSCRIBE_QUEUE, child.id) is None


async def test_cancelling_the_queued_child_settles_the_parent(redis, pipe_settings):
    dispatcher = Dispatcher(redis)
    parent = caption_job({"path": str(GRID)})
    await dispatcher.submit(parent)
    async with compositor(pipe_settings):
        deadline = time.monotonic() + 20
        current = await dispatcher.store.get(parent.id)
        while not current.children and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            current = await dispatcher.store.get(parent.id)
        await dispatcher.cancel(current.children[0])
    assert (await dispatcher.store.get(parent.id)).state == JobState.cancelled


async def test_caption_pipeline_end_to_end(redis, pipe_settings, transcriber):
    dispatcher = Dispatcher(redis)
    parent = caption_job(await upload(dispatcher, pipe_settings, GRID), mode="both")
    await dispatcher.submit(parent)
    async with compositor(pipe_settings):
        done = await wait_for(dispatcher, parent.id, TERMINAL, 240)
    assert done.state == JobState.succeeded, (
        done.error,
        (pipe_settings and Path(pipe_settings.storage_url[7:]) / "transcriber.log").read_text()[-2000:],
    )
    transcribe_id, compose_id = done.children
    t, c = await dispatcher.store.get(transcribe_id), await dispatcher.store.get(compose_id)
    assert (t.type, t.state, t.parent_id) == (JobType.transcribe, JobState.succeeded, parent.id)
    assert (c.type, c.state, c.parent_id) == (JobType.compose, JobState.succeeded, parent.id)
    assert c.options["captions"] == {**c.options["captions"], "job_id": transcribe_id, "mode": "both"}
    assert {"output.mp4", "ffmpeg.log", "captions.srt"} <= {a.name for a in done.artifacts}
    assert done.result["compose_job_id"] == compose_id and done.result["encoder"] == "libx264"
    assert done.result["metrics"]["covered_speech_seconds"] > 0  # the transcribe step's speech coverage
    out = open_storage(pipe_settings.storage_url).path(f"jobs/{parent.id}/output.mp4")
    meta = ffprobe(out)
    assert stream(meta, "subtitle")["codec_name"] == "mov_text"
    assert (stream(meta, "video")["width"], stream(meta, "video")["height"]) == (1280, 720)
    srt = open_storage(pipe_settings.storage_url).path(f"jobs/{parent.id}/captions.srt").read_text().lower()
    assert "now" in srt  # tiny.en hears "bin blue at f two now" roughly ("bimblu f2 now.")
    # Progress rolled up on the parent: rises through both steps to 1.
    events = await dispatcher.store.events(parent.id, count=1000)
    values = [d["progress"] for _, e, d in events if e in ("progress", "state")]
    assert values[-1] == 1.0 and values == sorted(values)
    assert any(0.39 <= v <= 0.41 for v in values)  # transcription done = 40 %
    assert [d["state"] for _, e, d in events if e == "state"] == ["queued", "running", "succeeded"]


async def test_failed_compose_step_fails_the_parent_with_its_code(redis, pipe_settings, transcriber):
    """Audio-only media: transcription works, composing has no picture → the parent fails with the
    compose child's code."""
    dispatcher = Dispatcher(redis)
    parent = caption_job({"path": str(JFK)}, mode="burn")
    await dispatcher.submit(parent)
    async with compositor(pipe_settings):
        done = await wait_for(dispatcher, parent.id, TERMINAL, 240)
    assert done.state == JobState.failed
    assert done.error.code == "no_video_stream" and done.children[1] in done.error.message
