"""The gateway over real HTTP (uvicorn) against a real Valkey: auth, problem details for every bad
input, uploads, submit/list/get/cancel/retry, batches, idempotency and tenant isolation."""

from __future__ import annotations

import os

import httpx
import pytest
from gateway_support import ALICE, BOB, assert_problem, running_gateway, upload

from mediaflow.common.settings import Settings


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    # Nothing listens on port 1: uploads fall back to the gateway's own probe.
    return settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})


@pytest.fixture
async def client(redis, gw_settings):
    async with running_gateway(gw_settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        yield c


async def test_health_ready_metrics_and_docs(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "storage": "ok", "headroom": "ok"}
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/media",
        "/v1/jobs",
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/events",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/retry",
        "/v1/jobs/{job_id}/artifacts/{name}",
        "/v1/queues",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert (await client.get("/docs")).status_code == 200
    await client.get("/v1/jobs", headers=ALICE)
    metrics = (await client.get("/metrics")).text
    assert 'mediaflow_http_requests_total{method="GET",route="/v1/jobs",status="200"} 1.0' in metrics
    assert 'mediaflow_queue_ready{queue="mediaflow:queue:transcribe"} 0.0' in metrics
    assert 'mediaflow_jobs_finished_recent{outcome="failed",queue="mediaflow:queue:compose"} 0.0' in metrics


async def test_auth_is_required(client):
    assert_problem(await client.get("/v1/jobs"), 401, "unauthorized")
    bad = await client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert_problem(bad, 401, "unauthorized")
    assert bad.headers["www-authenticate"].startswith("Bearer")
    # ?access_token= is only accepted by the SSE route (EventSource cannot send headers)
    assert_problem(await client.get("/v1/jobs?access_token=key-alice"), 401, "unauthorized")


async def test_routing_errors_are_problems(client):
    assert_problem(await client.get("/nope"), 404, "not_found")
    assert_problem(await client.delete("/v1/jobs", headers=ALICE), 405, "method_not_allowed")
    assert_problem(await client.get("/v1/jobs/j_missing", headers=ALICE), 404, "job_not_found")


async def test_bad_job_bodies(client, media):
    post = lambda body, **kw: client.post("/v1/jobs", headers=ALICE, **kw)  # noqa: E731
    malformed = await client.post(
        "/v1/jobs", headers={**ALICE, "Content-Type": "application/json"}, content=b'{"type": "probe", '
    )
    assert_problem(malformed, 400, "malformed_json")
    assert_problem(await post(None, json={"input": {}}), 422, "invalid_request")  # no type
    assert_problem(await post(None, json=[1, 2]), 422, "invalid_request")
    assert_problem(
        await post(None, json={"type": "probe", "input": {"media_id": "m_x"}, "extra": 1}), 422, "invalid_request"
    )
    assert_problem(await post(None, json={"type": "juggle", "input": {"media_id": "m_x"}}), 422, "unknown_job_type")
    assert_problem(await post(None, json={"type": "probe", "input": {"media_id": "m_unknown"}}), 404, "media_not_found")
    assert_problem(await post(None, json={"type": "probe"}), 422, "input_required")
    assert_problem(
        await post(None, json={"type": "probe", "input": {"media_id": "a", "path": "/b"}}), 422, "invalid_input"
    )
    # URL inputs: the SSRF policy refuses the cluster's own addresses (more in test_url_inputs.py)
    assert_problem(
        await post(None, json={"type": "transcribe", "input": {"url": "http://127.0.0.1:6379/a.mp3"}}),
        422,
        "url_not_allowed",
    )
    invalid = await post(
        None,
        json={
            "type": "transcribe",
            "input": {"path": str(media / "jfk.flac")},
            "options": {"task": "sing", "captions": {"max_lines": 9}},
        },
    )
    body = assert_problem(invalid, 422, "invalid_options")
    assert {e["loc"] for e in body["errors"]} >= {"task", "captions.max_lines"}
    assert_problem(await post(None, json={"type": "compose", "options": {"items": []}}), 422, "invalid_options")
    assert_problem(
        await post(None, json={"type": "compose", "options": {"items": [{"kind": "video", "media_id": "m_nothere"}]}}),
        404,
        "media_not_found",
    )
    bad_key = await client.post(
        "/v1/jobs",
        headers={**ALICE, "Idempotency-Key": "has space"},
        json={"type": "probe", "input": {"path": str(media / "jfk.flac")}},
    )
    assert_problem(bad_key, 422, "invalid_idempotency_key")


async def test_path_inputs_stay_inside_allowed_roots(client, media, tmp_path):
    def post(path):
        return client.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"path": path}})

    ok = await post(str(media / "jfk.flac"))
    assert ok.status_code == 202, ok.text
    assert ok.json()["input"] == {"path": str((media / "jfk.flac").resolve())}
    assert_problem(await post(str(media / ".." / "conftest.py")), 403, "path_not_allowed")
    assert_problem(await post(f"{media}/../../../etc/passwd"), 403, "path_not_allowed")
    assert_problem(await post("/etc/passwd"), 403, "path_not_allowed")
    assert_problem(await post("fixtures/media/jfk.flac"), 403, "path_not_allowed")  # relative
    assert_problem(await post(str(media / "missing.wav")), 404, "path_not_found")
    # a symlink inside an allowed root that points outside it is refused
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"RIFF")
    link = media / f"escape-{os.getpid()}.wav"
    link.symlink_to(outside)
    try:
        assert_problem(await post(str(link)), 403, "path_not_allowed")
    finally:
        link.unlink()


