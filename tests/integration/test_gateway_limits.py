"""Bounded resources and bad inputs at the gateway (issue 11): auth before the body, body limits while
streaming, Redis memory and disk watermarks, the shared SSE reader and its per-tenant limit, and a
clear 4xx with a code for every malformed input. Real uvicorn, real Valkey, real files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from gateway_support import ALICE, BOB, assert_problem, running_compositor, running_gateway, upload, wait_terminal
from redis.asyncio import Redis

from mediaflow.common.settings import Settings

JSON = {**ALICE, "Content-Type": "application/json"}


async def raw_request(url: str, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, bytes]:
    """Send raw HTTP (headers that promise more body than is sent) and read the answer."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


async def test_a_request_without_a_valid_key_is_refused_before_its_body(settings: Settings, redis: Redis) -> None:
    async with running_gateway(settings) as url:
        for auth in ("", "Authorization: Bearer wrong\n"):
            # 10 MB promised, none sent: a gateway that read the body first would wait for ever.
            head = (
                f"POST /v1/media HTTP/1.1\nHost: x\n{auth}Content-Type: multipart/form-data; boundary=b\n"
                "Content-Length: 10000000\n"
            )
            status, data = await raw_request(url, head)
            assert status == 401 and b'"code":"unauthorized"' in data.replace(b" ", b""), data


async def test_json_bodies_are_limited_while_streaming(settings: Settings, redis: Redis) -> None:
    settings = settings.model_copy(update={"max_json_bytes": 4096})
    async with running_gateway(settings) as url:
        head = f"POST /v1/jobs HTTP/1.1\nHost: x\nAuthorization: {ALICE['Authorization']}\n"
        status, data = await raw_request(url, head + "Content-Type: application/json\nContent-Length: 2000000\n")
        assert status == 413 and b"payload_too_large" in data
        async with httpx.AsyncClient(base_url=url) as client:

            async def chunks():  # no Content-Length: only counting while reading catches it
                yield b'{"type": "probe", "options": {"x": "'
                for _ in range(10):
                    yield b"a" * 1000
                yield b'"}}'

            response = await client.post("/v1/jobs", content=chunks(), headers=JSON)
            body = assert_problem(response, 413, "payload_too_large")
            assert body["limit"] == 4096
            # Under the limit, the same route works as before.
            small = await client.post("/v1/jobs", json={"type": "probe", "input": {"media_id": "m_x"}}, headers=ALICE)
            assert_problem(small, 404, "media_not_found")


