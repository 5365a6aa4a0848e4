"""Search (GET /v1/search) end to end: a real clip transcribed by the real model on a real transcriber
worker (in process), a real gateway over HTTP, the index in a real Valkey. Tenant isolation, paging,
deletion and expiry, and problems for bad queries."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest
from gateway_support import ALICE, BOB, assert_problem, running_gateway, upload, wait_terminal
from job_support import in_process_worker

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.jobs.search import WALK_MAX, SearchIndex, highlight, query_terms
from mediaflow.common.jobs.store import JobStore
from mediaflow.common.runtime.sweeper import Sweeper
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.common.workflows import WORKFLOWS
from mediaflow.transcriber import jobs as transcriber_jobs
from mediaflow.transcriber.model import get_models


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})  # uploads are probed by the gateway


@pytest.fixture
async def client(redis, gw_settings):
    async with running_gateway(gw_settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        yield c


async def search(client: httpx.AsyncClient, q: str, headers: dict[str, str] = ALICE, **params: object) -> dict:
    response = await client.get("/v1/search", params={"q": q, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def search_keys(redis) -> list[bytes]:
    return sorted([k async for k in redis.scan_iter(match=keys.PREFIX + "search:*") if not k.endswith(b":n")])


async def test_search_finds_the_moment_in_a_real_transcript(client, gw_settings, redis, media):
    await asyncio.to_thread(get_models, gw_settings)  # as the worker's startup does: not in the event loop
    worker = in_process_worker(gw_settings, {JobType.transcribe: transcriber_jobs.transcribe}, keys.TRANSCRIBE_QUEUE)
    async with worker:
        uploaded = (await upload(client, media / "jfk.flac")).json()
        done = []
        for source in ({"path": str(media / "jfk.flac")}, {"media_id": uploaded["id"]}):  # the older one first
            body = {"type": "transcribe", "input": source, "options": {"language": "en"}}
            submitted = await client.post("/v1/jobs", json=body, headers=ALICE)
            assert submitted.status_code == 202, submitted.text
            done.append(await wait_terminal(client, submitted.json()["id"], timeout=300))
    older, job = done
    assert older["state"] == job["state"] == "succeeded", done
    transcript = (await client.get(f"/v1/jobs/{job['id']}/artifacts/transcript.json", headers=ALICE)).json()
    holding = [s for s in transcript["segments"] if "country" in s["text"].lower()]
    assert holding, transcript["segments"]

    found = await search(client, "Country")  # the newest transcript first
    assert [h["job_id"] for h in found["hits"]] == [job["id"]] * len(holding) + [older["id"]] * len(holding)
    assert found["next_cursor"] is None
    hit = found["hits"][0]
    assert hit["job_id"] == job["id"] and hit["media_id"] == uploaded["id"] and hit["speaker"] is None
    assert (hit["start"], hit["end"]) == (round(holding[0]["start"], 3), round(holding[0]["end"], 3))
    assert 0 <= hit["start"] < hit["end"] <= 11.5  # the clip is 11 s
    assert "<mark>country</mark>" in hit["snippet"]
    assert hit["snippet"].replace("<mark>", "").replace("</mark>", "") == holding[0]["text"]

    # Every word of the query, in any order and case, in one segment; a word the clip lacks: nothing.
    both = await search(client, "COUNTRY ask")
    assert both["hits"] and all(
        "<mark>country</mark>" in h["snippet"] and "<mark>ask</mark>" in h["snippet"].lower() for h in both["hits"]
    )
    assert (await search(client, "country zebra"))["hits"] == []
    assert (await search(client, "zebra"))["hits"] == []

    assert found["hits"][-1]["media_id"] is None  # the older job named a path, not uploaded media

    # Pages of one hit: the cursor goes on where the last page stopped, and ends with null.
    words = (await search(client, "you"))["hits"]
    assert len(words) >= 2
    paged, cursor = [], None
    while True:
        page = await search(client, "you", limit=1, **({"cursor": cursor} if cursor else {}))
        paged += page["hits"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == words

    # Another tenant finds nothing of alice's.
    assert (await search(client, "country", headers=BOB))["hits"] == []

    # A deleted job leaves search, and its index entries go with it.
    assert (await client.delete(f"/v1/jobs/{job['id']}", headers=ALICE)).status_code == 204
    assert {h["job_id"] for h in (await search(client, "country"))["hits"]} == {older["id"]}
    assert not await redis.exists(keys.search_doc(job["id"]))
    assert (await client.delete(f"/v1/jobs/{older['id']}", headers=ALICE)).status_code == 204
    assert (await search(client, "country"))["hits"] == []
    assert await search_keys(redis) == []


@dataclass
class Seg:
    start: float
    end: float
    text: str
    speaker: str | None = None


async def test_expired_jobs_leave_the_index(redis, settings):
    """Retention (the sweeper) removes a transcript from the index as DELETE does; a job whose record
    is gone is never indexed (a worker finishing after the deletion)."""
    dispatcher = Dispatcher(redis)
    job, _ = await dispatcher.submit(
        Job(id=new_job_id(), type=JobType.transcribe, queue=keys.TRANSCRIBE_QUEUE, tenant="alice")
    )
    job = await dispatcher.store.transition(job.id, JobState.running)
    job = await dispatcher.store.transition(job.id, JobState.succeeded)
    index = SearchIndex(dispatcher.store)
    assert await index.index_transcript("alice", job.id, [Seg(1.0, 2.5, "Fellow Americans, ask not", "SPEAKER_00")])
    hits, _ = await index.search("alice", "americans")
    assert [(h.job_id, h.start, h.end, h.speaker) for h in hits] == [(job.id, 1.0, 2.5, "SPEAKER_00")]

    expiring = settings.model_copy(update={"retention_seconds": 60})
    sweeper = Sweeper(JobStore(redis), open_storage(settings.storage_url), expiring, WORKFLOWS, "test")
    assert (await sweeper.sweep(now=time.time() + 3600)).jobs_expired >= 1
    assert await index.search("alice", "americans") == ([], None)
    assert not await redis.exists(keys.search_doc(job.id), keys.search_term("alice", "americans"))
    assert not await index.index_transcript("alice", job.id, [Seg(0.0, 1.0, "americans")])
    assert not await redis.exists(keys.search_doc(job.id))


async def zinter_calls(redis) -> int:
    return (await redis.info("commandstats")).get("cmdstat_zinter", {}).get("calls", 0)


async def test_words_that_rarely_meet_are_found_past_the_walk(redis):
    """Two words each in thousands of segments but together in a few old ones: the walk gives up after
    WALK_MAX members and the server's ZINTER finds them; pages still go on in order."""
    store = JobStore(redis)
    index = SearchIndex(store)
    newer, older = [], []
    for kept in (older, newer):
        job = Job(id=new_job_id(), type=JobType.transcribe, state=JobState.succeeded, tenant="alice")
        await redis.set(keys.job(job.id), job.internal_json())
        words = ["alpha", "beta"] * (WALK_MAX + 200)
        segments = [Seg(float(i), i + 0.5, f"{word} {i}") for i, word in enumerate(words)]
        segments[5] = Seg(5.0, 5.5, "alpha and beta, early")
        segments[-1] = Seg(9999.0, 9999.5, "beta meets alpha at the end")
        assert await index.index_transcript("alice", job.id, segments)
        kept += [(job.id, 5.0), (job.id, 9999.0)]
    intersections = await zinter_calls(redis)
    paged, cursor = [], None
    while True:
        hits, cursor = await index.search("alice", "alpha beta", limit=3, cursor=cursor)
        paged += [(h.job_id, h.start) for h in hits]
        if cursor is None:
            break
    assert paged == newer + older
    assert await zinter_calls(redis) == intersections + 2  # one per page
    assert all("<mark>alpha</mark>" in h.snippet for h in (await index.search("alice", "ALPHA beta"))[0])


