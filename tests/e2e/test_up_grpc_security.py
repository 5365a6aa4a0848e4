"""`mediaflow up` keeps the workers' gRPC on loopback behind a token it makes for its children."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from up_support import UpProcess

from mediaflow.common.grpc import channel
from mediaflow.v1 import compositor_pb2, compositor_pb2_grpc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    up = UpProcess(tmp_path_factory.mktemp("up") / "data", workers="compositor").start()
    up.wait_for(r"compositor ready", 60)
    yield up
    up.stop()


async def capabilities(target: str, token: str) -> grpc.StatusCode:
    async with channel(target, token) as ch:
        try:
            await compositor_pb2_grpc.CompositorStub(ch).GetCapabilities(
                compositor_pb2.GetCapabilitiesRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_up_binds_loopback_with_a_token_the_gateway_sends(stack: UpProcess, media: Path) -> None:
    worker = stack.child("--queue compose")
    env = worker.environ()
    token, port = env["MEDIAFLOW_GRPC_TOKEN"], int(env["MEDIAFLOW_COMPOSITOR_GRPC_PORT"])
    assert env["MEDIAFLOW_GRPC_BIND_HOST"] == "127.0.0.1" and len(token) >= 32
    assert stack.child("mediaflow-api").environ()["MEDIAFLOW_GRPC_TOKEN"] == token
    sockets = [c for c in worker.net_connections("inet") if c.laddr.port == port and not c.raddr]
    assert {c.laddr.ip.removeprefix("::ffff:") for c in sockets} == {"127.0.0.1"}  # gRPC maps v4 into v6

    target = f"127.0.0.1:{port}"
    assert asyncio.run(capabilities(target, "")) == grpc.StatusCode.UNAUTHENTICATED
    assert asyncio.run(capabilities(target, "not-the-token")) == grpc.StatusCode.UNAUTHENTICATED
    assert asyncio.run(capabilities(target, token)) == grpc.StatusCode.OK

    # the gateway's upload probe reaches the compositor with the token
    with (media / "jfk.flac").open("rb") as fh:
        uploaded = httpx.post(f"{stack.url}/v1/media", headers=stack.headers(), files={"file": ("jfk.flac", fh)})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["probed_by"] == "compositor"
