"""Response shapes for the OpenAPI document (the routes render records with Job.public())."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from mediaflow.common.jobs.model import Artifact, JobError, JobState, JobType, Priority


class JobResource(BaseModel):
    id: str
    type: JobType
    state: JobState
    progress: float
    stage: str
    message: str
    queue: str
    priority: Priority = Priority.normal
    attempt: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    options: dict[str, Any]
    input: dict[str, Any]
    result: dict[str, Any] | None
    artifacts: list[Artifact]
    error: JobError | None
    parent_id: str | None
    children: list[str]
    webhook_url: str | None = None


class JobList(BaseModel):
    jobs: list[JobResource]
    next_cursor: str | None


class WorkerInfo(BaseModel):
    id: str
    queue: str
    host: str
    pid: int
    model: str | None = None  # what the worker's registry entry says (transcribers: the ASR model)
    device: str | None = None  # cpu, cuda, ...
    metrics_url: str | None = None  # the worker's own Prometheus endpoint, when it serves one
    heartbeat_age_s: float
    jobs: list[str]  # the caller's own jobs among those the worker holds
    busy: int  # how many jobs the worker holds (any tenant)
    draining: bool
    info: dict[str, Any] = {}  # the rest of the registry entry (encoder, compute_type, grpc_port, ...)


class ThroughputPoint(BaseModel):
    minute: datetime  # the minute's start (UTC); the last one is the current, still filling
    succeeded: int
    failed: int


class QueueStats(BaseModel):
    name: str
    queued: int
    running: int
    deferred: int
    succeeded: int
    failed: int
    workers: list[WorkerInfo]
    throughput: list[ThroughputPoint] = []  # jobs ended per minute, the last 30 minutes, oldest first


class QueuesResponse(BaseModel):
    queues: list[QueueStats]
    window_s: int


class StatusProblem(BaseModel):
    code: str  # queue_stalled, worker_crashing, redis_unavailable, storage_unavailable, no_headroom
    queue: str | None = None  # the queue concerned (queue_stalled, worker_crashing)
    message: str
    since_s: float | None = None  # queue_stalled: how long jobs have waited with no worker
    count: int | None = None  # worker_crashing: the crashes counted in the window


class StatusResponse(BaseModel):
    status: Literal["ok", "degraded"]
    problems: list[StatusProblem]