async def test_upload_media_and_probe_fallback(client, media, tmp_path):
    response = await upload(client, media / "grid_bbaf2n.mp4")
    assert response.status_code == 201, response.text
    m = response.json()
    assert m["id"].startswith("m_") and m["filename"] == "grid_bbaf2n.mp4"
    assert m["size"] == (media / "grid_bbaf2n.mp4").stat().st_size
    assert m["probed_by"] == "gateway"  # no compositor listens on the configured gRPC target
    assert {s["kind"] for s in m["streams"]} == {"video", "audio"}
    assert 2.5 < m["duration"] < 3.5
    assert (await client.get(f"/v1/media/{m['id']}", headers=ALICE)).json() == m
    assert_problem(await client.get(f"/v1/media/{m['id']}", headers=BOB), 404, "media_not_found")

    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    assert_problem(await upload(client, text), 415, "unsupported_media")
    assert_problem(await client.post("/v1/media", headers=ALICE, content=b"raw"), 415, "multipart_required")
    assert_problem(await client.post("/v1/media", headers=ALICE, files={"other": (None, "x")}), 422, "file_required")
    # nothing of the refused uploads is left behind
    uploads = tmp_path / "storage" / ".uploads"
    assert not list(uploads.glob("*"))


async def test_oversize_upload_is_413(redis, gw_settings, media):
    small = gw_settings.model_copy(update={"max_upload_bytes": 200_000})
    async with running_gateway(small) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        big = media / "sonnet001_librivox.mp3"
        assert big.stat().st_size > 400_000
        body = assert_problem(await upload(client, big), 413, "payload_too_large")  # declared length
        assert body["limit"] == 200_000

        async def chunked():  # no Content-Length: the limit is enforced while streaming
            boundary = b"xyz"
            yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n'
            for _ in range(20):
                yield b"\0" * 65536
            yield b"\r\n--" + boundary + b"--\r\n"

        multipart = {**ALICE, "Content-Type": "multipart/form-data; boundary=xyz"}
        streamed = await client.post("/v1/media", headers=multipart, content=chunked())
        assert_problem(streamed, 413, "payload_too_large")
        ok = await upload(client, media / "grid_bbaf2n.mp4")  # under the limit
        assert ok.status_code == 201


