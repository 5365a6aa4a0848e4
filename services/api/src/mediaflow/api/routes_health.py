"""Liveness, readiness (Redis and storage reachable) and Prometheus metrics.

Readiness is about this gateway only: it never looks at the workers, so a pool that is down does not
take the gateways out of the load balancer (it shows in GET /v1/status and mediaflow_queue_stalled)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediaflow.common.jobs import keys

from .problems import problem
from .routes_status import queue_problems
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


async def _headroom(svc: Services) -> tuple[str, str]:
    """Below the watermarks (Redis memory, free disk): a full gateway stops taking traffic first."""
    try:
        why = await asyncio.wait_for(svc.pressure.memory(), CHECK_TIMEOUT_S) or svc.pressure.disk()
    except Exception as exc:
        return "headroom", f"{type(exc).__name__}: {exc}"
    return "headroom", why or "ok"


@router.get(
    "/readyz",
    summary="Readiness: Redis and storage are reachable, with room left (503 problem otherwise)",
    responses={503: {"description": "not ready (problem details with `checks`)"}},
)
async def readyz(svc: Services = Depends(services)) -> Response:
    results = dict(
        await asyncio.gather(
            _check("redis", svc.redis.ping()),
            _check("storage", asyncio.to_thread(svc.storage.ping)),
            _headroom(svc),
        )
    )
    if all(v == "ok" for v in results.values()):
        return JSONResponse({"status": "ready", "checks": results})
    failing = ", ".join(k for k, v in results.items() if v != "ok")
    return problem(
        503,
        "not_ready",
        f"not ready: {failing} failing",
        instance="/readyz",
        checks=results,
        headers={"Retry-After": "5"},
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, svc: Services = Depends(services)) -> Response:
    try:
        await queue_problems(svc, svc.settings)  # refreshes the queue gauges, stalled included
    except Exception as exc:
        log.warning("queue gauges not refreshed: %s", exc)
    try:
        for name, value in (await svc.redis.hgetall(keys.SWEEPER)).items():  # type: ignore[misc]  # sync|async type
            svc.metrics.sweeper.labels(name.decode()).set(float(value))
    except Exception as exc:
        log.warning("sweeper gauges not refreshed: %s", exc)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
