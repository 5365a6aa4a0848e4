"""`mediaflow-transcriber`: the transcriber pool's worker process.

One process = one loaded model, an ARQ worker on `mediaflow:queue:transcribe` and the gRPC
`Transcriber` server (same event loop), both using the model under one device lock.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

# (offline env vars are set by the package __init__, before anything imports huggingface_hub/pyannote)
from mediaflow.common import metrics
from mediaflow.common.grpc import InsecureGrpcBind, check_bind, start_server
from mediaflow.common.jobs.keys import TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.bootstrap import run_worker
from mediaflow.common.settings import Settings, get_settings
from mediaflow.common.workflows import WORKFLOWS

from . import jobs, speakers
from .diarize import diarization_models
from .grpc_service import service_entry
from .model import OFFLINE_DIARIZATION, get_models

log = logging.getLogger("mediaflow.transcriber")


def lifecycle(settings: Settings, grpc_port: int | None = None) -> tuple[Any, Any]:
    """on_startup/on_shutdown hooks: load the model, start and stop the gRPC server."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        worker = ctx["worker"]
        began = time.monotonic()
        models = await asyncio.to_thread(get_models, settings)
        info = models.info
        if info.diarization_backend == OFFLINE_DIARIZATION:  # loaded once here, never per job
            await asyncio.to_thread(diarization_models)
        metrics.MODEL_LOAD.labels(info.model, info.device).set(time.monotonic() - began)
        worker.info = {
            "model": info.model,
            "device": info.device,
            "compute_type": info.compute_type,
            "diarization": info.diarization_backend,
        }
        port = settings.transcriber_grpc_port if grpc_port is None else grpc_port
        server, bound = await start_server(
            port,
            [service_entry(models, worker.storage)],
            host=settings.grpc_bind_host,
            token=settings.grpc_token,
            insecure=settings.grpc_insecure,
        )
        ctx["grpc_server"], ctx["grpc_port"] = server, bound
        worker.info["grpc_port"] = bound
        log.info("gRPC Transcriber on port %s", bound)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        server = ctx.get("grpc_server")
        if server is not None:
            await server.stop(grace=5)

    return on_startup, on_shutdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mediaflow-transcriber")
    parser.add_argument("--grpc-port", type=int, default=None, help="override MEDIAFLOW_TRANSCRIBER_GRPC_PORT")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:  # before the model loads: a refused bind is a configuration error, said at once
        check_bind(settings.grpc_bind_host, settings.grpc_token, settings.grpc_insecure)
    except InsecureGrpcBind as exc:
        sys.exit(f"mediaflow-transcriber: {exc}")
    on_startup, on_shutdown = lifecycle(settings, args.grpc_port)
    run_worker(
        TRANSCRIBE_QUEUE,
        {JobType.transcribe: jobs.transcribe, JobType.enroll: speakers.enroll, JobType.relabel: speakers.relabel},
        settings,
        "mediaflow-transcriber",
        workflows=WORKFLOWS,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


if __name__ == "__main__":
    main()
