"""Compose jobs through the real job system: Valkey, the ARQ worker, storage, ffmpeg."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from compositor_helpers import BBB, GRID, ffprobe, frame_at, make_pattern, stream
from job_support import in_process_worker, wait_state

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import Artifact, Job, JobState, JobType, Media
from mediaflow.common.runtime.arq_worker import MediaflowWorker
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.compositor.main import HANDLERS

SRT = (
    "1\n00:00:00,000 --> 00:00:02,000\nHello captions [0:v];movie='x'\n\n"
    "2\n00:00:02,000 --> 00:00:02,400\nsecond line\n"
)


def compositor(settings: Settings) -> contextlib.AbstractAsyncContextManager[MediaflowWorker]:
    return in_process_worker(settings, HANDLERS)


wait_for = wait_state


async def upload(dispatcher: Dispatcher, settings: Settings, path: Path, tenant: str = "default") -> str:
    media_id = "m_" + new_job_id()[-10:]
    key = f"media/{media_id}/{path.name}"
    open_storage(settings.storage_url).put_file(key, path)
    await dispatcher.store.put_media(Media(id=media_id, tenant=tenant, filename=path.name, key=key))
    return media_id


async def finished_transcription(dispatcher: Dispatcher, settings: Settings, srt: str) -> str:
    """A succeeded transcribe job record with a captions.srt artifact (what the transcriber leaves)."""
    job_id = new_job_id()
    storage = open_storage(settings.storage_url)
    with storage.writer(f"jobs/{job_id}/captions.srt") as out:
        out.write(srt.encode())
    job = Job(
        id=job_id,
        type=JobType.transcribe,
        state=JobState.succeeded,
        queue="mediaflow:queue:transcribe",
        artifacts=[Artifact(name="captions.srt", size=len(srt), content_type="application/x-subrip")],
    )
    await dispatcher.store.redis.set(f"mediaflow:job:{job_id}", job.internal_json())
    return job_id


def ffmpeg_children() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(os.getpid()).children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "ffmpeg" in p.name()
    ]


def compose_job(options: dict, **fields) -> Job:
    return Job(id=new_job_id(), type=JobType.compose, queue=COMPOSE_QUEUE, options=options, **fields)


async def test_compose_job_with_uploaded_media_and_captions_both(redis, settings, tmp_path):
    dispatcher = Dispatcher(redis)
    still = await upload(dispatcher, settings, make_pattern(tmp_path / "still.png", "800x600"))
    clip = await upload(dispatcher, settings, GRID)
    captions = await finished_transcription(dispatcher, settings, SRT)
    job = compose_job(
        {
            "output": {"resolution": "1280x720", "fps": 25, "quality": "draft"},
            "items": [
                {"kind": "image", "media_id": still, "duration": 2.4},
                {"kind": "video", "media_id": clip, "trim": {"end": 1.0}},
            ],
            "captions": {"job_id": captions, "mode": "both"},
        }
    )
    await dispatcher.submit(job)
    async with compositor(settings):
        done = await wait_for(dispatcher, job.id, {JobState.succeeded, JobState.failed})
    assert done.state == JobState.succeeded, done.error
    assert {a.name for a in done.artifacts} == {"output.mp4", "ffmpeg.log"}
    assert done.result["encoder"] == "libx264" and "NVENC" in done.result["encoder_reason"]
    assert done.result["expected_duration"] == pytest.approx(3.4)
    storage = open_storage(settings.storage_url)
    out = storage.path(f"jobs/{job.id}/output.mp4")
    meta = ffprobe(out)
    sub = stream(meta, "subtitle")
    assert sub["codec_name"] == "mov_text"
    assert abs(float(stream(meta, "video")["duration"]) - 3.4) <= 1 / 25 + 1e-6
    # Burned in: on the still image, the caption band at 1.0 s (caption shown) differs from 2.2 s
    # (no caption), while the rest of the picture is identical.
    shown, gone = frame_at(out, 1.0).astype(int), frame_at(out, 2.2).astype(int)
    band = slice(560, 700)
    assert abs(shown[band] - gone[band]).mean() > 3
    assert abs(shown[:400] - gone[:400]).mean() < 2
    log = storage.path(f"jobs/{job.id}/ffmpeg.log").read_text()
    assert "-filter_complex" in log and "subtitles=" in log and "# exit 0" in log
    events = await dispatcher.store.events(job.id)
    progress = [d["progress"] for _, e, d in events if e == "progress"]
    assert len(progress) >= 2 and progress == sorted(progress)
    assert any(d.get("stage") == "render" for _, e, d in events if e == "progress")


async def test_missing_media_and_bad_captions_fail_with_codes(redis, settings):
    dispatcher = Dispatcher(redis)
    missing = compose_job({"items": [{"kind": "video", "media_id": "m_nope"}]})
    not_ready = compose_job(
        {"items": [{"kind": "video", "path": str(GRID)}], "captions": {"job_id": "j_nope", "mode": "burn"}}
    )
    await dispatcher.submit(missing)
    await dispatcher.submit(not_ready)
    async with compositor(settings):
        a = await wait_for(dispatcher, missing.id, {JobState.failed, JobState.succeeded})
        b = await wait_for(dispatcher, not_ready.id, {JobState.failed, JobState.succeeded})
    assert (a.state, a.error.code) == (JobState.failed, "media_not_found")
    assert (b.state, b.error.code) == (JobState.failed, "captions_not_found")


def _slow_options() -> dict:
    # 1080p "high" x264 of ~16 s of video: many seconds of work on 2 shared cores.
    return {
        "output": {"resolution": "1920x1080", "fps": 30, "quality": "high", "encoder": "x264"},
        "items": [{"kind": "video", "path": str(BBB)}, {"kind": "video", "path": str(GRID)}] * 3,
    }


async def test_cancel_mid_render_kills_ffmpeg_and_leaves_no_artifact(redis, settings):
    dispatcher = Dispatcher(redis)
    job = compose_job(_slow_options())
    await dispatcher.submit(job)
    async with compositor(settings):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = await dispatcher.store.get(job.id)
            if current.stage == "render" and current.progress > 0.05 and ffmpeg_children():
                break
            await asyncio.sleep(0.05)
        assert ffmpeg_children(), "ffmpeg never started"
        t0 = time.monotonic()
        await dispatcher.cancel(job.id)
        done = await wait_for(dispatcher, job.id, {JobState.cancelled, JobState.succeeded, JobState.failed}, 10)
        elapsed = time.monotonic() - t0
        assert done.state == JobState.cancelled
        await asyncio.sleep(0.1)
        assert ffmpeg_children() == []
    assert elapsed < 3
    assert not open_storage(settings.storage_url).exists(f"jobs/{job.id}/output.mp4")
    assert not list(Path(tempfile.gettempdir()).glob(f"mediaflow_compose_{job.id}_*"))


async def test_time_limit_kills_ffmpeg(redis, settings):
    dispatcher = Dispatcher(redis)
    limited = settings.model_copy(update={"compose_timeout": 2})
    job = compose_job(_slow_options())
    await dispatcher.submit(job)
    async with compositor(limited):
        done = await wait_for(dispatcher, job.id, {JobState.failed, JobState.succeeded}, 20)
        await asyncio.sleep(0.1)
        assert ffmpeg_children() == []
    assert (done.state, done.error.code) == (JobState.failed, "timeout")
    assert not open_storage(settings.storage_url).exists(f"jobs/{job.id}/output.mp4")