async def test_low_disk_refuses_uploads_with_507_and_submits_with_503(
    settings: Settings, redis: Redis, media: Path
) -> None:
    settings = settings.model_copy(update={"min_free_disk_bytes": 2**62})
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        assert_problem(await upload(client, media / "jfk.flac"), 507, "insufficient_storage")
        submit = await client.post("/v1/jobs", json={"type": "probe", "input": {"media_id": "m_x"}}, headers=ALICE)
        assert_problem(submit, 503, "storage_full")
        assert submit.headers["Retry-After"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["headroom"] != "ok"


async def test_redis_memory_watermark_degrades_before_redis_refuses(
    settings: Settings, redis: Redis, media: Path
) -> None:
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        media_id = (await upload(client, media / "jfk.flac")).json()["id"]
        assert (await client.get("/readyz")).status_code == 200
        used = int((await redis.info("memory"))["used_memory"])
        try:
            await redis.config_set("maxmemory", str(int(used / 0.95)))  # 95 % used: over the 90 % watermark
            await asyncio.sleep(1.1)  # the gateway's reading is cached for a second
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and "Redis uses" in ready.json()["checks"]["headroom"]
            body = {"type": "probe", "input": {"media_id": media_id}}
            refused = await client.post("/v1/jobs", json=body, headers=ALICE)
            assert_problem(refused, 503, "store_full")
            assert refused.headers["Retry-After"]
            batch = await client.post(
                "/v1/batches", json={"items": [body["input"]], "template": {"type": "probe"}}, headers=ALICE
            )
            assert_problem(batch, 503, "store_full")
            # Reads still work, and nothing was written by the refused submits.
            listed = await client.get("/v1/jobs", headers=ALICE)
            assert listed.status_code == 200 and listed.json()["jobs"] == []
        finally:
            await redis.config_set("maxmemory", "0")


async def test_a_redis_write_refused_for_memory_is_a_503(settings: Settings, redis: Redis, media: Path) -> None:
    settings = settings.model_copy(update={"redis_memory_watermark": 100.0})  # let the write reach Redis
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        media_id = (await upload(client, media / "jfk.flac")).json()["id"]
        try:
            await redis.config_set("maxmemory", "1")
            refused = await client.post(
                "/v1/jobs", json={"type": "probe", "input": {"media_id": media_id}}, headers=ALICE
            )
            assert_problem(refused, 503, "store_full")
        finally:
            await redis.config_set("maxmemory", "0")
        accepted = await client.post("/v1/jobs", json={"type": "probe", "input": {"media_id": media_id}}, headers=ALICE)
        assert accepted.status_code == 202


async def _open_stream(client: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> httpx.Response:
    request = client.build_request("GET", f"/v1/jobs/{job_id}/events", headers=headers)
    return await client.send(request, stream=True)


async def test_event_streams_share_one_redis_connection_and_are_limited_per_tenant(
    settings: Settings, redis: Redis, media: Path
) -> None:
    settings = settings.model_copy(update={"sse_streams_per_tenant": 3})
    async with running_gateway(settings, sse_ping=0.2) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        media_id = (await upload(client, media / "jfk.flac")).json()["id"]
        body = {"type": "probe", "input": {"media_id": media_id}}
        jobs = [(await client.post("/v1/jobs", json=body, headers=ALICE)).json()["id"] for _ in range(3)]
        streams = [await _open_stream(client, job_id, ALICE) for job_id in jobs]
        try:
            assert all(s.status_code == 200 for s in streams)
            refused = await client.get(f"/v1/jobs/{jobs[0]}/events", headers=ALICE)
            assert_problem(refused, 429, "too_many_streams")
            await asyncio.sleep(0.5)
            blocked = [c for c in await redis.client_list() if "b" in c.get("flags", "")]
            assert len(blocked) == 1, blocked  # one reader for every stream of the gateway
            # Events of every followed job arrive through it, at once.
            for job_id, stream in zip(jobs, streams, strict=True):
                await client.post(f"/v1/jobs/{job_id}/cancel", headers=ALICE)
                text = ""
                async for chunk in stream.aiter_text():
                    text += chunk
                    if "cancelled" in text:
                        break
                assert "event: state" in text
        finally:
            for stream in streams:
                await stream.aclose()
        await asyncio.sleep(0.3)
        again = await _open_stream(client, jobs[0], ALICE)  # closed streams gave their slots back
        assert again.status_code == 200
        await again.aclose()


async def test_sse_ids_and_resuming_after_the_end(settings: Settings, redis: Redis, media: Path) -> None:
    async with (
        running_gateway(settings) as url,
        running_compositor(settings),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        if True:
            media_id = (await upload(client, media / "jfk.flac")).json()["id"]
            job_id = (
                await client.post("/v1/jobs", json={"type": "probe", "input": {"media_id": media_id}}, headers=ALICE)
            ).json()["id"]
            await wait_terminal(client, job_id)
            full = await client.get(f"/v1/jobs/{job_id}/events", headers=ALICE)
            ids = [line.removeprefix("id: ").strip() for line in full.text.splitlines() if line.startswith("id: ")]
            assert ids and "succeeded" in full.text
            started = time.monotonic()
            resumed = await client.get(f"/v1/jobs/{job_id}/events", headers={**ALICE, "Last-Event-ID": ids[-1]})
            assert resumed.status_code == 200 and "id: " not in resumed.text  # closes at once, nothing new
            assert time.monotonic() - started < 3
            for bad in ("18446744073709551616-0", "1-18446744073709551616", "99999999999999999999999-0", "x"):
                response = await client.get(f"/v1/jobs/{job_id}/events", headers={**ALICE, "Last-Event-ID": bad})
                assert_problem(response, 422, "invalid_event_id")
            assert (
                await client.get(
                    f"/v1/jobs/{job_id}/events", headers={**ALICE, "Last-Event-ID": "18446744073709551615-0"}
                )
            ).status_code == 200


async def test_bad_inputs_get_a_4xx_with_a_code_and_nothing_is_lost(
    settings: Settings, redis: Redis, media: Path
) -> None:
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        media_id = (await upload(client, media / "jfk.flac")).json()["id"]

        async def post(path: str, text: str) -> httpx.Response:
            return await client.post(path, content=text.encode(), headers=JSON)

        surrogate = '{"type": "probe", "input": {"media_id": "m_\\ud800"}}'
        assert_problem(await post("/v1/jobs", surrogate), 422, "invalid_text")
        assert_problem(
            await post("/v1/jobs", '{"type": "probe", "input": {"path": "/x/\\udfff.mp4"}}'), 422, "invalid_text"
        )
        assert_problem(
            await post("/v1/jobs", '{"type": "probe\\ud800", "input": {"media_id": "m_x"}}'), 422, "invalid_text"
        )
        assert_problem(await post("/v1/jobs", '{"type": "probe", "\\ud800": 1}'), 422, "invalid_request")
        batch = await post(
            "/v1/batches",
            f'{{"items": [{{"media_id": "m_\\ud800"}}, {{"media_id": "{media_id}"}}], '
            '"template": {"type": "probe"}}',
        )
        assert batch.status_code == 202, batch.text
        assert [r["code"] for r in batch.json()["rejected"]] == ["invalid_text"] and len(batch.json()["accepted"]) == 1

        long_path = str(media / ("a" * 300 + ".mp4"))
        response = await client.post("/v1/jobs", json={"type": "probe", "input": {"path": long_path}}, headers=ALICE)
        assert_problem(response, 422, "invalid_path")

        for text in ('{"start": 1e999}', '{"start": NaN}', '{"start": -Infinity}', '{"start": 1e300}'):
            body = (
                f'{{"type": "compose", "options": {{"items": [{{"kind": "video", "media_id": "{media_id}", '
                f'"text": {{"words": ["hi"], **START**}}}}]}}}}'
            ).replace("**START**", text[1:-1])
            assert_problem(await post("/v1/jobs", body), 422, "invalid_options")
        big_int = '{"type": "transcribe", "input": {"media_id": "%s"}, "options": {"num_speakers": %d}}'
        assert_problem(await post("/v1/jobs", big_int % (media_id, 2**70)), 422, "invalid_options")
        # Nothing bad was stored: the tenant's jobs still list and read.
        listed = await client.get("/v1/jobs", headers=ALICE)
        assert listed.status_code == 200 and len(listed.json()["jobs"]) == 1


async def test_uploads_keep_their_extension_and_415_hides_server_paths(
    settings: Settings, redis: Redis, media: Path, tmp_path: Path
) -> None:
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        with open(media / "jfk.flac", "rb") as fh:
            response = await client.post("/v1/media", files={"file": ("видео запись.flac", fh)}, headers=ALICE)
        assert response.status_code == 201 and response.json()["filename"].endswith(".flac"), response.text
        notes = tmp_path / "notes.txt"
        notes.write_text("not media at all\n" * 50)
        body = assert_problem(await upload(client, notes), 415, "unsupported_media")
        assert "/" not in body["detail"] and "upload-" not in body["detail"], body["detail"]


async def test_405_names_every_allowed_method(settings: Settings, redis: Redis) -> None:
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.put("/v1/jobs", headers=ALICE)
        assert_problem(response, 405, "method_not_allowed")
        assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


async def test_openapi_declares_job_types_links_and_errors(settings: Settings, redis: Redis) -> None:
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        doc = (await client.get("/openapi.json")).json()
        body = doc["components"]["schemas"]["JobRequest"]
        assert sorted(body["discriminator"]["mapping"]) == ["caption", "compose", "probe", "transcribe"]
        items = doc["components"]["schemas"]["BatchRequest"]["properties"]["items"]
        assert items["maxItems"] == settings.max_batch_jobs
        assert items["items"] == {"$ref": "#/components/schemas/MediaRef"}
        submit = doc["paths"]["/v1/jobs"]["post"]["responses"]
        assert {"GetJob", "CancelJob", "RetryJob", "FollowJob"} <= set(submit["202"]["links"])
        assert "507" in doc["paths"]["/v1/media"]["post"]["responses"]


@pytest.mark.parametrize("value", ["abc", "abc:tenant,nocolon", ":tenant", "key:"])
def test_malformed_api_keys_stop_startup(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAFLOW_API_KEYS", value)
    with pytest.raises(ValueError, match="key:tenant") as err:
        Settings()
    assert "abc" not in str(err.value)  # a key is never echoed
    assert BOB
