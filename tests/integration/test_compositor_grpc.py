"""gRPC Compositor over a real socket, started the way the worker process starts it."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from compositor_helpers import BBB, JFK
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mediaflow.common.grpc import channel
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.runtime.arq_worker import create_worker
from mediaflow.common.storage import open_storage
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.compositor.main import HANDLERS, lifecycle
from mediaflow.v1 import common_pb2, compositor_pb2, compositor_pb2_grpc


@pytest.fixture
async def compositor_port(settings):
    """A compositor worker (ARQ + gRPC on a free port, via on_startup) on a real Valkey."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = open_storage(settings.storage_url)
    storage.put_file("media/m_bbb/bbb.mp4", BBB)
    storage.put_file("media/m_jfk/jfk.flac", JFK)
    on_startup, on_shutdown = lifecycle(settings, port)
    worker = create_worker(
        COMPOSE_QUEUE,
        HANDLERS,
        settings,
        workflows=WORKFLOWS,
        handle_signals=False,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    task = asyncio.create_task(worker.async_run())
    for _ in range(200):
        await asyncio.sleep(0.05)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
    try:
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


async def test_probe_capabilities_thumbnail_health_reflection(compositor_port):
    async with channel(f"127.0.0.1:{compositor_port}") as ch:
        stub = compositor_pb2_grpc.CompositorStub(ch)

        def ref(key: str) -> compositor_pb2.ProbeRequest:
            return compositor_pb2.ProbeRequest(media=common_pb2.MediaRef(storage_key=key))

        info = await stub.Probe(ref("media/m_bbb/bbb.mp4"), timeout=10)
        video = next(s for s in info.streams if s.kind == "video")
        audio = next(s for s in info.streams if s.kind == "audio")
        assert (video.width, video.height, video.display_aspect_ratio) == (320, 240, "16:9")
        assert (audio.channels, audio.sample_rate) == (6, 48000)
        assert info.duration == pytest.approx(5.31, abs=0.05) and info.format.startswith("mov")

        flac = await stub.Probe(ref("media/m_jfk/jfk.flac"), timeout=10)
        assert [s.kind for s in flac.streams] == ["audio"] and flac.duration == pytest.approx(11.0)

        caps = await stub.GetCapabilities(compositor_pb2.GetCapabilitiesRequest(), timeout=10)
        assert caps.encoder == "libx264" and not caps.nvenc and caps.libass
        assert "NVENC" in caps.encoder_reason and caps.ffmpeg_version.startswith("ffmpeg version")
        assert "3840x2160" in caps.resolutions

        thumb = await stub.Thumbnail(
            compositor_pb2.ThumbnailRequest(
                media=common_pb2.MediaRef(storage_key="media/m_bbb/bbb.mp4"), time=1.0, width=320
            ),
            timeout=10,
        )
        assert thumb.image[:2] == b"\xff\xd8" and thumb.content_type == "image/jpeg"
        assert (thumb.width, thumb.height) == (320, 180)  # display aspect honoured

        for key, code in [
            ("media/m_none/x.mp4", grpc.StatusCode.NOT_FOUND),
            ("../../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Probe(compositor_pb2.ProbeRequest(media=common_pb2.MediaRef(storage_key=key)), timeout=10)
            assert err.value.code() == code, err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Thumbnail(
                compositor_pb2.ThumbnailRequest(
                    media=common_pb2.MediaRef(storage_key="media/m_jfk/jfk.flac"), time=1.0
                ),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        health = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="mediaflow.v1.Compositor"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        names: list[str] = []
        async for reply in refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
            names += [s.name for s in reply.list_services_response.service]
        assert "mediaflow.v1.Compositor" in names
