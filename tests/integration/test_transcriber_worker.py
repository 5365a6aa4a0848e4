"""The transcriber worker for real: queue job -> artifacts, cancel between batches, and the gRPC
Transcriber (plus health and reflection) over a real socket, all sharing one loaded model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mediaflow.common.grpc import channel, start_server
from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.runtime.arq_worker import create_worker
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.transcriber import jobs
from mediaflow.transcriber.grpc_service import ERROR_CODE_KEY, service_entry
from mediaflow.transcriber.main import lifecycle
from mediaflow.transcriber.model import get_models
from mediaflow.v1 import transcriber_pb2, transcriber_pb2_grpc


@pytest.fixture(scope="session")
def models():
    return get_models(Settings())


async def test_transcribe_job_writes_all_artifacts(redis, settings, media, models):
    storage = open_storage(settings.storage_url)
    storage.put_file("media/m_t/sonnet.mp3", media / "sonnet001_librivox.mp3")
    dispatcher = Dispatcher(redis)
    job = Job(
        id=new_job_id(),
        type=JobType.transcribe,
        queue=TRANSCRIBE_QUEUE,
        input={"storage_key": "media/m_t/sonnet.mp3"},
        options={"captions": {"max_chars_per_line": 32, "speaker_labels": False}},
    )
    await dispatcher.submit(job)
    on_startup, on_shutdown = lifecycle(settings, grpc_port=0)
    worker = create_worker(
        TRANSCRIBE_QUEUE,
        {JobType.transcribe: jobs.transcribe},
        settings,
        workflows=WORKFLOWS,
        burst=True,
        handle_signals=False,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    await asyncio.wait_for(worker.async_run(), 300)
    assert worker.info["model"] == "model" or worker.info["model"]
    assert worker.info["device"] == "cpu" and worker.info["compute_type"] == "int8"
    await worker.close()
    done = await dispatcher.store.get(job.id)
    assert done.state == JobState.succeeded, done.error
    names = {a.name for a in done.artifacts}
    assert names == {
        "captions.srt",
        "captions.vtt",
        "captions.scc",
        "captions.ass",
        "transcript.json",
        "transcript.txt",
    }
    assert done.result["language"] == "en" and done.result["word_count"] > 90
    metrics = done.result["metrics"]  # the coverage guard's account of the 53 s reading
    assert 40 < metrics["speech_seconds"] < 55
    assert metrics["covered_speech_seconds"] >= 0.95 * metrics["speech_seconds"]
    assert metrics["redecoded_windows"] >= 0
    data = json.loads(storage.open(f"jobs/{job.id}/transcript.json").read())
    assert data["language"] == "en" and data["segments"][0]["words"][0]["start"] >= 0
    assert data["analytics"]["summary"] and data["analytics"]["keywords"]
    srt_text = storage.open(f"jobs/{job.id}/captions.srt").read().decode()
    assert "fairest creatures" in srt_text.replace("\n", " ")
    events = await dispatcher.store.events(job.id)
    progress = [d["progress"] for _, e, d in events if e == "progress"]
    assert progress and progress == sorted(progress)
    assert {d.get("stage") for _, e, d in events if e == "progress"} >= {"transcribing", "captions"}


async def test_failed_job_has_error_code(redis, settings, media, models, tmp_path):
    storage = open_storage(settings.storage_url)
    video_only = tmp_path / "video.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10",
            "-t",
            "1",
            str(video_only),
        ],
        check=True,
    )
    storage.put_file("media/m_v/video.mp4", video_only)
    dispatcher = Dispatcher(redis)
    job = Job(
        id=new_job_id(), type=JobType.transcribe, queue=TRANSCRIBE_QUEUE, input={"storage_key": "media/m_v/video.mp4"}
    )
    await dispatcher.submit(job)
    worker = create_worker(
        TRANSCRIBE_QUEUE,
        {JobType.transcribe: jobs.transcribe},
        settings,
        workflows=WORKFLOWS,
        burst=True,
        handle_signals=False,
    )
    await asyncio.wait_for(worker.async_run(), 120)
    await worker.close()
    done = await dispatcher.store.get(job.id)
    assert done.state == JobState.failed and done.error.code == "no_audio_stream"


async def test_cancel_is_honoured_between_batches(redis, settings, media, models, tmp_path):
    long_audio = tmp_path / "long.flac"  # ~4.5 minutes of read speech
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "4",
            "-i",
            str(media / "sonnet001_librivox.mp3"),
            "-ac",
            "1",
            "-ar",
            "16000",
            str(long_audio),
        ],
        check=True,
    )
    storage = open_storage(settings.storage_url)
    storage.put_file("media/m_l/long.flac", long_audio)
    dispatcher = Dispatcher(redis)
    job = Job(
        id=new_job_id(),
        type=JobType.transcribe,
        queue=TRANSCRIBE_QUEUE,
        input={"storage_key": "media/m_l/long.flac"},
        options={"formats": ["srt"]},
    )
    await dispatcher.submit(job)
    worker = create_worker(
        TRANSCRIBE_QUEUE,
        {JobType.transcribe: jobs.transcribe},
        settings.model_copy(update={"poll_delay": 0.05}),
        handle_signals=False,
    )
    task = asyncio.create_task(worker.async_run())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            current = await dispatcher.store.get(job.id)
            if current.state == JobState.running and current.progress > 0.05:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the job never made progress")
        asked = time.monotonic()
        await dispatcher.cancel(job.id)
        while (await dispatcher.store.get(job.id)).state != JobState.cancelled:
            assert time.monotonic() - asked < 30, "cancel took longer than 30 s"
            await asyncio.sleep(0.05)
        latency = time.monotonic() - asked
        print(f"cancel latency: {latency:.2f} s")
        assert latency < 15  # one batch of 8 x 30 s chunks at most, on a loaded 2-core machine
        # the device is free again: the model serves the next caller at once
        assert models.device_lock.acquire(timeout=5)
        models.device_lock.release()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()


async def test_grpc_transcriber_over_a_socket(settings, media, models):
    storage = open_storage(settings.storage_url)
    server, port = await start_server(0, [service_entry(models, storage)], host="127.0.0.1")
    try:
        async with channel(f"127.0.0.1:{port}") as ch:
            stub = transcriber_pb2_grpc.TranscriberStub(ch)
            info = await stub.GetInfo(transcriber_pb2.GetInfoRequest(), timeout=10)
            assert info.device == "cpu" and info.compute_type == "int8" and not info.multilingual
            assert info.vad == "silero" and info.alignment == "whisper"
            reply = await stub.Transcribe(
                transcriber_pb2.TranscribeRequest(audio=(media / "jfk.flac").read_bytes(), word_timestamps=True),
                timeout=60,
            )
            assert "ask not what your country can do for you" in reply.text.lower()
            assert reply.language == "en" and abs(reply.duration - 11.0) < 0.05
            words = [w for s in reply.segments for w in s.words]
            assert len(words) >= 20 and all(0 <= w.start <= w.end <= 11.0 for w in words)

            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Transcribe(
                    transcriber_pb2.TranscribeRequest(audio=(media / "jfk.flac").read_bytes(), language="xx"),
                    timeout=30,
                )
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert dict(bad.value.trailing_metadata())[ERROR_CODE_KEY] == "unsupported_language"

            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="mediaflow.v1.Transcriber"), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            responses = reflection.ServerReflectionInfo(iter([request]))
            names = {s.name async for r in responses for s in r.list_services_response.service}
            assert "mediaflow.v1.Transcriber" in names
    finally:
        await server.stop(None)


async def test_path_input_under_allowed_root_and_outside(redis, settings, media, models, tmp_path):
    dispatcher = Dispatcher(redis)
    inside = Job(
        id=new_job_id(),
        type=JobType.transcribe,
        queue=TRANSCRIBE_QUEUE,
        input={"path": str(media / "jfk.flac")},
        options={"formats": ["txt"]},
    )
    outside_file = tmp_path / "elsewhere.flac"
    outside_file.write_bytes((media / "jfk.flac").read_bytes())
    outside = Job(
        id=new_job_id(),
        type=JobType.transcribe,
        queue=TRANSCRIBE_QUEUE,
        input={"path": str(outside_file)},
        options={"formats": ["txt"]},
    )
    await dispatcher.submit(inside)
    await dispatcher.submit(outside)
    worker = create_worker(
        TRANSCRIBE_QUEUE,
        {JobType.transcribe: jobs.transcribe},
        settings,
        workflows=WORKFLOWS,
        burst=True,
        handle_signals=False,
    )
    await asyncio.wait_for(worker.async_run(), 120)
    await worker.close()
    ok, refused = await dispatcher.store.get(inside.id), await dispatcher.store.get(outside.id)
    assert ok.state == JobState.succeeded and [a.name for a in ok.artifacts] == ["transcript.txt"]
    assert refused.state == JobState.failed and refused.error.code == "path_not_allowed"