async def test_tenants_are_isolated(client, media):
    m = (await upload(client, media / "jfk.flac")).json()
    assert_problem(
        await client.post("/v1/jobs", headers=BOB, json={"type": "probe", "input": {"media_id": m["id"]}}),
        404,
        "media_not_found",
    )
    job = (await client.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": m["id"]}})).json()
    assert job["input"]["media_id"] == m["id"] and job["input"]["storage_key"].startswith(f"media/{m['id']}/")
    for method, path in (
        ("GET", f"/v1/jobs/{job['id']}"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ("POST", f"/v1/jobs/{job['id']}/retry"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
        ("GET", f"/v1/jobs/{job['id']}/artifacts/output.mp4"),
    ):
        assert_problem(await client.request(method, path, headers=BOB), 404, "job_not_found")
    assert (await client.get("/v1/jobs", headers=BOB)).json() == {"jobs": [], "next_cursor": None}
    assert_problem(
        await client.get(f"/v1/jobs/{job['id']}/artifacts/output.mp4", headers=ALICE), 404, "artifact_not_found"
    )


async def test_submit_get_list_cancel_retry(client, media):
    path = str(media / "jfk.flac")
    created = await client.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"path": path}})
    assert created.status_code == 202
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["queue"] == "mediaflow:queue:compose"
    assert job["max_attempts"] == 3 and job["options"] == {}
    assert "tenant" not in job and "traceparent" not in job
    assert (await client.get(f"/v1/jobs/{job['id']}", headers=ALICE)).json() == job

    transcribe = (
        await client.post(
            "/v1/jobs",
            headers=ALICE,
            json={"type": "transcribe", "input": {"path": path}, "options": {"language": "en", "formats": ["srt"]}},
        )
    ).json()
    assert transcribe["queue"] == "mediaflow:queue:transcribe"
    assert transcribe["options"]["formats"] == ["srt"] and transcribe["options"]["captions"]["max_lines"] == 2

    cancelled = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE)
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    assert_problem(await client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE), 409, "job_finished")
    assert_problem(await client.post(f"/v1/jobs/{transcribe['id']}/retry", headers=ALICE), 409, "not_retryable")
    retried = await client.post(f"/v1/jobs/{job['id']}/retry", headers=ALICE)
    assert retried.status_code == 202 and retried.json()["state"] == "queued"

    listed = (await client.get("/v1/jobs", headers=ALICE)).json()
    assert [j["id"] for j in listed["jobs"]] == [transcribe["id"], job["id"]]
    by_type = (await client.get("/v1/jobs?type=transcribe", headers=ALICE)).json()
    assert [j["id"] for j in by_type["jobs"]] == [transcribe["id"]]
    assert_problem(await client.get("/v1/jobs?state=sleeping", headers=ALICE), 422, "invalid_request")
    assert_problem(await client.get("/v1/jobs?cursor=zzz", headers=ALICE), 422, "invalid_cursor")


