"""The gateway application: `create_app(settings)` builds a FastAPI app with every route, problem
details for every error, API-key auth, metrics and tracing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from mediaflow.common.settings import Settings, get_settings
from mediaflow.common.telemetry import setup_tracing

from . import (
    routes_batches,
    routes_health,
    routes_jobs,
    routes_media,
    routes_openai,
    routes_queues,
    routes_search,
    routes_speakers,
    routes_status,
    sse,
)
from .guard import GuardMiddleware
from .metrics import MetricsMiddleware
from .openapi import install_openapi
from .problems import install_problem_handlers
from .services import Services

WEB_DIR = Path(__file__).parent / "web"

DESCRIPTION = """
Self-hosted transcripts, captions and finished videos.

Authenticate with `Authorization: Bearer <api key>`. Every error is an RFC 9457 problem
(`application/problem+json`) with a stable `code`; see docs/api.md for the table of codes.
"""


def create_app(settings: Settings | None = None, *, sse_ping: float = 15.0, instrument: bool | None = None) -> FastAPI:
    """`instrument`: trace HTTP requests (OpenTelemetry). None = when a tracer provider is installed
    (OTEL_EXPORTER_OTLP_ENDPOINT set, or a test installed one with setup_tracing before this call):
    the instrumentation costs about a third of a submit's CPU, for spans nobody would receive."""
    settings = settings or get_settings()
    svc = Services.build(settings)
    svc.sse_ping = sse_ping

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await svc.close()

    app = FastAPI(title="mediaflow", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.services = svc
    install_problem_handlers(app)
    install_openapi(app, settings)
    for module in (
        routes_media,
        routes_jobs,
        routes_batches,
        sse,
        routes_queues,
        routes_search,
        routes_speakers,
        routes_status,
        routes_openai,
        routes_health,
    ):
        app.include_router(module.router)

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.add_middleware(
        GuardMiddleware,
        keyring=lambda: svc.keyring,
        max_json_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)
    provider = setup_tracing("mediaflow-api", settings)
    if instrument or (instrument is None and provider is not None):
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return app
