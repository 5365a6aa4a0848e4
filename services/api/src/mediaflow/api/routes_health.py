"""Liveness, readiness (Redis and storage reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .problems import problem
from .routes_queues import queue_snapshot
from .services import Services, services

log = logging.getLogger("mediaflow.api.health")
router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:
        return name, f"{type(exc).__name__}: {exc}"
    return name, "ok"


@router.get(
    "/readyz",
    summary="Readiness: Redis and storage are reachable (503 problem otherwise)",
    responses={503: {"description": "not ready (problem details with `checks`)"}},
)
async def readyz(svc: Services = Depends(services)) -> Response:
    results = dict(
        await asyncio.gather(
            _check("redis", svc.redis.ping()),
            _check("storage", asyncio.to_thread(svc.storage.ping)),
        )
    )
    if all(v == "ok" for v in results.values()):
        return JSONResponse({"status": "ready", "checks": results})
    failing = ", ".join(k for k, v in results.items() if v != "ok")
    return problem(503, "not_ready", f"not ready: {failing} unreachable", instance="/readyz", checks=results)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(svc: Services = Depends(services)) -> Response:
    try:
        await queue_snapshot(svc)  # refreshes the queue gauges
    except Exception as exc:
        log.warning("queue gauges not refreshed: %s", exc)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