def test_terms_fold_case_and_accents_and_highlight_escapes_html() -> None:
    assert query_terms("Café  CAFE naïve 漢字") == ["cafe", "naive", "漢", "字"]
    assert len(query_terms("हिन्दी भाषा")) == 2  # vowel signs are part of a word
    assert highlight("नमस्ते हिन्दी", query_terms("हिन्दी")) == "नमस्ते <mark>हिन्दी</mark>"
    assert highlight("<b>Café</b> & cafes", ["cafe"]) == "&lt;b&gt;<mark>Café</mark>&lt;/b&gt; &amp; cafes"


async def test_bad_queries_are_problems(client):
    assert_problem(await client.get("/v1/search", params={"q": "?! …"}, headers=ALICE), 422, "invalid_query")
    assert_problem(await client.get("/v1/search", params={"q": "a" * 201}, headers=ALICE), 422, "invalid_query")
    many = " ".join(f"w{i}" for i in range(11))
    assert_problem(await client.get("/v1/search", params={"q": many}, headers=ALICE), 422, "invalid_query")
    bad_cursor = await client.get("/v1/search", params={"q": "x", "cursor": "abc"}, headers=ALICE)
    assert_problem(bad_cursor, 422, "invalid_cursor")
    missing = await client.get("/v1/search", headers=ALICE)
    assert missing.status_code == 422 and missing.json()["code"]
    too_many = await client.get("/v1/search", params={"q": "x", "limit": 101}, headers=ALICE)
    assert too_many.status_code == 422 and too_many.json()["code"]
    assert_problem(await client.get("/v1/search", params={"q": "x"}), 401, "unauthorized")
