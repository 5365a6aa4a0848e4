"""`mediaflow-compositor`: the compositor pool's worker process (ARQ worker + gRPC server)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from mediaflow.common.grpc import InsecureGrpcBind, check_bind
from mediaflow.common.jobs.keys import COMPOSE_HEAVY_QUEUE, COMPOSE_QUEUE
from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.bootstrap import run_worker
from mediaflow.common.settings import Settings, get_settings
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.common.workflows.caption import run_caption

from . import grpc_server, jobs

log = logging.getLogger("mediaflow.compositor")

HANDLERS = {JobType.probe: jobs.probe, JobType.compose: jobs.compose, JobType.caption: run_caption}


def lifecycle(settings: Settings, grpc_port: int | None = None):
    """on_startup/on_shutdown of the worker: pick the encoder (one-frame NVENC test) and serve gRPC."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        rt = await asyncio.to_thread(jobs.runtime, settings.ffmpeg)
        log.info("encoder %s (%s)", rt.encoder.name, rt.encoder.reason)
        worker = ctx.get("worker")
        if worker is not None:
            worker.info.update({"encoder": rt.encoder.name, "encoder_reason": rt.encoder.reason})
        if grpc_port is None or grpc_port >= 0:
            server, port = await grpc_server.start(settings, grpc_port)
            ctx["grpc_server"] = server
            log.info("gRPC Compositor on port %d", port)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        server = ctx.get("grpc_server")
        if server is not None:
            await server.stop(grace=2)

    return on_startup, on_shutdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mediaflow-compositor")
    parser.add_argument(
        "--queue", default="compose", choices=["compose", "compose-heavy"], help="which pool this worker serves"
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="gRPC port (default MEDIAFLOW_COMPOSITOR_GRPC_PORT; -1 = no gRPC server)",
    )
    args = parser.parse_args(argv)
    queue = COMPOSE_HEAVY_QUEUE if args.queue == "compose-heavy" else COMPOSE_QUEUE
    settings = get_settings()
    if args.grpc_port is None or args.grpc_port >= 0:
        try:  # a refused bind is a configuration error: say so before anything starts
            check_bind(settings.grpc_bind_host, settings.grpc_token, settings.grpc_insecure)
        except InsecureGrpcBind as exc:
            sys.exit(f"mediaflow-compositor: {exc}")
    on_startup, on_shutdown = lifecycle(settings, args.grpc_port)
    run_worker(
        queue,
        HANDLERS,
        settings,
        "mediaflow-compositor",
        workflows=WORKFLOWS,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


if __name__ == "__main__":
    main()