async def test_cursor_pagination(client, media):
    body = {"type": "probe", "input": {"path": str(media / "jfk.flac")}}
    ids = [(await client.post("/v1/jobs", headers=ALICE, json=body)).json()["id"] for _ in range(7)]
    seen, cursor = [], None
    while True:
        page = (
            await client.get("/v1/jobs", headers=ALICE, params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        ).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    queued = (await client.get("/v1/jobs", headers=ALICE, params={"state": "queued", "limit": 200})).json()
    assert len(queued["jobs"]) == 7


async def test_idempotency_key_returns_the_same_job(client, media, redis):
    body = {"type": "probe", "input": {"path": str(media / "jfk.flac")}}
    first = await client.post("/v1/jobs", headers={**ALICE, "Idempotency-Key": "abc-1"}, json=body)
    again = await client.post("/v1/jobs", headers={**ALICE, "Idempotency-Key": "abc-1"}, json=body)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    # the same key from another tenant is another job
    other = await client.post("/v1/jobs", headers={**BOB, "Idempotency-Key": "abc-1"}, json=body)
    assert other.json()["id"] != first.json()["id"]
    assert await redis.zcard("mediaflow:queue:compose") == 2
    # the same key with a different body is an error, not a silent replay of the first job
    changed = {"type": "probe", "input": {"path": str(media / "jfk_talk.mp4")}}
    reused = await client.post("/v1/jobs", headers={**ALICE, "Idempotency-Key": "abc-1"}, json=changed)
    assert_problem(reused, 422, "idempotency_key_reused")
    assert await redis.zcard("mediaflow:queue:compose") == 2


async def test_batch_partial_success(client, media, redis):
    m = (await upload(client, media / "jfk.flac")).json()
    items = [
        {"media_id": m["id"]},
        {"media_id": "m_missing"},
        {"path": "/etc/passwd"},
        {"media_id": m["id"], "extra": 1},
        {"path": str(media / "jfk.flac")},
    ]
    template = {"type": "transcribe", "options": {"language": "en"}}
    response = await client.post("/v1/batches", headers=ALICE, json={"items": items, "template": template})
    assert response.status_code == 202, response.text
    result = response.json()
    assert [a["index"] for a in result["accepted"]] == [0, 4]
    assert [(r["index"], r["code"]) for r in result["rejected"]] == [
        (1, "media_not_found"),
        (2, "path_not_allowed"),
        (3, "invalid_request"),
    ]
    for accepted in result["accepted"]:
        job = (await client.get(f"/v1/jobs/{accepted['job_id']}", headers=ALICE)).json()
        assert job["state"] == "queued" and job["batch_id"] == result["id"] and job["options"]["language"] == "en"
    assert await redis.zcard("mediaflow:queue:transcribe") == 2
    none_ok = await client.post("/v1/batches", headers=ALICE, json={"items": [{"x": 1}], "template": template})
    assert assert_problem(none_ok, 422, "batch_rejected")["rejected"][0]["code"] == "invalid_request"
    empty = {"items": [], "template": template}
    assert_problem(await client.post("/v1/batches", headers=ALICE, json=empty), 422, "batch_empty")
    too_many = await client.post("/v1/batches", headers=ALICE, json={"items": items[:1] * 501, "template": template})
    assert_problem(too_many, 413, "batch_too_large")


async def test_media_list_pages_newest_first_per_tenant(client, media, redis):
    ids = [(await upload(client, media / "jfk.flac", name=f"clip-{i}.flac")).json()["id"] for i in range(3)]
    first = (await client.get("/v1/media", headers=ALICE, params={"limit": 2})).json()
    assert [m["id"] for m in first["media"]] == ids[::-1][:2] and first["next_cursor"] == ids[1]
    assert first["media"][0]["filename"] == "clip-2.flac" and "key" not in first["media"][0]
    rest = (await client.get("/v1/media", headers=ALICE, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [m["id"] for m in rest["media"]] == [ids[0]] and rest["next_cursor"] is None
    assert (await client.get("/v1/media", headers=BOB)).json() == {"media": [], "next_cursor": None}
    assert (await client.delete(f"/v1/media/{ids[1]}", headers=ALICE)).status_code == 204
    assert [m["id"] for m in (await client.get("/v1/media", headers=ALICE)).json()["media"]] == [ids[2], ids[0]]
    assert not await redis.zscore("mediaflow:uploads:alice", ids[1])
    bad = await client.get("/v1/media", headers=ALICE, params={"cursor": "nope"})
    assert_problem(bad, 422, "invalid_cursor")


async def test_internal_job_types_are_not_submittable(client, media):
    """`enroll` and `relabel` jobs are made by the speakers routes, never by a client."""
    m = (await upload(client, media / "jfk.flac")).json()
    for body in (
        {"type": "enroll", "input": {"media_id": m["id"]}, "options": {"speaker_id": "v_x"}},
        {"type": "relabel", "options": {"job_id": "j_x", "names": {"SPEAKER_00": "Ann"}}},
    ):
        refused = assert_problem(await client.post("/v1/jobs", headers=ALICE, json=body), 422, "unknown_job_type")
        assert "transcribe, compose, caption, probe" in refused["detail"]
