"""Batches through the REST API on a real Valkey: a transcribe batch on real media with the real model,
followed over SSE; per-item validation; a server directory with a glob; cancel, retry and delete of
the whole batch; retention of the record once its jobs have gone."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from gateway_support import ALICE, BOB, assert_problem, running_compositor, running_gateway, upload
from httpx_sse import aconnect_sse
from job_support import in_process_worker

from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import JobType
from mediaflow.common.jobs.store import JobStore
from mediaflow.common.runtime.sweeper import Sweeper
from mediaflow.common.storage import open_storage
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.transcriber import jobs as transcriber_jobs
from mediaflow.transcriber.model import get_models


async def follow(client: httpx.AsyncClient, batch_id: str, headers: dict[str, str] = ALICE) -> list:
    events = []
    url = f"/v1/batches/{batch_id}/events"
    async with aconnect_sse(client, "GET", url, headers=headers, timeout=httpx.Timeout(300, connect=10)) as source:
        async for sse in source.aiter_sse():
            if sse.data:
                events.append((sse.event, json.loads(sse.data)))
    return events


async def wait_batch(client: httpx.AsyncClient, batch_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        batch = (await client.get(f"/v1/batches/{batch_id}", headers=ALICE)).json()
        if batch["state"] in states:
            return batch
        assert time.monotonic() < deadline, f"batch never reached {states}: {batch}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def probe_stack(redis, settings, media):
    """A gateway and a real compositor worker (probe jobs: cheap, and `hold-<s>s.*` media hold)."""
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1", "allowed_roots": [media]})
    async with (
        running_gateway(cfg, sse_ping=0.5) as base,
        running_compositor(cfg),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        yield client


async def test_transcribe_batch_on_real_media_with_the_real_model(redis, settings, media):
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    await asyncio.to_thread(get_models, cfg)  # loaded before the gateway shares this event loop
    async with (
        running_gateway(cfg, sse_ping=0.5) as base,
        in_process_worker(cfg, {JobType.transcribe: transcriber_jobs.transcribe}, keys.TRANSCRIBE_QUEUE),
        httpx.AsyncClient(base_url=base, timeout=60) as client,
    ):
        jfk = (await upload(client, media / "jfk.flac")).json()
        grid = (await upload(client, media / "grid_bbaf2n.mp4")).json()
        response = await client.post(
            "/v1/batches",
            headers=ALICE,
            json={
                "items": [
                    {"media_id": jfk["id"]},
                    {"media_id": "m_00000000000000000000000000"},  # no such media: rejected alone
                    {"media_id": grid["id"]},
                    "not an object",
                ],
                "template": {
                    "type": "transcribe",
                    "options": {"language": "en", "formats": ["srt", "vtt", "json", "txt"]},
                },
            },
        )
        assert response.status_code == 202, response.text
        created = response.json()
        assert response.headers["location"] == f"/v1/batches/{created['id']}"
        assert len(created["accepted"]) + len(created["rejected"]) == 4
        assert [a["index"] for a in created["accepted"]] == [0, 2]
        assert [(r["index"], r["code"]) for r in created["rejected"]] == [(1, "media_not_found"), (3, "invalid_input")]
        assert all(r["detail"] for r in created["rejected"])

        events = await asyncio.wait_for(follow(client, created["id"]), 240)  # ends by itself
        assert events[0][0] == "batch" and len(events[0][1]["items"]) == 2
        assert any(name == "item" and item["state"] == "running" for name, item in events)
        assert events[-1][0] == "batch" and events[-1][1]["state"] == "succeeded"

        batch = (await client.get(f"/v1/batches/{created['id']}", headers=ALICE)).json()
        assert batch["state"] == "succeeded" and batch["progress"] == 1.0
        assert batch["counts"] == {"succeeded": 2} and batch["total"] == 2
        assert [i["source"] for i in batch["items"]] == ["jfk.flac", "grid_bbaf2n.mp4"]
        texts = []
        for item in batch["items"]:
            job = (await client.get(f"/v1/jobs/{item['job_id']}", headers=ALICE)).json()
            assert job["batch_id"] == created["id"]
            texts.append((await client.get(f"/v1/jobs/{job['id']}/artifacts/transcript.txt", headers=ALICE)).text)
        assert "ask not what your country" in texts[0].lower()
        assert "now" in texts[1].lower()  # "bin blue at f two now"; tiny.en hears "BIMBLU F2 now."

        listed = (await client.get("/v1/batches", headers=ALICE)).json()
        assert [b["id"] for b in listed["batches"]] == [created["id"]] and "items" not in listed["batches"][0]
        assert_problem(await client.get(f"/v1/batches/{created['id']}", headers=BOB), 404, "batch_not_found")
        assert (await client.get("/v1/batches", headers=BOB)).json()["batches"] == []
        assert_problem(await client.post(f"/v1/batches/{created['id']}/retry", headers=ALICE), 409, "nothing_to_retry")

        assert (await client.delete(f"/v1/batches/{created['id']}", headers=ALICE)).status_code == 204
        assert_problem(await client.get(f"/v1/batches/{created['id']}", headers=ALICE), 404, "batch_not_found")
        for item in batch["items"]:
            assert_problem(await client.get(f"/v1/jobs/{item['job_id']}", headers=ALICE), 404, "job_not_found")
            assert not open_storage(cfg.storage_url).names(f"jobs/{item['job_id']}")


async def test_bad_batches_are_refused_whole_with_a_code(probe_stack, media):
    client = probe_stack
    m = (await upload(client, media / "jfk.flac")).json()
    one = [{"media_id": m["id"]}]

    async def post(body: dict) -> httpx.Response:
        return await client.post("/v1/batches", headers=ALICE, json=body)

    assert_problem(await post({"items": one, "template": {"type": "dance"}}), 422, "unknown_job_type")
    urgent = {"type": "probe", "priority": "now"}
    assert_problem(await post({"items": one, "template": urgent}), 422, "invalid_priority")
    assert_problem(await post({"items": one, "template": {"type": "probe", "input": one[0]}}), 422, "invalid_template")
    assert_problem(
        await post({"items": one, "template": {"type": "transcribe", "options": {"task": "sing"}}}),
        422,
        "invalid_options",
    )
    compose = {"type": "compose", "options": {"items": [{"type": "video", "media_id": m["id"]}]}}
    assert_problem(await post({"items": one, "template": compose}), 422, "invalid_template")  # no per-item clip
    assert_problem(await post({"items": [], "template": {"type": "probe"}}), 422, "batch_empty")
    assert_problem(await post({"items": one * 501, "template": {"type": "probe"}}), 413, "batch_too_large")
    every = await post({"items": [{"media_id": "m_00000000000000000000000000"}, {}], "template": {"type": "probe"}})
    problem = assert_problem(every, 422, "batch_rejected")
    assert [r["code"] for r in problem["rejected"]] == ["media_not_found", "invalid_input"]
    assert (await client.get("/v1/batches", headers=ALICE)).json()["batches"] == []  # nothing was written
    assert_problem(await client.get("/v1/batches/b_nope", headers=ALICE), 404, "batch_not_found")


async def test_directory_glob_batch(probe_stack, media, tmp_path):
    client = probe_stack
    # the fixture media folder is the allowed root: a glob over it, and a folder outside it
    created = (
        await client.post(
            "/v1/batches",
            headers=ALICE,
            json={"directory": {"path": str(media), "glob": "*.flac"}, "template": {"type": "probe"}},
        )
    ).json()
    flacs = sorted(p.name for p in media.glob("*.flac"))
    assert len(created["accepted"]) == len(flacs) >= 2 and created["rejected"] == []
    batch = await wait_batch(client, created["id"], {"succeeded", "failed", "partial"})
    assert batch["state"] == "succeeded"
    assert [i["source"].rsplit("/", 1)[-1] for i in batch["items"]] == flacs
    outside = await client.post(
        "/v1/batches", headers=ALICE, json={"directory": {"path": str(tmp_path)}, "template": {"type": "probe"}}
    )
    assert_problem(outside, 403, "path_not_allowed")
    sneaky = {"directory": {"path": str(media), "glob": "../*"}, "template": {"type": "probe"}}
    assert_problem(await client.post("/v1/batches", headers=ALICE, json=sneaky), 422, "invalid_glob")
    nothing = {"directory": {"path": str(media), "glob": "*.nothing"}, "template": {"type": "probe"}}
    assert_problem(await client.post("/v1/batches", headers=ALICE, json=nothing), 422, "batch_empty")


async def test_cancel_retry_and_a_partial_batch(probe_stack, media):
    client = probe_stack
    held = [(await upload(client, media / "jfk.flac", name="hold-60s.flac")).json() for i in range(3)]
    created = (
        await client.post(
            "/v1/batches",
            headers=ALICE,
            json={"items": [{"media_id": m["id"]} for m in held], "template": {"type": "probe"}},
        )
    ).json()
    await wait_batch(client, created["id"], {"running"})
    cancelled = await client.post(f"/v1/batches/{created['id']}/cancel", headers=ALICE)
    assert cancelled.status_code == 202
    batch = await wait_batch(client, created["id"], {"cancelled"}, timeout=30)
    assert batch["counts"] == {"cancelled": 3} and batch["progress"] == 1.0

    retried = await client.post(f"/v1/batches/{created['id']}/retry", headers=ALICE)
    assert retried.status_code == 202 and retried.json()["state"] in ("queued", "running")
    await client.post(f"/v1/batches/{created['id']}/cancel", headers=ALICE)
    await wait_batch(client, created["id"], {"cancelled"}, timeout=30)

    # one good file and one that is no media (a text file under the allowed root): the batch ends `partial`
    good = (await upload(client, media / "jfk.flac")).json()
    items = [{"media_id": good["id"]}, {"path": str(media / "jfk.txt")}]
    mixed = (
        await client.post("/v1/batches", headers=ALICE, json={"items": items, "template": {"type": "probe"}})
    ).json()
    batch = await wait_batch(client, mixed["id"], {"succeeded", "failed", "partial"})
    assert batch["state"] == "partial" and batch["counts"] == {"failed": 1, "succeeded": 1}
    assert batch["items"][1]["error"]["code"]
    retried = (await client.post(f"/v1/batches/{mixed['id']}/retry", headers=ALICE)).json()
    assert retried["counts"].get("succeeded") == 1  # only the failed item went again

    # the list pages newest first, with each batch's counts
    first = (await client.get("/v1/batches", headers=ALICE, params={"limit": 1})).json()
    assert [b["id"] for b in first["batches"]] == [mixed["id"]] and first["next_cursor"] == mixed["id"]
    rest = (await client.get("/v1/batches", headers=ALICE, params={"cursor": first["next_cursor"]})).json()
    assert [b["id"] for b in rest["batches"]] == [created["id"]] and rest["next_cursor"] is None
    assert rest["batches"][0]["counts"] == {"cancelled": 3} and rest["batches"][0]["total"] == 3


async def test_the_sweeper_drops_a_batch_whose_jobs_have_gone(probe_stack, redis, settings, media):
    client = probe_stack
    m = (await upload(client, media / "jfk.flac")).json()
    created = (
        await client.post(
            "/v1/batches", headers=ALICE, json={"items": [{"media_id": m["id"]}], "template": {"type": "probe"}}
        )
    ).json()
    await wait_batch(client, created["id"], {"succeeded"})
    store = JobStore(redis)
    sweeper = Sweeper(store, open_storage(settings.storage_url), settings, WORKFLOWS, owner="test")
    later = time.time() + 3600
    assert (await sweeper.sweep(now=later, files=False)).batches_expired == 0  # its job is still there
    await client.delete(f"/v1/jobs/{created['accepted'][0]['job_id']}", headers=ALICE)
    gone = (await client.get(f"/v1/batches/{created['id']}", headers=ALICE)).json()
    assert gone["state"] == "deleted" and gone["items"][0]["state"] == "deleted"
    assert (await sweeper.sweep(now=later, files=False)).batches_expired == 1
    assert_problem(await client.get(f"/v1/batches/{created['id']}", headers=ALICE), 404, "batch_not_found")
    assert not await redis.exists(keys.batch(created["id"]))
