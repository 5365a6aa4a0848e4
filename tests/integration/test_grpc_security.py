"""Service-to-service security over real gRPC sockets: the bind host, the shared bearer token
(MEDIAFLOW_GRPC_TOKEN) on the workers' servers, the gateway's clients sending it, and the refusal to
serve a reachable interface without one."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from compositor_helpers import JFK
from gateway_support import ALICE, running_gateway
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mediaflow.api.compositor_probe import CompositorProbe
from mediaflow.common.grpc import InsecureGrpcBind, channel, check_bind, is_loopback, start_server
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.compositor import grpc_server
from mediaflow.compositor.grpc_server import SERVICE_NAME as COMPOSITOR
from mediaflow.v1 import common_pb2, compositor_pb2, compositor_pb2_grpc, transcriber_pb2, transcriber_pb2_grpc

TOKEN = "s3cret-token-for-tests"
KEY = "media/m_jfk/jfk.flac"


@contextlib.asynccontextmanager
async def compositor(settings: Settings, **security: object) -> AsyncIterator[str]:
    """The real Compositor service, started the way the worker process starts it (grpc_server.start)."""
    open_storage(settings.storage_url).put_file(KEY, JFK)
    server, port = await grpc_server.start(settings.model_copy(update=security), port=0)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def probe(target: str, token: str = "", metadata: tuple[tuple[str, str], ...] = ()) -> common_pb2.MediaInfo:
    async with channel(target, token) as ch:
        request = compositor_pb2.ProbeRequest(media=common_pb2.MediaRef(storage_key=KEY))
        return await compositor_pb2_grpc.CompositorStub(ch).Probe(request, timeout=10, metadata=metadata)


async def status_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_calls_need_the_right_token(settings: Settings) -> None:
    async with compositor(settings, grpc_token=TOKEN) as target:
        assert await status_of(probe(target)) == grpc.StatusCode.UNAUTHENTICATED  # no token
        assert await status_of(probe(target, "wrong-token")) == grpc.StatusCode.UNAUTHENTICATED
        assert await status_of(probe(target, TOKEN[:-1])) == grpc.StatusCode.UNAUTHENTICATED  # a prefix
        not_bearer = (("authorization", TOKEN),)  # the scheme is part of it
        assert await status_of(probe(target, metadata=not_bearer)) == grpc.StatusCode.UNAUTHENTICATED

        info = await probe(target, TOKEN)
        assert abs(info.duration - 11.0) < 0.05
        assert (await probe(target, metadata=(("authorization", f"Bearer {TOKEN}"),))).duration == info.duration

        async with channel(target) as ch:
            # health stays open: kubelet's gRPC probes send no metadata
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("", COMPOSITOR):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # an unknown method is refused like a known one: nothing to learn without the token
            unknown = ch.unary_unary("/mediaflow.v1.Nothing/Here")(b"", timeout=5)
            assert await status_of(unknown) == grpc.StatusCode.UNAUTHENTICATED
            # reflection (a stream-stream call) needs the token too
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([request]), timeout=5)
            assert await status_of(stream.read()) == grpc.StatusCode.UNAUTHENTICATED

        async with channel(target, TOKEN) as ch:
            stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([request]), timeout=5)
            services = {s.name for s in (await stream.read()).list_services_response.service}
            assert COMPOSITOR in services


async def test_the_gateway_probe_sends_the_token(settings: Settings) -> None:
    async with compositor(settings, grpc_token=TOKEN) as target:
        right = CompositorProbe(target, 5, token=TOKEN)
        wrong = CompositorProbe(target, 5, token="wrong-token")
        try:
            assert (await right.probe(KEY) or {}).get("duration") == pytest.approx(11.0, abs=0.05)
            assert await wrong.probe(KEY) is None  # refused: the gateway keeps its own probe
        finally:
            await right.close()
            await wrong.close()


class FakeTranscriber(transcriber_pb2_grpc.TranscriberServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Transcribe(self, request: object, context: object) -> transcriber_pb2.TranscribeResponse:
        self.calls += 1
        return transcriber_pb2.TranscribeResponse(language="en", duration=11.0, text="ask not", model="fake")


async def test_the_openai_route_sends_the_token(settings: Settings, media: Path) -> None:
    fake = FakeTranscriber()
    entry = (transcriber_pb2_grpc.add_TranscriberServicer_to_server, fake, "mediaflow.v1.Transcriber")
    server, port = await start_server(0, [entry], host="127.0.0.1", token=TOKEN)
    try:
        for token, expected in ((TOKEN, 200), ("wrong-token", 502), ("", 502)):
            gateway = settings.model_copy(update={"transcriber_grpc": f"127.0.0.1:{port}", "grpc_token": token})
            async with running_gateway(gateway) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
                with open(media / "jfk.flac", "rb") as fh:
                    reply = await client.post(
                        "/v1/audio/transcriptions",
                        headers=ALICE,
                        files={"file": ("jfk.flac", fh, "audio/flac")},
                        data={"model": "whisper-1", "response_format": "text"},
                    )
            assert reply.status_code == expected, reply.text
        assert reply.json()["code"] == "transcriber_error" and "unauthenticated" in reply.json()["detail"]
        assert fake.calls == 1  # the refused calls never reached the servicer
    finally:
        await server.stop(None)


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return True
    return False


async def test_the_bind_host_is_honoured(settings: Settings) -> None:
    # 127.0.0.2 is loopback on Linux: a server bound there is not on 127.0.0.1
    async with compositor(settings, grpc_bind_host="127.0.0.2") as target:
        port = int(target.rsplit(":", 1)[1])
        assert _refused("127.0.0.1", port)
        info = await probe(f"127.0.0.2:{port}")  # loopback without a token: allowed
        assert info.duration > 10
    # every interface, with a token: reachable on loopback too, and still authenticated
    async with compositor(settings, grpc_bind_host="0.0.0.0", grpc_token=TOKEN) as target:
        assert (await probe(target, TOKEN)).duration > 10
        assert await status_of(probe(target)) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_reachable_interface_needs_a_token_or_the_opt_out(settings: Settings) -> None:
    for host in ("[::]", "0.0.0.0", "", "10.1.2.3", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(InsecureGrpcBind, match="MEDIAFLOW_GRPC_TOKEN"):
            check_bind(host, "")
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_bind(host, "")

    with pytest.raises(InsecureGrpcBind):
        async with compositor(settings, grpc_bind_host="0.0.0.0"):
            pass
    async with compositor(settings, grpc_bind_host="0.0.0.0", grpc_insecure=True) as target:
        assert (await probe(target)).duration > 10  # the explicit opt-out: no token asked


@pytest.mark.parametrize("command", ["mediaflow-compositor", "mediaflow-transcriber"])
def test_a_worker_refuses_to_start_exposed_without_a_token(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAFLOW_")}
    env.update({"MEDIAFLOW_GRPC_BIND_HOST": "[::]", "MEDIAFLOW_REDIS_URL": "redis://127.0.0.1:1/0"})
    proc = subprocess.run(
        [str(Path(sys.executable).parent / command)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert f"{command}: refusing to serve gRPC on [::]" in proc.stderr
    assert "MEDIAFLOW_GRPC_TOKEN" in proc.stderr and "MEDIAFLOW_GRPC_INSECURE=true" in proc.stderr
