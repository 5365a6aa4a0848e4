"""Routing: which queue (worker pool) runs a job, its time limit, and its ARQ function name."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..settings import Settings
from .keys import COMPOSE_HEAVY_QUEUE, COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from .model import JobType

# One ARQ function per job type; the worker pool that owns the queue registers it.
FUNCTION_FOR_TYPE: dict[JobType, str] = {
    JobType.transcribe: "transcribe",
    JobType.compose: "compose",
    JobType.caption: "caption",
    JobType.probe: "probe",
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
    if job_type == JobType.transcribe:
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
