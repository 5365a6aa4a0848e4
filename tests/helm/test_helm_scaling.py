"""Scaling, end to end without a cluster: jobs are enqueued by the real Dispatcher on a real Valkey, each
rendered ScaledObject's queue is measured the way KEDA's redis scaler does it (its Lua script), and the
replica count KEDA + the HPA would settle on is computed from the rendered trigger settings. A change of
queue names, routing or chart values that breaks scaling fails here."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from helm_support import RELEASE, VALUE_SETS, Manifest, by_kind
from redis.asyncio import Redis

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.model import Job, JobType
from mediaflow.common.jobs.queues import queue_for
from mediaflow.common.settings import Settings

# pkg/scalers/redis_scaler.go (KEDA v2.20): the length of `listName` by its Redis type.
KEDA_LENGTH_SCRIPT = """
local listType = redis.call('type', KEYS[1])["ok"]
if listType == "list" then return redis.call('llen', KEYS[1])
elseif listType == "set" then return redis.call('scard', KEYS[1])
elseif listType == "zset" then return redis.call('zcard', KEYS[1])
elseif listType == "hash" then return redis.call('hlen', KEYS[1])
else return 0 end
"""

TRANSCRIBER, COMPOSITOR, HEAVY = (f"{RELEASE}-transcriber", f"{RELEASE}-compositor", f"{RELEASE}-compositor-heavy")


@pytest.fixture
def rendered(render: Callable[..., list[Manifest]]) -> dict[str, list[Manifest]]:
    """Fresh copies of every value set's manifests: a chart test edits the session's copies in place
    (to check that the schema validators catch typos)."""
    return {name: render(*values) for name, values in VALUE_SETS.items()}


@dataclass(frozen=True)
class RedisTrigger:
    list_name: str
    list_length: int
    activation: int
    min_replicas: int
    max_replicas: int

    @classmethod
    def from_scaled_object(cls, scaled: Manifest) -> RedisTrigger:
        spec = scaled["spec"]
        [trigger] = spec["triggers"]
        meta = trigger["metadata"]
        return cls(
            meta["listName"],
            int(meta["listLength"]),
            int(meta.get("activationListLength", "0")),
            spec.get("minReplicaCount", 0),
            spec.get("maxReplicaCount", 100),
        )

    def desired_replicas(self, length: int) -> int:
        """KEDA: the scaler is active when length > activationListLength; inactive with minReplicaCount 0
        means zero replicas. Otherwise the HPA it manages (AverageValue target listLength) asks for
        ceil(length / listLength), within [max(minReplicaCount, 1), maxReplicaCount]."""
        if length <= self.activation and self.min_replicas == 0:
            return 0
        wanted = math.ceil(length / self.list_length)
        return min(max(wanted, self.min_replicas, 1), self.max_replicas)


def triggers(manifests: list[Manifest]) -> dict[str, RedisTrigger]:
    return {name: RedisTrigger.from_scaled_object(m) for name, m in by_kind(manifests, "ScaledObject").items()}


async def measure(redis: Redis, trigger: RedisTrigger) -> int:
    return int(await redis.eval(KEDA_LENGTH_SCRIPT, 1, trigger.list_name))


async def replicas(redis: Redis, manifests: list[Manifest]) -> dict[str, int]:
    return {name: t.desired_replicas(await measure(redis, t)) for name, t in triggers(manifests).items()}


def make_job(job_type: JobType, options: dict[str, Any]) -> Job:
    # routed exactly like the gateway routes a submission
    return Job(
        id=new_job_id(),
        type=job_type,
        options=options,
        input={"media_id": "m_test"},
        queue=queue_for(job_type, options, Settings()),
        tenant="scaling",
    )


def compose_options(items: int, resolution: str = "1920x1080") -> dict[str, Any]:
    return {"output": {"resolution": resolution}, "items": [{"kind": "video", "media_id": "m_x"}] * items}


async def submit(redis: Redis, transcribe: int = 0, compose: int = 0, heavy: int = 0) -> list[Job]:
    jobs = (
        [make_job(JobType.transcribe, {}) for _ in range(transcribe)]
        + [make_job(JobType.compose, compose_options(3)) for _ in range(compose)]
        + [make_job(JobType.compose, compose_options(45)) for _ in range(heavy)]
    )
    await Dispatcher(redis).submit_many(jobs)
    return jobs


# expected replicas per value set: {value set: [(transcribe, compose, heavy jobs), {deployment: replicas}]}
EXPECTED = {
    "default": [
        ((0, 0, 0), {TRANSCRIBER: 1, COMPOSITOR: 1, HEAVY: 0}),  # CPU pools stay warm
        ((5, 3, 1), {TRANSCRIBER: 4, COMPOSITOR: 3, HEAVY: 1}),  # one pod per job (concurrency 1), up to max
        ((30, 40, 9), {TRANSCRIBER: 4, COMPOSITOR: 6, HEAVY: 2}),
    ],  # capped at maxReplicaCount
    "gpu": [
        ((0, 0, 0), {TRANSCRIBER: 0, COMPOSITOR: 0, HEAVY: 0}),  # GPU pools scale to zero
        ((1, 1, 0), {TRANSCRIBER: 1, COMPOSITOR: 1, HEAVY: 0}),
        ((5, 3, 1), {TRANSCRIBER: 5, COMPOSITOR: 3, HEAVY: 1}),
        ((30, 40, 9), {TRANSCRIBER: 8, COMPOSITOR: 8, HEAVY: 2}),
    ],
}


@pytest.mark.parametrize("value_set", sorted(EXPECTED))
async def test_replicas_follow_the_queues(redis: Redis, rendered: dict[str, list[Manifest]], value_set: str) -> None:
    manifests = rendered[value_set]
    submitted = (0, 0, 0)
    for counts, expected in EXPECTED[value_set]:
        more = tuple(want - have for want, have in zip(counts, submitted, strict=True))
        await submit(redis, *more)
        submitted = counts
        assert await replicas(redis, manifests) == expected, f"{value_set} with {counts} jobs queued"


async def test_queues_are_sorted_sets_measured_with_zcard(redis: Redis, rendered: dict[str, list[Manifest]]) -> None:
    await submit(redis, transcribe=2, compose=1, heavy=1)
    for trigger in triggers(rendered["default"]).values():
        assert await redis.type(trigger.list_name) == b"zset", trigger.list_name
        assert await measure(redis, trigger) == await redis.zcard(trigger.list_name) > 0


async def test_every_queued_job_is_seen_by_exactly_one_scaler(
    redis: Redis, rendered: dict[str, list[Manifest]]
) -> None:
    """No queue the code uses is left without a scaler (its jobs would wait for ever on a GPU pool at zero)."""
    for value_set in VALUE_SETS:
        await redis.flushall()
        jobs = await submit(redis, transcribe=4, compose=3, heavy=2)
        seen = [await measure(redis, t) for t in triggers(rendered[value_set]).values()]
        assert sum(seen) == len(jobs), value_set
        assert sorted(seen) == [2, 3, 4]


async def test_cancelled_jobs_stop_counting(redis: Redis, rendered: dict[str, list[Manifest]]) -> None:
    jobs = await submit(redis, transcribe=3)
    gpu = rendered["gpu"]
    assert (await replicas(redis, gpu))[TRANSCRIBER] == 3
    dispatcher = Dispatcher(redis)
    for job in jobs:
        await dispatcher.cancel(job.id)
    assert (await replicas(redis, gpu))[TRANSCRIBER] == 0


async def test_activation_threshold_holds_a_gpu_pool_at_zero(
    redis: Redis, render: Callable[..., list[Manifest]]
) -> None:
    manifests = render(*VALUE_SETS["gpu"], set_values={"workers.transcriber.keda.activationListLength": "3"})
    await submit(redis, transcribe=3)
    assert (await replicas(redis, manifests))[TRANSCRIBER] == 0, "3 jobs do not wake the pool"
    await submit(redis, transcribe=1)
    assert (await replicas(redis, manifests))[TRANSCRIBER] == 4, "the 4th does: ceil(4 / listLength 1)"


def test_replica_formula() -> None:
    """The KEDA/HPA arithmetic above, on its own: activation, ceil, bounds."""
    trigger = RedisTrigger("q", list_length=3, activation=2, min_replicas=0, max_replicas=5)
    assert [trigger.desired_replicas(n) for n in (0, 2, 3, 4, 6, 7, 100)] == [0, 0, 1, 2, 2, 3, 5]
    warm = RedisTrigger("q", list_length=3, activation=2, min_replicas=2, max_replicas=5)
    assert [warm.desired_replicas(n) for n in (0, 2, 9)] == [2, 2, 3]


# --- busy pools over time: KEDA, the HPA's scale-down behaviour, the ReplicaSet and the workers' drains ---


@dataclass
class Pod:
    jobs: dict[str, float]  # job id -> when it ends
    drain_until: float | None = None  # SIGTERMed: the worker's job completion wait ends then


@dataclass
class PoolRun:
    """What a simulated pool went through."""

    requeues: dict[str, int]  # job id -> times a drain put it back on the queue
    busy_scale_ins: int  # HPA decisions that asked for fewer slots than jobs were running
    fewest_spare_slots: int  # min over decisions of (replicas x concurrency - running jobs)
    scale_ins: int
    max_replicas: int
    finished_at: float

    def __str__(self) -> str:
        again = sorted((n for n in self.requeues.values() if n), reverse=True)
        return (
            f"finished at {self.finished_at:.0f} s, max replicas {self.max_replicas}, scale-ins {self.scale_ins}, "
            f"decisions below the running jobs {self.busy_scale_ins}, fewest spare slots {self.fewest_spare_slots}, "
            f"requeues per requeued job {again or 0}"
        )


async def simulate_pool(
    redis: Redis,
    trigger: RedisTrigger,
    scaled: Manifest,
    *,
    concurrency: int,
    job_completion_wait: float,
    durations: list[float],
    tick: float = 5.0,
    hpa_sync: float = 15.0,
    horizon: float = 4 * 3600.0,
) -> PoolRun:
    """One pool, from a burst of `durations` jobs until its queue is empty. Jobs are enqueued by the real
    Dispatcher and claimed with the worker's own CLAIM_SCRIPT, so the queue KEDA measures holds exactly what
    it holds in production: a claimed job stays on it until it ends, a drained one stays on it too. Every
    `hpa_sync` seconds KEDA measures the queue and the HPA applies the ScaledObject's scale-down
    behaviour (stabilization window, pods per period). The ReplicaSet does not know which worker is busy:
    the victim of a scale-in is taken worst case, the busiest pod. A SIGTERMed worker keeps its jobs for
    `job_completion_wait`, then puts them back on the queue (attempts.py) and exits."""
    from mediaflow.common.jobs import keys
    from mediaflow.common.runtime.arq_worker import CLAIM_SCRIPT, claim_args, claim_keys

    claim = redis.register_script(CLAIM_SCRIPT)
    behaviour = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    window = behaviour["stabilizationWindowSeconds"]
    [policy] = behaviour["policies"]
    cooldown = scaled["spec"]["cooldownPeriod"]

    jobs = [make_job(JobType.transcribe, {}) for _ in durations]
    for job in jobs:
        job.queue = trigger.list_name
    await Dispatcher(redis).submit_many(jobs)
    duration = {job.id: d for job, d in zip(jobs, durations, strict=True)}
    requeues = dict.fromkeys(duration, 0)
    pods: list[Pod] = [Pod({}) for _ in range(trigger.min_replicas)]
    recommendations: list[tuple[float, int]] = []
    removals: list[float] = []
    idle_since: float | None = None
    run = PoolRun(requeues, 0, 1 << 30, 0, len(pods), 0.0)

    async def ends(job_id: str) -> None:  # the job's last write retires it from ARQ (retire() in attempts.py)
        await redis.zrem(trigger.list_name, job_id)
        await redis.delete(keys.arq_lease(job_id))

    now = 0.0
    while now < horizon:
        for pod in pods:
            for job_id, end in list(pod.jobs.items()):
                if end <= now:
                    del pod.jobs[job_id]
                    await ends(job_id)
        for pod in [p for p in pods if p.drain_until is not None]:
            if pod.jobs and now >= pod.drain_until:
                for job_id in pod.jobs:  # requeued: only the lease goes, the job stays on its queue
                    await redis.delete(keys.arq_lease(job_id))
                    requeues[job_id] += 1
                pod.jobs.clear()
            if not pod.jobs:
                pods.remove(pod)
        for pod in (p for p in pods if p.drain_until is None):
            while len(pod.jobs) < concurrency:
                args = claim_args(int(time.time() * 1000), 3_600_000, f"sim:{now}:{len(pod.jobs)}")
                got = await claim(keys=claim_keys(trigger.list_name), args=args)
                if not got:  # nothing left to claim
                    break
                job_id = got[0].decode()
                pod.jobs[job_id] = now + duration[job_id]  # a requeued job starts again from the start
        if now % hpa_sync == 0:
            serving = [p for p in pods if p.drain_until is None]
            running = sum(len(p.jobs) for p in pods)
            count = await measure(redis, trigger)
            wanted = trigger.desired_replicas(count)
            if count == 0 and trigger.min_replicas == 0:  # KEDA: to zero only after cooldownPeriod idle
                idle_since = now if idle_since is None else idle_since
                wanted = 0 if now - idle_since >= cooldown else max(1, len(serving))
            else:
                idle_since = None
                wanted = max(wanted, 1) if trigger.min_replicas == 0 else wanted
            recommendations = [(t, r) for t, r in recommendations if now - t < window] + [(now, wanted)]
            target = wanted
            if wanted < len(serving):  # the HPA scales in on the highest recommendation of the window
                target = max(r for _, r in recommendations)
                allowed = policy["value"] - sum(1 for t in removals if now - t < policy["periodSeconds"])
                target = max(target, len(serving) - max(allowed, 0)) if wanted > 0 else 0
            run.fewest_spare_slots = min(run.fewest_spare_slots, target * concurrency - running)
            if target * concurrency < running:
                run.busy_scale_ins += 1
            if target < len(serving):
                for victim in sorted(serving, key=lambda p: -len(p.jobs))[: len(serving) - target]:
                    victim.drain_until = now + job_completion_wait
                    removals.append(now)
                    run.scale_ins += 1
            pods += [Pod({}) for _ in range(target - len(serving))]
            run.max_replicas = max(run.max_replicas, len([p for p in pods if p.drain_until is None]))
        if not await redis.zcard(trigger.list_name) and not any(p.jobs for p in pods):
            run.finished_at = now
            return run
        now += tick
    raise AssertionError(f"the pool did not finish its {len(durations)} jobs in {horizon} s")


# a burst on one pool: long and short jobs, many of them longer than the drain's job completion wait
BURST = [600.0, 90.0, 300.0, 45.0, 900.0, 120.0, 30.0, 480.0, 200.0, 60.0, 750.0, 150.0, 40.0, 330.0, 75.0, 520.0]


def pool_settings(manifests: list[Manifest], name: str) -> tuple[int, int]:
    """(worker concurrency, job completion wait) of a pool, as its pods get them."""
    configmap = by_kind(manifests, "ConfigMap")[RELEASE]["data"]
    concurrency = int(
        by_kind(manifests, "ScaledObject")[name]["metadata"]["annotations"]["mediaflow.io/worker-concurrency"]
    )
    assert str(concurrency) == configmap["MEDIAFLOW_WORKER_CONCURRENCY"]
    return concurrency, int(configmap["MEDIAFLOW_JOB_COMPLETION_WAIT"])


@pytest.mark.parametrize("value_set", ["default", "gpu"])
async def test_a_busy_pool_is_never_scaled_below_its_running_jobs(
    redis: Redis, rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    """With the chart's values, no HPA decision asks for fewer slots than jobs are running, whichever pod
    the ReplicaSet picks. A scale-in only comes once a pod's worth of slots has been idle for the whole
    window; its victim may still be a busy pod (the ReplicaSet does not know), whose job is requeued
    once the drain's job completion wait is over (the next test: a wait as long as the jobs)."""
    manifests = rendered[value_set]
    trigger = triggers(manifests)[TRANSCRIBER]
    concurrency, wait = pool_settings(manifests, TRANSCRIBER)
    assert trigger.list_length == concurrency, "target jobs per replica = jobs one pod runs"
    scaled = by_kind(manifests, "ScaledObject")[TRANSCRIBER]
    run = await simulate_pool(
        redis, trigger, scaled, concurrency=concurrency, job_completion_wait=wait, durations=BURST
    )
    print(f"\n{value_set} (drain {wait} s): {run}")
    assert run.busy_scale_ins == 0 and run.fewest_spare_slots >= 0
    assert run.scale_ins > 0, "the burst does shrink the pool"


