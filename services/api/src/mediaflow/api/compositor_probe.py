"""Media metadata from the compositor over gRPC `Compositor.Probe`, with the gateway's own PyAV probe
as the fallback when no compositor answers (one-machine mode without gRPC, a compositor restart)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from mediaflow.common.grpc import channel
from mediaflow.v1 import common_pb2, compositor_pb2, compositor_pb2_grpc

log = logging.getLogger("mediaflow.api.probe")

# A probe reads container headers; if the compositor needs longer than this it is in trouble and the
# local answer we already have is just as good.
PROBE_DEADLINE_S = 5.0


class CompositorProbe:
    def __init__(self, target: str, deadline: float, token: str) -> None:
        self.target = target
        self.token = token  # MEDIAFLOW_GRPC_TOKEN (Settings)
        self.deadline = min(deadline, PROBE_DEADLINE_S)
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> compositor_pb2_grpc.CompositorStub:
        if self._channel is None:
            self._channel = channel(self.target, self.token)
        return compositor_pb2_grpc.CompositorStub(self._channel)

    async def probe(self, storage_key: str) -> dict[str, Any] | None:
        """The compositor's view of the object at `storage_key`, or None when it cannot be asked."""
        request = compositor_pb2.ProbeRequest(media=common_pb2.MediaRef(storage_key=storage_key))
        try:
            info = await self._stub().Probe(request, timeout=self.deadline)
        except grpc.aio.AioRpcError as exc:
            log.info("compositor probe unavailable (%s): %s", exc.code().name, exc.details())
            return None
        data = MessageToDict(info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        data["size"] = int(data.get("size", 0))
        # proto3 has no "absent": drop the zero fields that do not apply to a stream's kind
        data["streams"] = [{k: v for k, v in s.items() if v or k == "index"} for s in data.get("streams", [])]
        return data

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
