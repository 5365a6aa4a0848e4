"""Response shapes for the OpenAPI document (the routes render records with Job.public())."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from mediaflow.common.jobs.model import Artifact, JobError, JobState, JobType


class JobResource(BaseModel):
    id: str
    type: JobType
    state: JobState
    progress: float
    stage: str
    message: str
    queue: str
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


class BatchRejection(BaseModel):
    index: int
    code: str
    message: str
    status: int


class BatchResult(BaseModel):
    accepted: list[JobResource]
    rejected: list[BatchRejection]


class WorkerInfo(BaseModel):
    id: str
    queue: str
    host: str
    pid: int
    heartbeat_age_s: float
    jobs: list[str]  # the caller's own jobs among those the worker holds
    busy: int  # how many jobs the worker holds (any tenant)
    draining: bool


class QueueStats(BaseModel):
    name: str
    queued: int
    running: int
    deferred: int
    succeeded: int
    failed: int
    workers: list[WorkerInfo]


class QueuesResponse(BaseModel):
    queues: list[QueueStats]
    window_s: int