@pytest.mark.parametrize("value_set", ["default", "gpu"])
async def test_a_drain_as_long_as_the_jobs_requeues_none(
    redis: Redis, render: Callable[..., list[Manifest]], value_set: str
) -> None:
    """workers.jobCompletionWait at the longest job (docs/deploy.md, "Draining"): a scaled-in busy worker
    finishes its job, nothing is requeued, and the pod's grace period follows (test_helm_chart.py)."""
    longest = int(max(BURST))
    manifests = render(*VALUE_SETS[value_set], set_values={"workers.jobCompletionWait": str(longest)})
    trigger = triggers(manifests)[TRANSCRIBER]
    concurrency, wait = pool_settings(manifests, TRANSCRIBER)
    assert wait == longest
    scaled = by_kind(manifests, "ScaledObject")[TRANSCRIBER]
    run = await simulate_pool(
        redis, trigger, scaled, concurrency=concurrency, job_completion_wait=wait, durations=BURST
    )
    print(f"\n{value_set} (drain {wait} s): {run}")
    assert run.busy_scale_ins == 0 and run.fewest_spare_slots >= 0
    assert not any(run.requeues.values()), "a drained job is not requeued"


async def test_a_target_above_the_concurrency_scaled_busy_pods_in(
    redis: Redis, rendered: dict[str, list[Manifest]]
) -> None:
    """The bug of issue 11, for the record: listLength 2 with a worker concurrency of 1 asks for half the
    pods the running jobs hold, busy pods are SIGTERMed and their jobs requeued again and again. The chart
    now refuses such a listLength (test below)."""
    manifests = rendered["gpu"]
    concurrency, wait = pool_settings(manifests, TRANSCRIBER)
    trigger = dataclasses.replace(triggers(manifests)[TRANSCRIBER], list_length=2 * concurrency)
    scaled = by_kind(manifests, "ScaledObject")[TRANSCRIBER]
    run = await simulate_pool(
        redis, trigger, scaled, concurrency=concurrency, job_completion_wait=wait, durations=BURST
    )
    print(f"\nlistLength 2 (drain {wait} s): {run}")
    assert run.busy_scale_ins > 0 and run.fewest_spare_slots < 0
    assert any(run.requeues.values())


def test_a_list_length_above_the_concurrency_is_refused(helm: str) -> None:
    import subprocess

    from helm_support import CHART

    base = [helm, "template", RELEASE, str(CHART)]
    refused = subprocess.run([*base, "--set", "workers.transcriber.keda.listLength=2"], capture_output=True, text=True)
    assert refused.returncode != 0 and "more than the pool's worker concurrency 1" in refused.stderr
    more = ["--set", "workers.concurrency=2", "--set", "workers.transcriber.keda.listLength=2"]
    assert subprocess.run([*base, *more], capture_output=True, text=True).returncode == 0


def test_the_target_follows_each_pools_worker_concurrency(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(
        set_values={"workers.concurrency": "2", "workers.compositorHeavy.extraEnv.MEDIAFLOW_WORKER_CONCURRENCY": "3"}
    )
    assert {n: t.list_length for n, t in triggers(manifests).items()} == {TRANSCRIBER: 2, COMPOSITOR: 2, HEAVY: 3}
