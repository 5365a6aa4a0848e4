"""Jobs that really run: upload -> submit -> a real compositor worker -> SSE events, Last-Event-ID
replay, artifact download with HTTP Range, and /v1/queues with a live worker."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from gateway_support import ALICE, BOB, assert_problem, running_compositor, running_gateway, upload, wait_terminal
from httpx_sse import aconnect_sse

from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.context import JobContext
from mediaflow.compositor import jobs as compositor_jobs


async def probe_with_artifacts(ctx: JobContext) -> dict:
    """The real probe job, plus two artifacts (the probe as JSON and a copy of the media bytes) so
    downloads can be checked byte for byte."""
    info = await compositor_jobs.probe(ctx)
    await ctx.write_artifact("probe.json", json.dumps(info).encode(), "application/json")
    with ctx.storage.local_path(ctx.job.input["storage_key"]) as path:
        await ctx.write_artifact("media.bin", path, "application/octet-stream")
    return info


@pytest.fixture
async def stack(redis, settings):
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    async with (
        running_gateway(cfg, sse_ping=0.5) as base,
        running_compositor(cfg, {JobType.probe: probe_with_artifacts}),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        yield client


async def collect(client, job_id: str, headers: dict[str, str], **kw) -> list:
    events = []
    async with aconnect_sse(client, "GET", f"/v1/jobs/{job_id}/events", headers=headers, **kw) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            if sse.data:  # httpx-sse reports keepalive comments as empty events
                events.append(sse)
    return events


async def test_probe_job_runs_and_streams_events(stack, media):
    m = (await upload(stack, media / "jfk.flac", name="hold-0.5s.flac")).json()
    job = (await stack.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": m["id"]}})).json()
    events = await asyncio.wait_for(collect(stack, job["id"], ALICE), 30)  # ends by itself after `succeeded`
    states = [json.loads(e.data)["state"] for e in events if e.event == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert any(e.event == "progress" for e in events)
    assert all(e.id for e in events)
    done = (await stack.get(f"/v1/jobs/{job['id']}", headers=ALICE)).json()
    assert done["state"] == "succeeded" and done["result"]["duration"] == 11.0 and done["attempt"] == 1
    assert done["worker"] and done["started_at"] and done["finished_at"]

    # Replay: everything after a given id, and nothing before it
    middle = events[len(events) // 2]
    replay = await collect(stack, job["id"], {**ALICE, "Last-Event-ID": middle.id})
    assert [e.id for e in replay] == [e.id for e in events[len(events) // 2 + 1 :]]
    # the browser way: access_token + ?after=
    by_token = await collect(stack, job["id"], {}, params={"access_token": "key-alice", "after": middle.id})
    assert [e.id for e in by_token] == [e.id for e in replay]
    assert_problem(
        await stack.get(f"/v1/jobs/{job['id']}/events", headers={**ALICE, "Last-Event-ID": "x"}),
        422,
        "invalid_event_id",
    )
    assert_problem(
        await stack.get(f"/v1/jobs/{job['id']}/events", params={"access_token": "key-bob"}), 404, "job_not_found"
    )


async def test_sse_follows_a_live_job_with_pings_until_cancelled(stack, media):
    m = (await upload(stack, media / "jfk.flac", name="hold-60s.flac")).json()
    job = (await stack.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": m["id"]}})).json()
    events: list[tuple[str, dict]] = []
    pings = 0
    cancelled = False
    async with aconnect_sse(stack, "GET", f"/v1/jobs/{job['id']}/events", headers=ALICE) as source:
        event = ""
        async for line in source.response.aiter_lines():  # raw lines: keepalive comments are visible
            pings += line.startswith(":")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line[5:])))
            if not cancelled and pings >= 2 and any(d.get("stage") == "hold" for _, d in events):
                cancelled = True  # live progress and keepalives seen: cancel the running job
                response = await stack.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE)
                assert response.json()["state"] == "cancelling"
    # the stream ended by itself after the terminal state
    states = [d["state"] for e, d in events if e == "state"]
    assert states == ["queued", "running", "cancelling", "cancelled"]
    assert (await stack.get(f"/v1/jobs/{job['id']}", headers=ALICE)).json()["state"] == "cancelled"


async def test_artifact_download_with_range(stack, media):
    m = (await upload(stack, media / "jfk.flac")).json()
    job = (await stack.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": m["id"]}})).json()
    done = await wait_terminal(stack, job["id"])
    assert done["state"] == "succeeded", done
    names = {a["name"]: a for a in done["artifacts"]}
    assert set(names) == {"probe.json", "media.bin"}
    assert names["media.bin"]["url"] == f"/v1/jobs/{job['id']}/artifacts/media.bin"
    original = (media / "jfk.flac").read_bytes()

    whole = await stack.get(names["media.bin"]["url"], headers=ALICE)
    assert whole.status_code == 200 and whole.content == original
    assert whole.headers["accept-ranges"] == "bytes"
    head = await stack.head(names["media.bin"]["url"], headers=ALICE)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(original)
    assert head.headers["content-type"] == whole.headers["content-type"]
    part = await stack.get(names["media.bin"]["url"], headers={**ALICE, "Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(original)}"
    assert part.content == original[1000:2000]
    tail = await stack.get(names["media.bin"]["url"], headers={**ALICE, "Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == original[-100:]
    bad = await stack.get(names["media.bin"]["url"], headers={**ALICE, "Range": f"bytes={len(original) + 5}-"})
    assert_problem(bad, 416, "range_not_satisfiable")
    assert bad.headers["content-range"] == f"bytes */{len(original)}"
    assert_problem(
        await stack.get(names["media.bin"]["url"], headers={**ALICE, "Range": "lines=1-2"}), 400, "malformed_range"
    )
    multi = await stack.get(names["media.bin"]["url"], headers={**ALICE, "Range": "bytes=0-9,100-109"})
    assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
    assert original[:10] in multi.content and original[100:110] in multi.content
    info = (await stack.get(names["probe.json"]["url"], headers=ALICE)).json()
    assert info["duration"] == 11.0
    assert_problem(await stack.get(names["media.bin"]["url"], headers=BOB), 404, "job_not_found")
    assert_problem(
        await stack.get(f"/v1/jobs/{job['id']}/artifacts/nope.txt", headers=ALICE), 404, "artifact_not_found"
    )


async def test_queues_show_workers_and_running_jobs(stack, media):
    m = (await upload(stack, media / "jfk.flac")).json()
    hold = (await upload(stack, media / "jfk.flac", name="hold-30s.flac")).json()
    held = (
        await stack.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": hold["id"]}})
    ).json()
    waiting = (
        await stack.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": m["id"]}})
    ).json()
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        snapshot = (await stack.get("/v1/queues", headers=ALICE)).json()
        compose = next(q for q in snapshot["queues"] if q["name"] == "mediaflow:queue:compose")
        if compose["running"] == 1 and compose["workers"] and compose["workers"][0]["jobs"]:
            break
        assert asyncio.get_running_loop().time() < deadline, snapshot
        await asyncio.sleep(0.2)
    assert [q["name"] for q in snapshot["queues"]] == [
        "mediaflow:queue:transcribe",
        "mediaflow:queue:compose",
        "mediaflow:queue:compose-heavy",
    ]
    worker = compose["workers"][0]
    assert worker["jobs"] == [held["id"]] and worker["busy"] == 1 and worker["heartbeat_age_s"] < 30
    assert compose["queued"] == 1 and compose["deferred"] == 0
    # another tenant sees the counts, not the job ids
    bob_view = (await stack.get("/v1/queues", headers=BOB)).json()
    bob_worker = next(q for q in bob_view["queues"] if q["name"] == "mediaflow:queue:compose")["workers"][0]
    assert bob_worker["jobs"] == [] and bob_worker["busy"] == 1

    # cancel the running job: the worker stops it and takes the waiting one
    assert (await stack.post(f"/v1/jobs/{held['id']}/cancel", headers=ALICE)).json()["state"] == "cancelling"
    assert (await wait_terminal(stack, held["id"]))["state"] == "cancelled"
    assert (await wait_terminal(stack, waiting["id"]))["state"] == "succeeded"
    snapshot = (await stack.get("/v1/queues", headers=ALICE)).json()
    compose = next(q for q in snapshot["queues"] if q["name"] == "mediaflow:queue:compose")
    assert compose["succeeded"] == 1 and compose["running"] == 0 and compose["queued"] == 0
    metrics = (await stack.get("/metrics")).text
    assert 'mediaflow_workers{queue="mediaflow:queue:compose"} 1.0' in metrics
    assert 'mediaflow_jobs_submitted_total{type="probe"} 2.0' in metrics


async def test_upload_is_described_by_the_compositor_over_grpc(redis, settings, media):
    from mediaflow.compositor import grpc_server

    server, port = await grpc_server.start(settings, port=0)
    cfg = settings.model_copy(update={"compositor_grpc": f"127.0.0.1:{port}"})
    try:
        async with running_gateway(cfg) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
            m = (await upload(client, media / "big_buck_bunny_small.mp4")).json()
            assert m["probed_by"] == "compositor"
            video = next(s for s in m["streams"] if s["kind"] == "video")
            assert (video["width"], video["height"]) == (320, 240) and video["display_aspect_ratio"] == "16:9"
            assert m["size"] == (media / "big_buck_bunny_small.mp4").stat().st_size
    finally:
        await server.stop(None)


async def test_s3_storage_end_to_end(redis, settings, media, s3_storage_url):
    """With s3:// storage the whole path goes through the bucket: upload, the worker's fetch, its
    artifacts, and downloads (whole, Range, HEAD) streamed from S3 by the gateway."""
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1", "storage_url": s3_storage_url})
    async with (
        running_gateway(cfg) as base,
        running_compositor(cfg, {JobType.probe: probe_with_artifacts}),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        m = (await upload(client, media / "jfk.flac")).json()
        job = (
            await client.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": m["id"]}})
        ).json()
        done = await wait_terminal(client, job["id"])
        assert done["state"] == "succeeded", done
        url = f"/v1/jobs/{job['id']}/artifacts/media.bin"
        original = (media / "jfk.flac").read_bytes()
        whole = await client.get(url, headers=ALICE)
        assert whole.status_code == 200 and whole.content == original
        part = await client.get(url, headers={**ALICE, "Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == original[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(original)}"
        head = await client.head(url, headers=ALICE)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(original)
        assert_problem(
            await client.get(url, headers={**ALICE, "Range": f"bytes={len(original)}-"}), 416, "range_not_satisfiable"
        )
    import boto3

    bucket = s3_storage_url.removeprefix("s3://").split("/")[0]
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"prefix/jobs/{job['id']}/media.bin" in keys and any(k.startswith("prefix/media/") for k in keys)
