"""`GET /v1/queues`: what waits, runs and finished recently on each queue, and who works on it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends

from mediaflow.common.jobs.keys import ALL_QUEUES
from mediaflow.common.jobs.keys import WORKERS as WORKERS_KEY
from mediaflow.common.jobs.keys import deferred as deferred_key
from mediaflow.common.jobs.keys import stats as stats_key
from mediaflow.common.jobs.queues import OLDEST_WAITING_SCRIPT, oldest_waiting_args
from mediaflow.common.jobs.store import STATS_WINDOW_S

from .auth import require_tenant
from .problems import problem_responses
from .schemas import QueuesResponse
from .services import Services, services

router = APIRouter(prefix="/v1/queues", tags=["queues"])

# Workers write their registry entry every second (runtime/arq_worker.py heart_beat); silence for longer than
# this means the worker is gone. Entries far older than that are removed.
LIVE_HEARTBEAT_S = 30.0
FORGET_AFTER_S = 3600.0


# The registry entry's own fields; everything else a worker puts there (encoder, compute_type,
# grpc_port, ...) is passed through under `info`.
_ENTRY_FIELDS = {"id", "queue", "host", "pid", "heartbeat", "jobs", "draining", "model", "device", "metrics_url"}
# The throughput sparkline: jobs ended per minute over this many minutes (within STATS_WINDOW_S).
THROUGHPUT_MINUTES = 30


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _worker(worker_id: bytes, entry: dict[str, Any], age: float) -> dict[str, Any]:
    return {
        "id": entry.get("id", worker_id.decode()),
        "queue": entry["queue"],
        "host": entry.get("host", ""),
        "pid": int(entry.get("pid", 0)),
        "model": _optional_str(entry.get("model")),
        "device": _optional_str(entry.get("device")),
        "metrics_url": _optional_str(entry.get("metrics_url")),
        "heartbeat_age_s": round(max(age, 0.0), 3),
        "jobs": list(entry.get("jobs", [])),
        "draining": bool(entry.get("draining", False)),
        "info": {k: v for k, v in entry.items() if k not in _ENTRY_FIELDS},
    }


async def queue_snapshot(svc: Services) -> dict[str, Any]:
    """One Redis round trip: ready/deferred counts of every queue, recent outcomes, worker registry.

    Besides `queues` and `window_s` (the body of GET /v1/queues) it returns `seen`, per queue what
    /v1/status needs (routes_status.py): the time of the last heartbeat of a worker that takes jobs,
    the last heartbeats of workers that vanished without deregistering, and when the job that has
    waited longest (due, and no worker holds its lease) became ready (jobs/queues.py, OLDEST_WAITING_SCRIPT)."""
    now = time.time()
    now_ms = int(now * 1000)
    oldest_waiting = svc.redis.register_script(OLDEST_WAITING_SCRIPT)  # (no round trip: EVALSHA in the pipeline)
    oldest_args = oldest_waiting_args(now_ms, svc.settings.priority_aging_seconds)
    async with svc.redis.pipeline(transaction=False) as pipe:
        for queue in ALL_QUEUES:
            # Ready entries score at most now, whatever their priority (a boost only moves a score into
            # the past); only deferred ones (a retry's backoff) score later (jobs/queues.py).
            pipe.zcount(queue, "-inf", now_ms)
            pipe.zcount(queue, f"({now_ms}", "+inf")
            pipe.zcount(stats_key(queue, "succeeded"), now - STATS_WINDOW_S, "+inf")
            pipe.zcount(stats_key(queue, "failed"), now - STATS_WINDOW_S, "+inf")
            # when the job that waits longest became ready: boosts and not yet promoted retries undone
            await oldest_waiting(keys=[queue, deferred_key(queue)], args=oldest_args, client=pipe)  # queued
        pipe.hgetall(WORKERS_KEY)
        replies = await pipe.execute()
    registry: dict[bytes, bytes] = replies[-1]

    workers_by_queue: dict[str, list[dict[str, Any]]] = {q: [] for q in ALL_QUEUES}
    seen: dict[str, dict[str, Any]] = {
        q: {"last_heartbeat": None, "vanished": [], "oldest_waiting": None} for q in ALL_QUEUES
    }
    forgotten: list[bytes] = []
    for worker_id, raw in registry.items():
        try:
            entry = json.loads(raw)
            heartbeat = float(entry["heartbeat"])
            age = now - heartbeat
        except (ValueError, KeyError, TypeError):
            forgotten.append(worker_id)
            continue
        if age > FORGET_AFTER_S:
            forgotten.append(worker_id)
        queue = entry.get("queue")
        if queue not in workers_by_queue:
            continue
        if not entry.get("draining"):
            last = seen[queue]["last_heartbeat"]
            seen[queue]["last_heartbeat"] = heartbeat if last is None else max(last, heartbeat)
        if age > LIVE_HEARTBEAT_S:
            # A worker that stops cleanly removes its entry: one left behind died (killed, OOM, crash).
            if not entry.get("draining"):
                seen[queue]["vanished"].append(heartbeat)
            continue
        workers_by_queue[queue].append(_worker(worker_id, entry, age))
    if forgotten:
        await svc.redis.hdel(WORKERS_KEY, *forgotten)

    # The registry is refreshed once a second; a job it names that has already left the queue's
    # sorted set (ARQ removes it when the job finishes) is not running any more.
    held = [(q, job_id) for q, ws in workers_by_queue.items() for w in ws for job_id in w["jobs"]]
    still_queued: set[str] = set()
    if held:
        async with svc.redis.pipeline(transaction=False) as pipe:
            for q, job_id in held:
                pipe.zscore(q, job_id)
            scores = await pipe.execute()
        still_queued = {
            job_id for (_q, job_id), score in zip(held, scores, strict=True) if score is not None and score <= now_ms
        }
    for ws in workers_by_queue.values():
        for w in ws:
            w["jobs"] = [j for j in w["jobs"] if j in still_queued]

    queues = []
    for i, queue in enumerate(ALL_QUEUES):
        ready, deferred, succeeded, failed, oldest = replies[5 * i : 5 * i + 5]
        workers = sorted(workers_by_queue[queue], key=lambda w: w["id"])
        if oldest is not None:
            seen[queue]["oldest_waiting"] = oldest / 1000
        # ARQ keeps a running job in the queue's sorted set until it finishes: what live workers
        # hold (and is still on the queue) is running, the rest of the ready entries are waiting.
        running = sum(len(w["jobs"]) for w in workers)
        svc.metrics.queue_ready.labels(queue).set(max(0, ready - running))
        svc.metrics.queue_deferred.labels(queue).set(deferred)
        svc.metrics.queue_running.labels(queue).set(running)
        svc.metrics.workers.labels(queue).set(len(workers))
        svc.metrics.jobs_finished.labels(queue, "succeeded").set(succeeded)
        svc.metrics.jobs_finished.labels(queue, "failed").set(failed)
        queues.append(
            {
                "name": queue,
                "queued": max(0, ready - running),
                "running": running,
                "deferred": deferred,
                "succeeded": succeeded,
                "failed": failed,
                "workers": workers,
            }
        )
    return {"queues": queues, "window_s": STATS_WINDOW_S, "seen": seen, "now": now}


async def throughput(svc: Services, now: float) -> dict[str, list[dict[str, Any]]]:
    """Per queue, jobs that succeeded and failed in each of the last THROUGHPUT_MINUTES whole minutes
    (the current one last, still filling), counted in the stats sets the job store keeps anyway: one
    member per ended job, scored by its end time. ZCOUNTs are O(log n), so busy queues cost the same."""
    first = (int(now) // 60 - THROUGHPUT_MINUTES + 1) * 60
    minutes = [first + 60 * m for m in range(THROUGHPUT_MINUTES)]
    async with svc.redis.pipeline(transaction=False) as pipe:
        for queue in ALL_QUEUES:
            for outcome in ("succeeded", "failed"):
                for start in minutes:
                    pipe.zcount(stats_key(queue, outcome), start, f"({start + 60}")
        counts = iter(await pipe.execute())
    series: dict[str, list[dict[str, Any]]] = {}
    for queue in ALL_QUEUES:
        succeeded = [next(counts) for _ in minutes]
        failed = [next(counts) for _ in minutes]
        series[queue] = [
            {"minute": datetime.fromtimestamp(start, UTC), "succeeded": s, "failed": f}
            for start, s, f in zip(minutes, succeeded, failed, strict=True)
        ]
    return series


@router.get(
    "",
    response_model=QueuesResponse,
    responses=problem_responses(401, 503),
    summary="Per queue: queued, running, deferred, recent succeeded/failed, live workers",
)
async def get_queues(tenant: str = Depends(require_tenant), svc: Services = Depends(services)) -> dict[str, Any]:
    snapshot = await queue_snapshot(svc)
    series = await throughput(svc, snapshot["now"])
    del snapshot["seen"], snapshot["now"]
    # Counts are global, but a tenant only learns the ids of its own jobs.
    held = [job_id for q in snapshot["queues"] for w in q["workers"] for job_id in w["jobs"]]
    own = {job.id for job in await svc.store.get_many(held) if job.tenant == tenant} if held else set()
    for q in snapshot["queues"]:
        q["throughput"] = series[q["name"]]
        for w in q["workers"]:
            w["busy"] = len(w["jobs"])
            w["jobs"] = [j for j in w["jobs"] if j in own]
    return snapshot
