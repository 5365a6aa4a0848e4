"""gRPC `Compositor { Probe, GetCapabilities, Thumbnail }`, served from the worker process."""

from __future__ import annotations

import asyncio
import subprocess

import grpc

from mediaflow.common.errors import MediaflowError
from mediaflow.common.probe import probe_file
from mediaflow.common.settings import Settings
from mediaflow.common.storage import Storage, open_storage
from mediaflow.v1 import common_pb2, compositor_pb2, compositor_pb2_grpc

from .jobs import runtime

SERVICE_NAME = "mediaflow.v1.Compositor"
RESOLUTIONS = ["1280x720", "1920x1080", "3840x2160"]
_STATUS = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "object_not_found": grpc.StatusCode.NOT_FOUND,
    "unsupported_media": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_key": grpc.StatusCode.INVALID_ARGUMENT,
}


def media_info(info: dict) -> common_pb2.MediaInfo:
    streams = [
        common_pb2.MediaStream(
            index=s.get("index", 0),
            kind=s.get("kind", ""),
            codec=s.get("codec", ""),
            duration=float(s.get("duration") or 0),
            width=int(s.get("width") or 0),
            height=int(s.get("height") or 0),
            fps=float(s.get("fps") or 0),
            display_aspect_ratio=s.get("display_aspect_ratio", ""),
            sample_rate=int(s.get("sample_rate") or 0),
            channels=int(s.get("channels") or 0),
            channel_layout=s.get("channel_layout", ""),
        )
        for s in info["streams"]
    ]
    return common_pb2.MediaInfo(
        duration=float(info["duration"]), format=info["format"], size=int(info["size"]), streams=streams
    )


def thumbnail_jpeg(ffmpeg: str, path: str, at: float, width: int) -> bytes:
    # Arguments as a list (no shell) and a fixed filter: the path is an input, never graph text.
    # Square pixels first, so a 320x240 file flagged 16:9 gives a 16:9 thumbnail.
    cmd = [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-ss",
        f"{max(0.0, at):.3f}",
        "-i",
        path,
        "-frames:v",
        "1",
        "-vf",
        f"scale=iw*sar:ih,scale={width}:-2,setsar=1",
        "-f",
        "image2pipe",
        "-c:v",
        "mjpeg",
        "-q:v",
        "4",
        "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise MediaflowError(
            f"no frame at {at:.2f} s: {proc.stderr.decode(errors='replace')[-300:]}", code="unsupported_media"
        )
    return proc.stdout


class CompositorService(compositor_pb2_grpc.CompositorServicer):
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.settings = settings
        self.storage = storage or open_storage(settings.storage_url)

    async def _fail(self, context: grpc.aio.ServicerContext, exc: MediaflowError) -> None:
        await context.abort(_STATUS.get(exc.code, grpc.StatusCode.INVALID_ARGUMENT), f"{exc.code}: {exc.message}")

    async def Probe(self, request, context):
        try:

            def run() -> dict:
                with self.storage.local_path(request.media.storage_key) as path:
                    return probe_file(path)

            return media_info(await asyncio.to_thread(run))
        except MediaflowError as exc:
            await self._fail(context, exc)
        except ValueError as exc:  # an invalid storage key
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid_key: {exc}")

    async def GetCapabilities(self, request, context):
        rt = await asyncio.to_thread(runtime, self.settings.ffmpeg)
        return compositor_pb2.Capabilities(
            encoder=rt.encoder.name,
            encoder_reason=rt.encoder.reason,
            nvenc=rt.encoder.nvenc,
            ffmpeg_version=rt.ffmpeg_version,
            resolutions=RESOLUTIONS,
            libass=rt.libass,
        )

    async def Thumbnail(self, request, context):
        width = request.width or 320
        if not 16 <= width <= 3840:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid_width: width must be 16..3840")
        try:

            def run() -> bytes:
                with self.storage.local_path(request.media.storage_key) as path:
                    return thumbnail_jpeg(self.settings.ffmpeg, str(path), request.time, width)

            image = await asyncio.to_thread(run)
        except MediaflowError as exc:
            await self._fail(context, exc)
            return None
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid_key: {exc}")
        size = _jpeg_size(image)
        return compositor_pb2.ThumbnailResponse(image=image, content_type="image/jpeg", width=size[0], height=size[1])


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG's SOF marker (no image library needed)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return 0, 0


async def start(settings: Settings, port: int | None = None) -> tuple[grpc.aio.Server, int]:
    from mediaflow.common.grpc import start_server

    service = CompositorService(settings)
    return await start_server(
        settings.compositor_grpc_port if port is None else port,
        [(compositor_pb2_grpc.add_CompositorServicer_to_server, service, SERVICE_NAME)],
        host=settings.grpc_bind_host,
        token=settings.grpc_token,
        insecure=settings.grpc_insecure,
    )
