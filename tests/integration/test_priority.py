"""Job priority end to end (docs/api.md, "Priority"): `"priority"` on POST /v1/jobs, honoured by real
ARQ workers on a real Valkey. High work overtakes queued normal work, normal work that has waited
longer than the aging bound is no longer overtaken (no starvation), a retry keeps its priority, caption
steps inherit theirs, and /v1/queues and /v1/status count right with every priority and a deferred retry."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import ALICE, assert_problem, running_gateway, wait_terminal
from job_support import in_process_worker

from mediaflow.common.errors import MediaflowError
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.keys import COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import JobType, Priority
from mediaflow.common.jobs.queues import read_score
from mediaflow.common.runtime.context import JobContext
from mediaflow.common.settings import Settings
from mediaflow.common.workflows.caption import run_caption

FLAKY = "jfk_talk.mp4"  # probes of this file fail retryably on their first attempt
CLI = os.path.join(os.path.dirname(sys.executable), "mediaflow")


class Probes:
    """The worker's `probe` handler for these tests: records which job started when, holds every job
    until `gate` opens, then for `hold_s`."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.started: list[tuple[str, float]] = []
        self.gate = asyncio.Event()
        self.hold_s = hold_s

    async def probe(self, ctx: JobContext) -> dict[str, Any]:
        if ctx.job.input.get("path", "").endswith(FLAKY) and ctx.job.attempt == 1:
            raise MediaflowError("flaky on purpose", code="flaky", retryable=True)
        self.started.append((ctx.job.id, time.time()))
        await self.gate.wait()
        await asyncio.sleep(self.hold_s)
        return {}

    def order(self) -> list[str]:
        return [job_id for job_id, _ in self.started]

    async def wait_started(self, job_id: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while job_id not in self.order():
            assert time.monotonic() < deadline, f"{job_id} never started; started: {self.order()}"
            await asyncio.sleep(0.02)


class Api:
    def __init__(self, client: httpx.AsyncClient, media: Path) -> None:
        self.client, self.media = client, media

    async def submit(
        self, priority: str | None = None, name: str = "jfk.flac", job_type: str = "probe"
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": job_type, "input": {"path": str(self.media / name)}}
        if priority is not None:
            body["priority"] = priority
        reply = await self.client.post("/v1/jobs", json=body, headers=ALICE)
        assert reply.status_code == 202, reply.text
        job: dict[str, Any] = reply.json()
        return job

    async def queue(self, name: str = COMPOSE_QUEUE) -> dict[str, Any]:
        reply = await self.client.get("/v1/queues", headers=ALICE)
        assert reply.status_code == 200, reply.text
        [queue] = [q for q in reply.json()["queues"] if q["name"] == name]
        return queue  # type: ignore[no-any-return]

    async def status(self) -> dict[str, Any]:
        reply = await self.client.get("/v1/status", headers=ALICE)
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]


@pytest.fixture
async def api(settings: Settings, media: Path) -> AsyncIterator[Api]:
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield Api(client, media)


async def eventually(check: Any, what: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)
    return value


async def test_high_priority_overtakes_queued_normal_work(redis, settings, media) -> None:
    probes = Probes()
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        api = Api(client, media)
        async with in_process_worker(settings, {JobType.probe: probes.probe}):
            busy = await api.submit()  # takes the worker's one slot until the gate opens
            await probes.wait_started(busy["id"])
            low = await api.submit("low")
            normal = [await api.submit("normal") for _ in range(3)] + [await api.submit()]  # the default
            high = await api.submit("high")
            assert [j["priority"] for j in (busy, low, *normal, high)] == ["normal", "low", *["normal"] * 4, "high"]
            probes.gate.set()
            for job in (busy, low, *normal, high):
                assert (await wait_terminal(client, job["id"]))["state"] == "succeeded"
        # the high job ran next, then the normal ones in the order they came, the low one last
        assert probes.order() == [busy["id"], high["id"], *(j["id"] for j in normal), low["id"]]
        shown = (await client.get(f"/v1/jobs/{high['id']}", headers=ALICE)).json()
        assert shown["priority"] == "high"


async def test_normal_work_is_not_starved_by_a_stream_of_high_work(redis, settings, media) -> None:
    bound = 1.0  # MEDIAFLOW_PRIORITY_AGING_SECONDS for this test
    settings = settings.model_copy(update={"priority_aging_seconds": bound})
    probes = Probes(hold_s=0.15)
    probes.gate.set()
    submitted: dict[str, tuple[float, float]] = {}  # job id -> (before the POST, after its answer)

    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        api = Api(client, media)

        async def submit(priority: str) -> str:
            before = time.time()
            job_id: str = (await api.submit(priority))["id"]
            submitted[job_id] = (before, time.time())
            return job_id

        async with in_process_worker(settings, {JobType.probe: probes.probe}):
            highs = [await submit("high") for _ in range(3)]  # a backlog of high work...
            waiting = await submit("normal")
            # ...and more keeps coming, twice as fast as the worker gets through it, for 4 s: with strict
            # priority the normal job would wait until the stream dries up
            until = time.time() + 4.0
            while time.time() < until:
                highs.append(await submit("high"))
                await asyncio.sleep(0.07)
            for job_id in [*highs, waiting]:
                await wait_terminal(client, job_id, timeout=60)

    started = dict(probes.started)
    since = submitted[waiting][1]  # the normal job waits at the latest from here
    overtook = [h for h in highs if submitted[h][1] < submitted[waiting][0] + bound - 0.1]
    came_later = [h for h in highs if submitted[h][0] > since + bound + 0.1]
    assert len(came_later) > 10 and len(overtook) > 5  # the stream went on well past the bound
    # high work that came within the bound overtook it; nothing that came after the bound did
    assert all(started[h] < started[waiting] for h in overtook)
    assert all(started[h] > started[waiting] for h in came_later)
    # so it waited at most the bound plus the work queued ahead of it by then
    assert started[waiting] - since < bound + (len(overtook) + 4) * (probes.hold_s + 0.15)
    assert started[waiting] < until  # while high work still kept coming


async def test_priority_is_checked_kept_on_retry_and_inherited_by_caption_steps(redis, settings, media, api) -> None:
    for bad in ("urgent", "HIGH", ""):
        body = {"type": "probe", "priority": bad, "input": {"path": str(media / "jfk.flac")}}
        problem = assert_problem(await api.client.post("/v1/jobs", json=body, headers=ALICE), 422, "invalid_priority")
        assert repr(bad) in problem["detail"] and "high, normal, low" in problem["detail"]
    body = {"type": "probe", "priority": 1, "input": {"path": str(media / "jfk.flac")}}
    assert_problem(await api.client.post("/v1/jobs", json=body, headers=ALICE), 422, "invalid_request")
    assert await redis.zcard(COMPOSE_QUEUE) == 0  # nothing was queued

    # a retry keeps the job's priority: on the record, and in the queue's order
    async def fails(ctx: JobContext) -> dict[str, Any]:
        raise MediaflowError("no", code="broken", retryable=False)

    async with in_process_worker(settings, {JobType.probe: fails}):
        job = await api.submit("low")
        assert (await wait_terminal(api.client, job["id"]))["state"] == "failed"
    reply = await api.client.post(f"/v1/jobs/{job['id']}/retry", headers=ALICE)
    assert reply.status_code == 202 and reply.json()["priority"] == "low"
    assert read_score(await redis.zscore(COMPOSE_QUEUE, job["id"]), settings.priority_aging_seconds)[0] == Priority.low
    await api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE)  # (the next worker has no probe handler)

    # caption steps queue with the caption job's priority (the real parent handler submits them)
    async with in_process_worker(settings, {JobType.caption: run_caption}):
        parent = await api.submit("high", name="jfk_talk.mp4", job_type="caption")

        async def child() -> str | None:
            children = (await api.client.get(f"/v1/jobs/{parent['id']}", headers=ALICE)).json()["children"]
            return children[0] if children else None

        child_id = await eventually(child, "the transcribe step was never queued")
    step = (await api.client.get(f"/v1/jobs/{child_id}", headers=ALICE)).json()
    assert step["priority"] == "high" and step["parent_id"] == parent["id"]
    score = await redis.zscore(TRANSCRIBE_QUEUE, child_id)
    assert read_score(score, settings.priority_aging_seconds)[0] == Priority.high
    await api.client.post(f"/v1/jobs/{parent['id']}/cancel", headers=ALICE)

    # the CLI's submit commands pass --priority on (the gateway checks it, as above)
    code, output = await cli(
        str(api.client.base_url), "probe", "--detach", "--priority", "low", str(media / "jfk.flac")
    )
    assert code == 0, output
    job_id = output.strip().splitlines()[-1]
    assert (await api.client.get(f"/v1/jobs/{job_id}", headers=ALICE)).json()["priority"] == "low"


