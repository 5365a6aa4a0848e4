"""`mediaflow-api`: the gateway under uvicorn."""

from __future__ import annotations

import argparse
import gc

import uvicorn
from fastapi import FastAPI

from mediaflow.common.settings import get_settings
from mediaflow.common.telemetry import setup_logging

from .app import create_app


def app_factory() -> FastAPI:
    """The app of one server process (uvicorn calls this in every worker process)."""
    app = create_app()
    # Everything loaded so far lives for the whole process: keep it out of the GC's generations, so
    # collections stay short and do not show up as latency spikes.
    gc.collect()
    gc.freeze()
    return app


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="mediaflow-api", description="the mediaflow gateway (REST + SSE + web page)")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.api_workers,
        help="server processes sharing the port (in Kubernetes, prefer more replicas)",
    )
    parser.add_argument("--log-level", default=settings.log_level.lower())
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log every request (off by default: it costs throughput, /metrics counts them)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)  # every line carries trace_id, job_id, tenant
    uvicorn.run(
        "mediaflow.api.server:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        proxy_headers=True,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
