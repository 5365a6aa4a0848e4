"""Scaling, end to end without a cluster: jobs are enqueued by the real Dispatcher on a real Valkey, each
rendered ScaledObject's queue is measured the way KEDA's redis scaler does it (its Lua script), and the
replica count KEDA + the HPA would settle on is computed from the rendered trigger settings. A change of
queue names, routing or chart values that breaks scaling fails here."""

from __future__ import annotations

import math
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
        ((5, 3, 1), {TRANSCRIBER: 3, COMPOSITOR: 2, HEAVY: 1}),
        ((30, 40, 9), {TRANSCRIBER: 4, COMPOSITOR: 6, HEAVY: 2}),
    ],  # capped at maxReplicaCount
    "gpu": [
        ((0, 0, 0), {TRANSCRIBER: 0, COMPOSITOR: 0, HEAVY: 0}),  # GPU pools scale to zero
        ((1, 1, 0), {TRANSCRIBER: 1, COMPOSITOR: 1, HEAVY: 0}),
        ((5, 3, 1), {TRANSCRIBER: 3, COMPOSITOR: 2, HEAVY: 1}),
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
    assert (await replicas(redis, gpu))[TRANSCRIBER] == 2
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
    assert (await replicas(redis, manifests))[TRANSCRIBER] == 2, "the 4th does: ceil(4 / listLength 2)"


def test_replica_formula() -> None:
    """The KEDA/HPA arithmetic above, on its own: activation, ceil, bounds."""
    trigger = RedisTrigger("q", list_length=3, activation=2, min_replicas=0, max_replicas=5)
    assert [trigger.desired_replicas(n) for n in (0, 2, 3, 4, 6, 7, 100)] == [0, 0, 1, 2, 2, 3, 5]
    warm = RedisTrigger("q", list_length=3, activation=2, min_replicas=2, max_replicas=5)
    assert [warm.desired_replicas(n) for n in (0, 2, 9)] == [2, 2, 3]
