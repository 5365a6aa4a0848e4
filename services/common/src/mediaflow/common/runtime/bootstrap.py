"""Starting a worker process: logging, tracing, the event loop, then the worker until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..jobs.model import JobType
from ..settings import Settings
from ..telemetry import setup_logging, setup_tracing
from .arq_worker import create_worker
from .context import Handler


def run_worker(
    queue: str, handlers: dict[JobType, Handler], settings: Settings, service_name: str, **kwargs: Any
) -> None:
    """Run a worker until SIGTERM/SIGINT (which drain; see arq_worker.py). `service_name` names the
    process in traces unless OTEL_SERVICE_NAME does."""
    setup_logging(settings.log_level)  # every line carries trace_id, job_id and tenant
    setup_tracing(service_name, settings)
    with contextlib.suppress(ImportError):  # uvloop: less per-job overhead in the event loop
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    create_worker(queue, handlers, settings, **kwargs).run()
