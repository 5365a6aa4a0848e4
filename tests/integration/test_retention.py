"""Deletion, retention and the sweeper on a real Valkey, real files and (for the routes) real HTTP:
DELETE /v1/jobs/{id} and /v1/media/{id}, expiry by (tenant) retention, stuck parents, jobs whose
worker is gone, orphans, one sweep at a time, and the sweeper running inside real workers."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import pytest
from gateway_support import ALICE, BOB, assert_problem, running_compositor, running_gateway, upload, wait_terminal
from job_support import in_process_worker, wait_state

from mediaflow.common.errors import NotFound
from mediaflow.common.ids import new_job_id, new_media_id
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.family import add_child
from mediaflow.common.jobs.model import Job, JobError, JobState, JobType, Media
from mediaflow.common.jobs.retention import id_floor
from mediaflow.common.jobs.store import JobStore
from mediaflow.common.runtime.context import JobContext
from mediaflow.common.runtime.sweeper import SweepCounts, Sweeper
from mediaflow.common.settings import Settings
from mediaflow.common.storage import FileStorage, open_storage
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.compositor import jobs as compositor_jobs

LATER = 3600.0  # sweeps "an hour from now", so that everything made by a test is past a 60 s retention


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})


@pytest.fixture
async def client(redis, gw_settings):
    async with running_gateway(gw_settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        yield c


def storage_of(settings: Settings) -> FileStorage:
    storage = open_storage(settings.storage_url)
    assert isinstance(storage, FileStorage)
    return storage


def put(storage: FileStorage, key: str, data: bytes) -> None:
    with storage.writer(key) as fh:
        fh.write(data)


def sweeper(redis, settings: Settings, owner: str = "test") -> Sweeper:
    return Sweeper(JobStore(redis), open_storage(settings.storage_url), settings, WORKFLOWS, owner)


async def with_artifact(ctx: JobContext) -> dict[str, Any]:
    await ctx.write_artifact("note.txt", b"kept until deleted", "text/plain")
    return {"ok": True}


async def hold(ctx: JobContext) -> dict[str, Any]:
    """Runs until cancelled."""
    while True:
        await ctx.progress(0.5, "hold", "holding", force=True)
        ctx.check_cancelled()
        await asyncio.sleep(0.05)


def probe_job(tenant: str = "alice", **fields: Any) -> Job:
    return Job(
        id=fields.pop("id", None) or new_job_id(),
        type=fields.pop("type", JobType.probe),
        queue=fields.pop("queue", keys.COMPOSE_QUEUE),
        input=fields.pop("input", {"storage_key": "media/m_none/x.flac"}),
        tenant=tenant,
        **fields,
    )


def old_id(prefix: str, age: float) -> str:
    return id_floor(prefix, time.time() - age)[:-16] + "".join(secrets.choice("0123456789abcdef") for _ in range(16))


# ---- DELETE routes -------------------------------------------------------------------------------
async def test_delete_job_removes_record_events_index_and_artifacts(client, gw_settings, redis, media):
    async with running_compositor(gw_settings, {JobType.probe: with_artifact}):
        created = await client.post(
            "/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"path": str(media / "jfk.flac")}}
        )
        job = await wait_terminal(client, created.json()["id"])
    assert job["state"] == "succeeded" and [a["name"] for a in job["artifacts"]] == ["note.txt"]
    files = storage_of(gw_settings).path(keys.job_files(job["id"]))
    assert files.is_dir() and await redis.exists(keys.events(job["id"]))

    assert_problem(await client.delete(f"/v1/jobs/{job['id']}", headers=BOB), 404, "job_not_found")
    deleted = await client.delete(f"/v1/jobs/{job['id']}", headers=ALICE)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await client.get(f"/v1/jobs/{job['id']}", headers=ALICE), 404, "job_not_found")
    assert_problem(await client.delete(f"/v1/jobs/{job['id']}", headers=ALICE), 404, "job_not_found")
    assert not await redis.exists(keys.job(job["id"]), keys.events(job["id"]))
    assert await redis.zscore(keys.tenant_index("alice"), job["id"]) is None
    assert not files.exists()
    assert (await client.get("/v1/jobs", headers=ALICE)).json()["jobs"] == []


async def test_delete_running_job_cancels_it_first(client, gw_settings, redis, media):
    body = {"type": "probe", "input": {"path": str(media / "jfk.flac")}}
    async with running_compositor(gw_settings, {JobType.probe: hold}):
        job = (await client.post("/v1/jobs", headers=ALICE, json=body)).json()
        dispatcher = Dispatcher(redis)
        await wait_state(dispatcher, job["id"], {JobState.running}, timeout=20)
        asked = time.monotonic()
        assert (await client.delete(f"/v1/jobs/{job['id']}", headers=ALICE)).status_code == 204
        assert time.monotonic() - asked < 5.0  # it was cancelled, not waited out
        assert_problem(await client.get(f"/v1/jobs/{job['id']}", headers=ALICE), 404, "job_not_found")
        assert await redis.zscore(keys.COMPOSE_QUEUE, job["id"]) is None
        # The worker is free again: the next job runs (and is cancelled by its own delete).
        other = (await client.post("/v1/jobs", headers=ALICE, json=body)).json()
        await wait_state(dispatcher, other["id"], {JobState.running}, timeout=20)
        assert (await client.delete(f"/v1/jobs/{other['id']}", headers=ALICE)).status_code == 204


async def test_delete_caption_parent_deletes_its_children(client, gw_settings, redis):
    dispatcher = Dispatcher(redis)
    parent, _ = await dispatcher.submit(probe_job(type=JobType.caption, input={"media_id": "m_x", "storage_key": "k"}))
    children = [probe_job(type=JobType.transcribe, queue=keys.TRANSCRIBE_QUEUE, parent_id=parent.id) for _ in range(2)]
    for child in children:
        await dispatcher.submit_child(parent.id, child)
    storage = storage_of(gw_settings)
    for job_id in [parent.id, *(c.id for c in children)]:
        put(storage, keys.artifact(job_id, "x.txt"), b"")
    assert_problem(await client.delete(f"/v1/jobs/{parent.id}", headers=BOB), 404, "job_not_found")
    assert (await client.delete(f"/v1/jobs/{parent.id}", headers=ALICE)).status_code == 204
    for job_id in [parent.id, *(c.id for c in children)]:
        assert_problem(await client.get(f"/v1/jobs/{job_id}", headers=ALICE), 404, "job_not_found")
        assert not await redis.exists(keys.events(job_id), keys.arq_definition(job_id))
        assert await redis.zscore(keys.TRANSCRIBE_QUEUE, job_id) is None
        assert await redis.zscore(keys.COMPOSE_QUEUE, job_id) is None
    assert not await redis.exists(keys.tenant_index("alice"))


async def test_delete_media_is_409_while_a_live_job_names_it(client, gw_settings, redis, media):
    uploaded = (await upload(client, media / "jfk.flac")).json()
    media_dir = storage_of(gw_settings).path(keys.upload_prefix(uploaded["id"]))
    assert media_dir.is_dir()
    job = (
        await client.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": uploaded["id"]}})
    ).json()
    assert_problem(await client.delete(f"/v1/media/{uploaded['id']}", headers=BOB), 404, "media_not_found")
    in_use = assert_problem(await client.delete(f"/v1/media/{uploaded['id']}", headers=ALICE), 409, "media_in_use")
    assert job["id"] in in_use["detail"]
    # A compose timeline naming it holds it too.
    compose = {"type": "compose", "options": {"items": [{"kind": "video", "media_id": uploaded["id"]}]}}
    timeline = (await client.post("/v1/jobs", headers=ALICE, json=compose)).json()
    await client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE)
    assert (
        timeline["id"]
        in assert_problem(await client.delete(f"/v1/media/{uploaded['id']}", headers=ALICE), 409, "media_in_use")[
            "detail"
        ]
    )
    await client.post(f"/v1/jobs/{timeline['id']}/cancel", headers=ALICE)

    assert (await client.delete(f"/v1/media/{uploaded['id']}", headers=ALICE)).status_code == 204
    assert_problem(await client.get(f"/v1/media/{uploaded['id']}", headers=ALICE), 404, "media_not_found")
    assert_problem(
        await client.post("/v1/jobs", headers=ALICE, json={"type": "probe", "input": {"media_id": uploaded["id"]}}),
        404,
        "media_not_found",
    )
    assert not media_dir.exists() and not await redis.exists(keys.media(uploaded["id"]))
    assert_problem(await client.delete(f"/v1/media/{uploaded['id']}", headers=ALICE), 404, "media_not_found")


# ---- the sweeper ---------------------------------------------------------------------------------
async def test_sweep_expires_ended_jobs_and_unused_media_by_tenant_retention(redis, settings):
    settings = settings.model_copy(
        update={
            "retention_seconds": 60,
            "media_retention_seconds": 60,
            "tenant_retention": {"bob": 0},  # bob keeps his jobs for ever
            "tenant_media_retention": {"bob": 7200},
        }
    )
    dispatcher, storage = Dispatcher(redis), storage_of(settings)
    store = dispatcher.store
    medias = {
        name: Media(id=new_media_id(), tenant=t, key="") for name, t in (("a", "alice"), ("b", "bob"), ("l", "alice"))
    }
    for m in medias.values():
        m.key = keys.upload(m.id, "x.flac")
        put(storage, m.key, b"x")
        await store.put_media(m)
    ended = {}
    for tenant in ("alice", "bob"):
        job, _ = await dispatcher.submit(probe_job(tenant, input={"media_id": medias["a"].id}))
        put(storage, keys.artifact(job.id, "x.txt"), b"x")
        ended[tenant] = await dispatcher.cancel(job.id)
    live, _ = await dispatcher.submit(probe_job("alice", input={"media_id": medias["l"].id}))

    assert await sweeper(redis, settings).sweep() == SweepCounts()  # nothing is due yet
    counts = await sweeper(redis, settings).sweep(now=time.time() + LATER)
    assert counts.jobs_expired == 1 and counts.media_expired == 1
    with pytest.raises(NotFound):
        await store.get(ended["alice"].id)
    assert not await redis.exists(keys.events(ended["alice"].id))
    assert await redis.zscore(keys.tenant_index("alice"), ended["alice"].id) is None
    assert not storage.path(keys.job_files(ended["alice"].id)).exists()
    assert (await store.get(ended["bob"].id)).state == JobState.cancelled  # bob's: kept for ever
    assert storage.path(keys.job_files(ended["bob"].id)).is_dir()
    assert (await store.get(live.id)).state == JobState.queued  # live jobs never expire
    # alice's unused media went; media a live job names stays, and so does bob's (2 h).
    with pytest.raises(NotFound):
        await store.get_media(medias["a"].id)
    assert not storage.path(keys.upload_prefix(medias["a"].id)).exists()
    await store.get_media(medias["l"].id)
    await store.get_media(medias["b"].id)
    # Idempotent: a second sweep finds nothing more to do.
    again = await sweeper(redis, settings).sweep(now=time.time() + LATER)
    assert again.jobs_expired == again.media_expired == 0


async def test_sweep_expires_a_parent_with_its_children(redis, settings):
    settings = settings.model_copy(update={"retention_seconds": 60})
    dispatcher = Dispatcher(redis)
    parent, _ = await dispatcher.submit(probe_job(type=JobType.caption))
    child = probe_job(type=JobType.transcribe, queue=keys.TRANSCRIBE_QUEUE, parent_id=parent.id)
    await dispatcher.submit_child(parent.id, child)
    await dispatcher.cancel(parent.id)
    assert (await dispatcher.store.get(parent.id)).state == JobState.cancelled
    counts = await sweeper(redis, settings).sweep(now=time.time() + LATER)
    assert counts.jobs_expired == 2
    assert await dispatcher.store.get_many([parent.id, child.id]) == []


async def test_sweep_settles_stuck_parents(redis, settings):
    dispatcher = Dispatcher(redis)
    store = dispatcher.store
    stuck = {}
    for name in ("failed-child", "cancelling"):
        parent, _ = await dispatcher.submit(probe_job(type=JobType.caption))
        await store.transition(parent.id, JobState.running, attempt=1)
        child = probe_job(type=JobType.transcribe, queue=keys.TRANSCRIBE_QUEUE, parent_id=parent.id)
        await add_child(store, parent.id, child)
        await dispatcher.submit(child)
        if name == "failed-child":  # the child failed, but nobody moved the parent on (its worker died)
            await store.transition(child.id, JobState.failed, error=JobError(code="boom", message="it broke"))
        else:  # the parent is cancelling, its child ended without settling it
            await store.transition(parent.id, JobState.cancelling)
            await store.transition(child.id, JobState.running)
            await store.transition(child.id, JobState.succeeded)
        stuck[name] = parent.id

    assert (await sweeper(redis, settings).sweep()).parents_settled == 0  # the children only just ended
    counts = await sweeper(redis, settings).sweep(now=time.time() + 120)
    assert counts.parents_settled == 2
    failed = await store.get(stuck["failed-child"])
    assert failed.state == JobState.failed and failed.error is not None and failed.error.code == "boom"
    assert (await store.get(stuck["cancelling"])).state == JobState.cancelled


async def test_sweep_recovers_jobs_whose_worker_is_gone(redis, settings, media):
    storage = open_storage(settings.storage_url)
    storage.put_file("media/m_fixture/jfk.flac", media / "jfk.flac")
    dispatcher = Dispatcher(redis)
    store = dispatcher.store

    async def lost(attempt: int, state: JobState = JobState.running) -> Job:
        """A job its worker took and then lost, in a way that left it off its queue and without a lease."""
        job, _ = await dispatcher.submit(probe_job(input={"storage_key": "media/m_fixture/jfk.flac"}, max_attempts=2))
        await store.transition(job.id, JobState.running, attempt=attempt, worker="gone", started_at=job.created_at)
        if state == JobState.cancelling:
            await store.transition(job.id, JobState.cancelling)
        await redis.zrem(keys.COMPOSE_QUEUE, job.id)
        return job

    retried, exhausted, cancelling = await lost(1), await lost(2), await lost(1, JobState.cancelling)
    held, _ = await dispatcher.submit(probe_job(input={"storage_key": "media/m_fixture/jfk.flac"}))
    await store.transition(held.id, JobState.running, attempt=1, started_at=held.created_at)
    await redis.zrem(keys.COMPOSE_QUEUE, held.id)
    await redis.set(keys.arq_lease(held.id), "someone", px=60_000)  # a live lease: not ours to touch

    counts = await sweeper(redis, settings).sweep(now=time.time() + 120)
    assert (counts.jobs_requeued, counts.jobs_failed_lost, counts.jobs_cancelled_lost) == (1, 1, 1)
    again = await store.get(retried.id)
    assert again.state == JobState.queued and again.worker is None and again.attempt == 1
    assert await redis.zscore(keys.COMPOSE_QUEUE, retried.id) is not None
    gave_up = await store.get(exhausted.id)
    assert gave_up.state == JobState.failed and gave_up.error and gave_up.error.code == "max_attempts_exceeded"
    assert (await store.get(cancelling.id)).state == JobState.cancelled
    assert (await store.get(held.id)).state == JobState.running
    # The requeued job runs to the end on a real worker, as its second attempt.
    async with in_process_worker(settings, {JobType.probe: compositor_jobs.probe}):
        done = await wait_state(dispatcher, retried.id, {JobState.succeeded, JobState.failed}, timeout=30)
    assert done.state == JobState.succeeded and done.attempt == 2


async def test_sweep_removes_orphans(redis, settings):
    storage = storage_of(settings)
    dispatcher = Dispatcher(redis)
    kept, _ = await dispatcher.submit(probe_job())
    put(storage, keys.artifact(kept.id, "x.txt"), b"x")
    gone_job, young_job, gone_media = old_id("j", 3600), old_id("j", 5), old_id("m", 3600)
    for key in (keys.artifact(gone_job, "x.txt"), keys.artifact(young_job, "x.txt"), keys.upload(gone_media, "a.flac")):
        put(storage, key, b"x")
    await redis.xadd(keys.events(gone_job), {"event": "log", "data": "{}"})
    await redis.zadd(keys.tenant_index("alice"), {gone_job: 0})
    await redis.zadd(keys.tenant_index("carol"), {gone_job: 0})

    counts = await sweeper(redis, settings).sweep()
    assert (counts.orphan_streams, counts.orphan_index_entries, counts.orphan_files) == (1, 2, 2)
    assert not storage.path(keys.job_files(gone_job)).exists()
    assert not storage.path(keys.upload_prefix(gone_media)).exists()
    assert storage.path(keys.job_files(young_job)).is_dir()  # too young to tell: kept for now
    assert storage.path(keys.job_files(kept.id)).is_dir()
    assert not await redis.exists(keys.events(gone_job), keys.tenant_index("carol"))
    assert await redis.zrange(keys.tenant_index("alice"), 0, -1) == [kept.id.encode()]
    assert await redis.exists(keys.events(kept.id))


async def test_one_sweep_per_interval_across_replicas(redis, settings):
    settings = settings.model_copy(update={"sweep_interval_seconds": 30})
    replicas = [sweeper(redis, settings, owner=f"replica-{i}") for i in range(4)]
    results = await asyncio.gather(*(r.sweep_if_due() for r in replicas))
    assert sum(r is not None for r in results) == 1
    assert await asyncio.gather(*(r.sweep_if_due() for r in replicas)) == [None] * 4
    stats = await redis.hgetall(keys.SWEEPER)
    assert stats[b"runs"] == b"1" and float(stats[b"last_run_at"]) > 0 and b"jobs_expired" in stats


async def test_workers_sweep_and_the_gateway_counts_it(redis, gw_settings, client, media):
    settings = gw_settings.model_copy(update={"sweep_interval_seconds": 0.3, "retention_seconds": 0.5})
    body = {"type": "probe", "input": {"path": str(media / "jfk.flac")}}
    async with running_compositor(settings, {JobType.probe: with_artifact}):
        job = await wait_terminal(client, (await client.post("/v1/jobs", headers=ALICE, json=body)).json()["id"])
        assert job["state"] == "succeeded"
        deadline = time.monotonic() + 20
        while (await client.get(f"/v1/jobs/{job['id']}", headers=ALICE)).status_code != 404:
            assert time.monotonic() < deadline, "the worker's sweeper never expired the job"
            await asyncio.sleep(0.1)
    assert not storage_of(settings).path(keys.job_files(job["id"])).exists()
    metrics = (await client.get("/metrics")).text
    assert 'mediaflow_sweeper{counter="runs"}' in metrics
    expired = next(
        line for line in metrics.splitlines() if line.startswith('mediaflow_sweeper{counter="jobs_expired"}')
    )
    assert float(expired.split()[-1]) >= 1


def test_tenant_retention_is_parsed_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAFLOW_TENANT_RETENTION", "alice:3600, bob:0,team:eu:60")
    monkeypatch.setenv("MEDIAFLOW_TENANT_MEDIA_RETENTION", "alice:60")
    monkeypatch.setenv("MEDIAFLOW_RETENTION_SECONDS", "86400")
    parsed = Settings()
    assert parsed.tenant_retention == {"alice": 3600, "bob": 0, "team:eu": 60}
    assert parsed.tenant_media_retention == {"alice": 60} and parsed.retention_seconds == 86400
    assert parsed.media_retention_seconds == 7 * 24 * 3600 and parsed.sweep_interval_seconds == 60


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_storage_names_what_is_under_a_folder(backend: str, request: pytest.FixtureRequest, tmp_path) -> None:
    """The sweeper finds orphaned job folders by listing `jobs/` (both backends)."""
    url = request.getfixturevalue("s3_storage_url") if backend == "s3" else f"file://{tmp_path}"
    storage = open_storage(url)
    assert storage.names("jobs") == []
    for key in ("jobs/j_1/a.txt", "jobs/j_2/attempts/1/b.txt", "jobs/x.txt", "media/m_1/c.flac"):
        with storage.writer(key) as fh:
            fh.write(b"x")
    assert sorted(storage.names("jobs")) == ["j_1", "j_2", "x.txt"]
    assert storage.names("media") == ["m_1"] and storage.names("jobs/j_2/attempts") == ["1"]
    storage.delete_prefix("jobs/j_1")
    assert sorted(storage.names("jobs")) == ["j_2", "x.txt"]