async def cli(url: str, *args: str) -> tuple[int, str]:
    """The `mediaflow` command against the test's gateway (a subprocess: this loop keeps serving)."""
    env = {**os.environ, "MEDIAFLOW_URL": url, "MEDIAFLOW_API_KEY": "key-alice", "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, stdout.decode()


async def test_counts_are_right_with_every_priority_and_a_deferred_retry(redis, settings, media, api) -> None:
    aging = settings.priority_aging_seconds
    settings = settings.model_copy(update={"retry_base_seconds": 5.0})
    # No transcriber: boosted jobs are ready at once and count as queued, not deferred, and a high one
    # does not look like it has waited for minutes (the boost is not waiting time): no stall yet.
    for priority in ("high", "low"):
        await api.submit(priority, job_type="transcribe")
    transcribe = await api.queue(TRANSCRIBE_QUEUE)
    assert (transcribe["queued"], transcribe["deferred"], transcribe["running"]) == (2, 0, 0)
    assert (await api.status())["status"] == "ok"

    probes = Probes()
    async with in_process_worker(settings, {JobType.probe: probes.probe}) as worker:
        flaky = await api.submit("high", name=FLAKY)  # fails retryably at once, is retried in 5 s
        failed_at = time.time()
        retrying = await eventually(
            lambda: _job_if(api, flaky["id"], lambda j: j["state"] == "queued" and "retrying" in j["message"]),
            "the flaky job was never retried",
        )
        assert retrying["priority"] == "high"
        busy = await api.submit("normal")
        await probes.wait_started(busy["id"])
        waiting = {p: [(await api.submit(p))["id"] for _ in range(2)] for p in ("high", "normal", "low")}

        async def counted() -> dict[str, Any] | None:
            queue = await api.queue()
            return queue if queue["running"] == 1 else None  # the registry shows the busy job within 1 s

        queue = await eventually(counted, "the busy job never showed as running")
        assert time.time() - failed_at < 4.5, "too slow to see the retry deferred"
        assert (queue["queued"], queue["running"], queue["deferred"]) == (6, 1, 1)
        assert (await api.status())["status"] == "ok"

        # the backoff ends: the retry counts as queued, and the worker gives it its priority back
        async def promoted() -> bool:
            score = await redis.zscore(COMPOSE_QUEUE, flaky["id"])
            return score is not None and score < (time.time() - aging) * 1000

        await eventually(promoted, "the retry never got its priority back", timeout=15)
        priority, ready = read_score(await redis.zscore(COMPOSE_QUEUE, flaky["id"]), aging)
        assert priority == Priority.high and 4.5 < ready - failed_at < 6.5  # ready when its backoff ended
        assert await redis.zcard(keys.deferred(COMPOSE_QUEUE)) == 0
        queue = await api.queue()
        assert (queue["queued"], queue["running"], queue["deferred"]) == (7, 1, 0)
        assert [(w["id"], w["busy"]) for w in queue["workers"]] == [(worker.worker_id, 1)]

        probes.gate.set()
        for job_id in [flaky["id"], *(j for ids in waiting.values() for j in ids)]:
            assert (await wait_terminal(api.client, job_id))["state"] == "succeeded"
    # the retried high job waits behind the high work that was ready before it, and ahead of the rest
    assert probes.order() == [busy["id"], *waiting["high"], flaky["id"], *waiting["normal"], *waiting["low"]]
    queue = await api.queue()
    assert (queue["queued"], queue["running"], queue["deferred"], queue["succeeded"]) == (0, 0, 0, 8)


async def _job_if(api: Api, job_id: str, check: Any) -> dict[str, Any] | None:
    job: dict[str, Any] = (await api.client.get(f"/v1/jobs/{job_id}", headers=ALICE)).json()
    return job if check(job) else None


async def test_a_worker_claims_past_a_head_of_running_jobs(redis, settings, media, api) -> None:
    # ARQ keeps running jobs on the queue: with more of them than the claim reads at once (64), the best
    # due job is further down and an idle worker must still find it
    crowd = Probes()
    held = 70
    async with in_process_worker(
        settings.model_copy(update={"worker_concurrency": held}), {JobType.probe: crowd.probe}
    ):
        ids = [(await api.submit("high"))["id"] for _ in range(held)]
        for job_id in ids:
            await crowd.wait_started(job_id)
        idle = Probes()
        idle.gate.set()
        async with in_process_worker(settings, {JobType.probe: idle.probe}):
            late = await api.submit("low")
            assert (await wait_terminal(api.client, late["id"]))["state"] == "succeeded"
        assert idle.order() == [late["id"]]
        crowd.gate.set()
        for job_id in ids:
            assert (await wait_terminal(api.client, job_id))["state"] == "succeeded"
