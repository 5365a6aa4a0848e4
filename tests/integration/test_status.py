"""`GET /v1/status` tells the truth about the service, on real Valkey and real HTTP: a transcribe job
waiting with no transcriber makes it `degraded` naming the queue, a transcriber coming back makes it
`ok` again, and `/readyz` (the gateway's own dependencies) stays 200 throughout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import pytest
from gateway_support import ALICE, cli, running_gateway, wait_terminal
from job_support import in_process_worker

from mediaflow.api.app import create_app
from mediaflow.common.errors import MediaflowError
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.keys import COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.arq_worker import MediaflowWorker
from mediaflow.common.runtime.context import Handler, JobContext
from mediaflow.common.settings import Settings

STALL_S = 3.0  # the test's MEDIAFLOW_STALL_SECONDS (the default is 20)


def running_worker(
    settings: Settings, queue: str, handlers: dict[JobType, Handler]
) -> contextlib.AbstractAsyncContextManager[MediaflowWorker]:
    return in_process_worker(settings, handlers, queue)


async def trivial_transcribe(ctx: JobContext) -> dict[str, Any]:
    with ctx.stage("transcribe"):
        await asyncio.sleep(0.05)
    return {"text": "ok"}


def stalled_gauge(metrics_text: str, queue: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("mediaflow_queue_stalled{") and f'queue="{queue}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no mediaflow_queue_stalled for {queue}")


def test_defaults_answer_within_30_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEDIAFLOW_STALL_SECONDS", "MEDIAFLOW_CRASH_WINDOW_SECONDS", "MEDIAFLOW_CRASH_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    config = Settings()
    # a stall shows after stall_seconds, plus at most one registry refresh (1 s) and one poll
    assert config.stall_seconds + 2 <= 30
    monkeypatch.setenv("MEDIAFLOW_STALL_SECONDS", "7")
    assert Settings().stall_seconds == 7


async def test_stalled_queue_is_degraded_until_a_worker_returns(
    redis, settings, media, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"stall_seconds": STALL_S})
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def status() -> dict[str, Any]:
            assert (await client.get("/readyz")).status_code == 200  # the workers never make it unready
            reply = await client.get("/v1/status", headers=ALICE)
            assert reply.status_code == 200, reply.text
            return reply.json()

        assert await status() == {"status": "ok", "problems": []}
        body = {"type": "transcribe", "input": {"path": str(media / "jfk.flac")}}
        reply = await client.post("/v1/jobs", json=body, headers=ALICE)
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["id"]
        submitted = time.monotonic()
        assert (await status())["status"] == "ok"  # waiting for less than the stall time is normal

        while True:
            report = await status()
            if report["status"] == "degraded":
                break
            assert time.monotonic() - submitted < 30, report
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - submitted
        assert STALL_S - 0.5 <= elapsed < 30
        [problem] = report["problems"]
        assert problem["code"] == "queue_stalled"
        assert problem["queue"] == TRANSCRIBE_QUEUE
        assert "transcribe" in problem["message"] and problem["since_s"] >= STALL_S
        metrics = (await client.get("/metrics")).text
        assert stalled_gauge(metrics, TRANSCRIBE_QUEUE) == 1
        code, output = await cli(url, "status")
        assert code == 1, output
        assert "degraded" in output and "queue_stalled (transcribe)" in output, output
        assert stalled_gauge(metrics, COMPOSE_QUEUE) == 0

        async with running_worker(settings, TRANSCRIBE_QUEUE, {JobType.transcribe: trivial_transcribe}):
            back = time.monotonic()
            while (report := await status())["status"] != "ok":
                assert time.monotonic() - back < 30, report
                await asyncio.sleep(0.2)
            job = await wait_terminal(client, job_id)
            assert job["state"] == "succeeded", job
            assert stalled_gauge((await client.get("/metrics")).text, TRANSCRIBE_QUEUE) == 0

            # /v1/queues lists the live worker with what its registry entry says
            queues = (await client.get("/v1/queues", headers=ALICE)).json()
            [transcribe] = [q for q in queues["queues"] if q["name"] == TRANSCRIBE_QUEUE]
            [worker] = transcribe["workers"]
            assert worker["host"] and worker["pid"] > 0 and worker["queue"] == TRANSCRIBE_QUEUE
            assert worker["heartbeat_age_s"] < 5
            assert {"model", "device", "metrics_url", "jobs", "busy", "info"} <= set(worker)
            code, output = await cli(url, "status")
            assert code == 0 and "ok" in output, output
            assert worker["id"] in output and str(worker["pid"]) in output, output
            code, output = await cli(url, "queues", "--json")
            assert code == 0 and json.loads(output)["queues"][0]["workers"][0]["id"] == worker["id"]
        assert (await status())["status"] == "ok"


async def test_registry_fields_pass_through(redis, settings) -> None:
    now = time.time()
    entry = {
        "id": "gpu-1-transcribe",
        "queue": TRANSCRIBE_QUEUE,
        "host": "gpu-1",
        "pid": 42,
        "heartbeat": now,
        "jobs": [],
        "draining": False,
        "model": "large-v3",
        "device": "cuda",
        "compute_type": "float16",
        "metrics_url": "http://10.0.0.7:9100/metrics",
    }
    await redis.hset(keys.WORKERS, entry["id"], json.dumps(entry))
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        queues = (await client.get("/v1/queues", headers=ALICE)).json()
    [transcribe] = [q for q in queues["queues"] if q["name"] == TRANSCRIBE_QUEUE]
    [worker] = transcribe["workers"]
    assert worker["model"] == "large-v3" and worker["device"] == "cuda"
    assert worker["metrics_url"] == "http://10.0.0.7:9100/metrics"
    assert worker["info"] == {"compute_type": "float16"}
    assert worker["host"] == "gpu-1" and worker["pid"] == 42


async def crashing_probe(ctx: JobContext) -> dict[str, Any]:
    raise MediaflowError("the worker was interrupted", code="interrupted", retryable=False)


async def test_crashing_workers_are_degraded(redis, settings, media, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings.model_copy(update={"crash_threshold": 2})
    app = create_app(settings)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
        running_worker(settings, COMPOSE_QUEUE, {JobType.probe: crashing_probe}),
    ):
        body = {"type": "probe", "input": {"path": str(media / "jfk.flac")}}
        job_id = (await client.post("/v1/jobs", json=body, headers=ALICE)).json()["id"]
        job = await wait_terminal(client, job_id)
        assert job["error"]["code"] == "interrupted"
        assert (await client.get("/v1/status", headers=ALICE)).json()["status"] == "ok"  # once is not "keeps"

        # a worker that died without deregistering (killed, OOM): its entry stays, its heartbeat stops
        gone = time.time() - 120
        dead = {"id": "h-1-compose", "queue": COMPOSE_QUEUE, "host": "h", "pid": 1, "heartbeat": gone, "jobs": []}
        await redis.hset(keys.WORKERS, dead["id"], json.dumps(dead))
        report = (await client.get("/v1/status", headers=ALICE)).json()
        assert report["status"] == "degraded", report
        [problem] = report["problems"]
        assert problem["code"] == "worker_crashing" and problem["queue"] == COMPOSE_QUEUE
        assert problem["count"] == 2
        metrics = (await client.get("/metrics")).text
        assert f'mediaflow_worker_crashes_recent{{queue="{COMPOSE_QUEUE}"}} 2.0' in metrics


async def test_redis_down_is_degraded_and_unready(settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(down)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        assert (await client.get("/readyz")).status_code == 503
        reply = await client.get("/v1/status", headers=ALICE)
    assert reply.status_code == 200
    report = reply.json()
    assert report["status"] == "degraded"
    assert [p["code"] for p in report["problems"]] == ["redis_unavailable"]
