"""`GET /v1/status`: is the service doing its work? `ok`, or `degraded` with the problems found.

`/readyz` answers for this gateway alone (Redis and storage reachable, room left): a load balancer must
not take a gateway out of rotation because a worker pool is down. This route looks at the whole
service, from what Redis holds:

- `queue_stalled` (per queue): jobs are waiting and no worker of the queue has sent a heartbeat for
  MEDIAFLOW_STALL_SECONDS (default 20) while they waited. Workers write their registry entry (the
  hash `mediaflow:workers`) about once a second, so a working pool never gets near that.
- `worker_crashing` (per queue): at least MEDIAFLOW_CRASH_THRESHOLD (default 2) crashes in the last
  MEDIAFLOW_CRASH_WINDOW_SECONDS (default 900). A crash is a worker lost under a job or a worker gone
  without saying so: each attempt of a job that failed `max_attempts_exceeded` (its worker was lost
  on every attempt), each job that failed `interrupted`, and each registry entry whose heartbeat
  stopped in the window without the worker removing it (a clean stop removes it).
- `redis_unavailable`, `storage_unavailable`, `no_headroom`: the gateway's own dependencies, as
  `/readyz` sees them.

The answer is 200 whenever the gateway can answer; alert on `status`, or on the gauges
`mediaflow_queue_stalled{queue}` and `mediaflow_worker_crashes_recent{queue}` of `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends

from mediaflow.common.jobs.keys import ALL_QUEUES
from mediaflow.common.jobs.keys import stats as stats_key
from mediaflow.common.settings import Settings

from .auth import require_tenant
from .problems import problem_responses
from .routes_queues import queue_snapshot
from .schemas import StatusResponse
from .services import Services, services

log = logging.getLogger("mediaflow.api.status")
router = APIRouter(prefix="/v1/status", tags=["queues"])

CHECK_TIMEOUT_S = 2.0
CRASH_CODES = ("max_attempts_exceeded", "interrupted")
CRASHED_JOBS_READ = 100  # failed jobs read per queue and call (the newest first)


def short(queue: str) -> str:
    return queue.rsplit(":", 1)[-1]


async def _crashed_jobs(svc: Services, now: float, window: float) -> dict[str, int]:
    """Per queue: worker losses seen in jobs that failed in the window (see the module's doc)."""
    async with svc.redis.pipeline(transaction=False) as pipe:
        for queue in ALL_QUEUES:
            pipe.zrevrangebyscore(stats_key(queue, "failed"), "+inf", now - window, start=0, num=CRASHED_JOBS_READ)
        replies = await pipe.execute()
    ids = [member.decode() for reply in replies for member in reply]
    counts = dict.fromkeys(ALL_QUEUES, 0)
    for job in await svc.store.get_many(ids):
        code = job.error.code if job.error else None
        if job.queue in counts and code in CRASH_CODES:
            counts[job.queue] += max(job.attempt, 1) if code == "max_attempts_exceeded" else 1
    return counts


async def queue_problems(svc: Services, config: Settings) -> list[dict[str, Any]]:
    """The queues' problems, from one snapshot; also refreshes every queue gauge of /metrics."""
    snapshot = await queue_snapshot(svc)
    now: float = snapshot["now"]
    crashed = await _crashed_jobs(svc, now, config.crash_window_seconds)
    problems: list[dict[str, Any]] = []
    for q in snapshot["queues"]:
        queue = q["name"]
        seen = snapshot["seen"][queue]
        stalled_for = 0.0
        if q["queued"] > 0 and seen["oldest_waiting"] is not None:
            # Stalled since the later of: the oldest waiting job became ready, a worker was last heard of.
            since = max(seen["oldest_waiting"], seen["last_heartbeat"] or 0.0)
            stalled_for = max(0.0, now - since)
        stalled = stalled_for >= config.stall_seconds
        svc.metrics.queue_stalled.labels(queue).set(int(stalled))
        if stalled:
            heard = seen["last_heartbeat"]
            who = "no worker has ever registered" if heard is None else f"no worker heard from for {now - heard:.0f} s"
            problems.append(
                {
                    "code": "queue_stalled",
                    "queue": queue,
                    "message": f"{q['queued']} job(s) waiting on {short(queue)} for {stalled_for:.0f} s and {who}: "
                    f"start a {short(queue)} worker",
                    "since_s": round(stalled_for, 1),
                }
            )
        vanished = sum(1 for heartbeat in seen["vanished"] if now - heartbeat <= config.crash_window_seconds)
        crashes = crashed[queue] + vanished
        svc.metrics.worker_crashes.labels(queue).set(crashes)
        if crashes >= config.crash_threshold:
            minutes = config.crash_window_seconds / 60
            problems.append(
                {
                    "code": "worker_crashing",
                    "queue": queue,
                    "message": f"{short(queue)} workers crashed {crashes} time(s) in the last {minutes:g} min "
                    f"({crashed[queue]} lost under jobs, {vanished} gone without deregistering): "
                    "see the workers' logs (OOM kills, restarts)",
                    "count": crashes,
                }
            )
    return problems


async def _dependency(code: str, what: str, probe: Any) -> dict[str, Any] | None:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:
        return {"code": code, "message": f"{what}: {type(exc).__name__}: {exc}"}
    return None


async def service_status(svc: Services, config: Settings) -> dict[str, Any]:
    redis, storage = await asyncio.gather(
        _dependency("redis_unavailable", "Redis is unreachable", svc.redis.ping()),
        _dependency("storage_unavailable", "storage is unreachable", asyncio.to_thread(svc.storage.ping)),
    )
    problems = [p for p in (redis, storage) if p is not None]
    if redis is None:
        try:
            problems += await asyncio.wait_for(queue_problems(svc, config), CHECK_TIMEOUT_S * 2)
            full = await asyncio.wait_for(svc.pressure.memory(), CHECK_TIMEOUT_S) or svc.pressure.disk()
        except Exception as exc:
            problems.append(
                {"code": "redis_unavailable", "message": f"reading the queues: {type(exc).__name__}: {exc}"}
            )
        else:
            if full:
                problems.append({"code": "no_headroom", "message": full})
    for p in problems:
        log.debug("status problem: %s", p)
    return {"status": "degraded" if problems else "ok", "problems": problems}


@router.get(
    "",
    response_model=StatusResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401),
    summary="ok, or degraded with the problems: stalled queues, crashing workers, Redis/storage failing",
)
async def get_status(
    _tenant: str = Depends(require_tenant),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return await service_status(svc, svc.settings)
