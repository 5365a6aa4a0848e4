"""Workers and clients for bench/dispatch.py. Each no-op job records when it started.

  python bench/dispatch_workers.py worker mediaflow|arq|celery REDIS_URL [POLL]
  python bench/dispatch_workers.py client mediaflow|arq|celery REDIS_URL N BURST [GAP_S]
Celery runs in its own venv (see requirements-celery.txt).
"""

from __future__ import annotations

import sys
import time

STARTS = "bench:starts"  # list of "<job key> <start time>"


def mediaflow_worker(url: str) -> None:
    from redis.asyncio import Redis

    from mediaflow.common.jobs.keys import COMPOSE_QUEUE
    from mediaflow.common.jobs.model import JobType
    from mediaflow.common.runtime.bootstrap import run_worker
    from mediaflow.common.runtime.context import JobContext
    from mediaflow.common.settings import Settings

    redis = Redis.from_url(url)

    async def noop(ctx: JobContext) -> dict:
        await redis.rpush(STARTS, f"{ctx.job.id} {time.time()}")
        return {}

    settings = Settings(
        redis_url=url, storage_url="file:///tmp/mediaflow-bench-storage", poll_delay=0.5, progress_interval=10
    )
    run_worker(COMPOSE_QUEUE, {JobType.probe: noop}, settings, "bench")


def arq_worker(url: str, poll: float) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func
    from redis.asyncio import Redis

    redis = Redis.from_url(url)

    async def noop(ctx: dict, key: str) -> None:
        await redis.rpush(STARTS, f"{key} {time.time()}")

    Worker(
        functions=[func(noop, name="noop")],
        redis_settings=RedisSettings.from_dsn(url),
        poll_delay=poll,
        max_jobs=10,
        keep_result=0,
        queue_name="bench:arq",
    ).run()


def celery_app(url: str):
    from celery import Celery
    from redis import Redis

    app = Celery("bench", broker=url)
    app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
    redis = Redis.from_url(url)

    @app.task(name="noop")
    def noop(key: str) -> None:
        redis.rpush(STARTS, f"{key} {time.time()}")

    return app


def enqueuer(kind: str, url: str):
    """A function key -> None that enqueues one no-op job of `kind`."""
    if kind == "celery":
        app = celery_app(url)
        return lambda key: app.send_task("noop", args=[key])
    import asyncio

    from redis.asyncio import Redis

    loop = asyncio.new_event_loop()
    redis = Redis.from_url(url)
    if kind == "mediaflow":
        from mediaflow.common.jobs.dispatch import Dispatcher
        from mediaflow.common.jobs.keys import COMPOSE_QUEUE
        from mediaflow.common.jobs.model import Job, JobType

        dispatcher = Dispatcher(redis)
        return lambda key: loop.run_until_complete(
            dispatcher.submit(Job(id=key, type=JobType.probe, queue=COMPOSE_QUEUE))
        )
    from arq.connections import ArqRedis

    arq = ArqRedis(connection_pool=redis.connection_pool)
    return lambda key: loop.run_until_complete(arq.enqueue_job("noop", key, _job_id=key, _queue_name="bench:arq"))


def client(kind: str, url: str, n: int, burst: int, gap: float = 0.0) -> dict:
    """Sequential latency (enqueue -> handler start) of n jobs, then burst throughput. With `gap`,
    each job is sent that long after the previous one started, so the worker is idle when it comes."""
    import json
    import uuid

    from redis import Redis

    redis = Redis.from_url(url)
    enqueue = enqueuer(kind, url)
    tag = uuid.uuid4().hex[:6]

    def key(i: int, phase: str) -> str:
        return f"j_{phase}{tag}{i:06d}"

    latencies: list[float] = []
    for i in range(n + 20):  # the first 20 warm connections up and are not counted
        k = key(i, "s")
        t0 = time.time()
        enqueue(k)
        _, raw = redis.blpop([STARTS], timeout=30)
        got, started = raw.decode().split()
        assert got == k, (got, k)
        if i >= 20:
            latencies.append(float(started) - t0)
        time.sleep(gap)
    t0 = time.time()
    for i in range(burst):
        enqueue(key(i, "b"))
    last = t0
    for _ in range(burst):
        _, raw = redis.blpop([STARTS], timeout=60)
        last = float(raw.decode().split()[1])
    result = {"latencies": latencies, "burst": burst, "burst_seconds": last - t0}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    role, kind, url = sys.argv[1], sys.argv[2], sys.argv[3]
    if role == "client":
        client(kind, url, int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]) if len(sys.argv) > 6 else 0.0)
    elif kind == "mediaflow":
        mediaflow_worker(url)
    elif kind == "arq":
        arq_worker(url, float(sys.argv[4]))
    elif kind == "celery":
        celery_app(url).worker_main(
            [
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
