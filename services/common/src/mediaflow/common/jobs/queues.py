"""Queue policy: which queue (worker pool) runs a job, its time limit, its ARQ function name, the
backoff of its retries, and its place in the queue (priority)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..settings import Settings
from .keys import COMPOSE_HEAVY_QUEUE, COMPOSE_QUEUE, TRANSCRIBE_QUEUE, arq_lease
from .model import JobType, Priority

# One ARQ function per job type; the worker pool that owns the queue registers it.
FUNCTION_FOR_TYPE: dict[JobType, str] = {
    JobType.transcribe: "transcribe",
    JobType.compose: "compose",
    JobType.caption: "caption",
    JobType.probe: "probe",
    JobType.enroll: "enroll",
    JobType.relabel: "relabel",
}


def is_heavy(options: dict[str, Any], settings: Settings) -> bool:
    items = options.get("items") or []
    resolution = str((options.get("output") or {}).get("resolution", "1920x1080"))
    try:
        height = int(resolution.lower().split("x")[1])
    except (IndexError, ValueError):
        height = 1080
    if len(items) > settings.heavy_items:
        return True
    return height >= 2160 and len(items) > settings.heavy_4k_items


def queue_for(job_type: JobType, options: dict[str, Any], settings: Settings) -> str:
    if job_type in (JobType.transcribe, JobType.enroll, JobType.relabel):  # the speaker models live there
        return TRANSCRIBE_QUEUE
    if job_type == JobType.compose:
        return COMPOSE_HEAVY_QUEUE if is_heavy(options, settings) else COMPOSE_QUEUE
    # caption parents and probes are short coordination jobs on the compose pool
    return COMPOSE_QUEUE


def timeout_for(job_type: JobType, settings: Settings) -> int:
    return {
        JobType.transcribe: settings.transcribe_timeout,
        JobType.compose: settings.compose_timeout,
        JobType.caption: settings.transcribe_timeout + settings.compose_timeout,
        JobType.probe: settings.probe_timeout,
        JobType.enroll: settings.probe_timeout,
        JobType.relabel: settings.probe_timeout,
    }[job_type]


def retry_delay(
    job_type: JobType, attempt: int, settings: Settings, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds before the retry of a job whose attempt number `attempt` (1 = its first) failed retryably:
    exponential, d = min(max, base * 2**(attempt-1)), with jitter - a random time in [d/2, d] - from
    the second retry on, so retries of jobs that failed together spread out (the first waits exactly
    `base`). Base and max per job type: `retry_base_by_type` / `retry_max_by_type`, else the defaults."""
    base = settings.retry_base_by_type.get(job_type.value, settings.retry_base_seconds)
    cap = settings.retry_max_by_type.get(job_type.value, settings.retry_max_seconds)
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 62))
    if attempt <= 1:
        return round(ceiling, 1)
    return round(uniform(ceiling / 2, ceiling), 1)


# ---- priority ------------------------------------------------------------------------------------
# A queue is ARQ's sorted set: a worker takes the lowest scores that are <= now (ms). A job's score is
# the time it became ready minus a boost of 2, 1 or 0 times B (high, normal, low; B =
# MEDIAFLOW_PRIORITY_AGING_SECONDS): a high job goes before normal work that has waited less than B,
# and normal work that has waited longer than B goes before any high job submitted now - waiting ages
# work, so nothing starves (low work likewise, within 2B). No boost is negative, so a ready job's score
# is never in the future and an idle worker starts even low work at once; only deferred jobs (retries
# waiting out their backoff) have future scores, which is how /v1/queues tells them apart.
# The score also carries the priority: a multiple of 4 plus the priority's rank (0 high, 1 normal,
# 2 low), so whoever reads the queue knows when an entry became ready from its score alone.
PRIORITY_AGING_DEFAULT: float = Settings.model_fields["priority_aging_seconds"].default
RANKS: dict[Priority, int] = {Priority.high: 0, Priority.normal: 1, Priority.low: 2}
_BY_RANK = {rank: priority for priority, rank in RANKS.items()}


def boost_ms(priority: Priority, aging_s: float) -> int:
    """How far (ms, a multiple of 4) the priority moves a job ahead of arrival order: (2 - rank) * B."""
    return (2 - RANKS[priority]) * round(aging_s * 250) * 4


def _at(ms: int, priority: Priority) -> int:
    # 2..7 ms before `ms`: due already when the enqueue lands, even for a worker whose clock reads `ms`
    return ms - ms % 4 - 4 + RANKS[priority]


def queue_score(priority: Priority, ready_ms: int, aging_s: float) -> int:
    """The queue score of a job of `priority` that is ready at `ready_ms` (ms since the epoch)."""
    return _at(ready_ms - boost_ms(priority, aging_s), priority)


def deferred_score(priority: Priority, due_ms: int) -> int:
    """The score of a job waiting until `due_ms` (a retry's backoff): not boosted, or it would be due
    before its time. Once it is due, a worker adds the boost (runtime/arq_worker.py, PROMOTE_SCRIPT); until
    then the entry is also in the queue's deferred index with the same score, which tells readers it is
    not boosted (read_score's `boosted`)."""
    return _at(due_ms, priority)


def read_score(score: float, aging_s: float, *, boosted: bool = True) -> tuple[Priority, float]:
    """The priority of a ready queue entry and when it became ready (s since the epoch), from its score.
    `boosted=False` for a retry whose backoff is over but which no worker has promoted yet (its score
    still equals its entry in the queue's deferred index): it became ready at its score.
    (A score we did not write reads as low priority, ready at its score.)"""
    whole = int(score)
    priority = _BY_RANK.get(whole % 4, Priority.low)
    boost = boost_ms(priority, aging_s) if boosted else 0
    return priority, (whole - whole % 4 + 4 + boost) / 1000


# When the oldest job of a queue that no worker holds became ready (ms), read_score's sum done in Lua
# over the due entries (KEYS[1]: the queue, KEYS[2]: its deferred index; ARGV[1]: now, ms). The queue's
# order is not the order of waiting (boosts differ by up to 2B), so it reads on from the lowest score
# until a score is no earlier than the best ready time found (no later entry became ready before its
# score), passing over held entries (a lease, ARGV[2] .. id). After ARGV[3] entries it stops and
# answers a lower bound: the last score read. Returns false when nothing waits.
OLDEST_WAITING_SCRIPT = """
local best, offset, limit = false, 0, tonumber(ARGV[3])
while offset < limit do
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', offset, 64)
  for i = 1, #page, 2 do
    local id, score = page[i], tonumber(page[i + 1])
    if best and score >= best then return best end
    if redis.call('EXISTS', ARGV[2] .. id) == 0 then
      local boost = tonumber(ARGV[4 + score % 4]) or 0
      if tonumber(redis.call('ZSCORE', KEYS[2], id)) == score then boost = 0 end
      local ready = score - score % 4 + 4 + boost
      if not best or ready < best then best = ready end
    end
  end
  if #page < 128 then return best end
  offset = offset + 64
  if offset >= limit then
    local last = tonumber(page[#page])
    if not best or last < best then best = last end
  end
end
return best
"""
OLDEST_SCAN = 1024  # entries OLDEST_WAITING_SCRIPT reads at most


def oldest_waiting_args(now_ms: int, aging_s: float) -> list[str | int]:
    """OLDEST_WAITING_SCRIPT's ARGV: the time, the lease prefix, the scan bound, the boosts by rank."""
    return [now_ms, arq_lease(""), OLDEST_SCAN, *(boost_ms(p, aging_s) for p in sorted(RANKS, key=RANKS.__getitem__))]
