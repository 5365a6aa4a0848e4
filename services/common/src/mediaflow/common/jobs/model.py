"""The job and media resources, and the job state machine (docs/design.md, "Job states")."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr


class JobType(StrEnum):
    transcribe = "transcribe"
    compose = "compose"
    caption = "caption"
    probe = "probe"  # media metadata read by the compositor's worker
    enroll = "enroll"  # a named voice print from a clip (speakers registry), on the transcriber
    relabel = "relabel"  # a transcript's speakers renamed, its captions rewritten without ASR


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"


class Priority(StrEnum):
    """Which queued work a worker takes first (jobs/queues.py `queue_score`: high overtakes normal work
    that waited less than MEDIAFLOW_PRIORITY_AGING_SECONDS, and so on; nothing starves)."""

    high = "high"
    normal = "normal"
    low = "low"


TERMINAL = frozenset({JobState.succeeded, JobState.failed, JobState.cancelled})

# Allowed transitions; every transition appends a `state` event.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.queued: frozenset({JobState.running, JobState.cancelling, JobState.cancelled, JobState.failed}),
    JobState.running: frozenset(
        {JobState.succeeded, JobState.failed, JobState.cancelling, JobState.cancelled, JobState.queued}
    ),  # running -> queued: requeued by a draining worker
    JobState.cancelling: frozenset({JobState.cancelled, JobState.succeeded, JobState.failed}),
    JobState.succeeded: frozenset(),
    JobState.failed: frozenset({JobState.queued}),  # retry
    JobState.cancelled: frozenset({JobState.queued}),  # retry
}


def can_transition(src: JobState, dst: JobState) -> bool:
    return dst in TRANSITIONS[src]


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobError(BaseModel):
    code: str
    message: str
    retryable: bool = False


class Artifact(BaseModel):
    name: str
    size: int
    content_type: str
    url: str = ""


class Job(BaseModel):
    id: str
    type: JobType
    state: JobState = JobState.queued
    progress: float = 0.0
    stage: str = ""
    message: str = ""
    queue: str = ""
    priority: Priority = Priority.normal
    attempt: int = 0
    max_attempts: int = 3
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    input: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    error: JobError | None = None
    parent_id: str | None = None
    children: list[str] = Field(default_factory=list)
    webhook_url: str | None = None  # notified (signed) when the job ends
    batch_id: str | None = None  # the batch that made it (jobs/batches.py)
    # internal: never rendered to clients
    tenant: str = Field(default="default", exclude=True)
    traceparent: str | None = Field(default=None, exclude=True)
    # The record bytes this object was read from or written as (set by the store): a version
    # token, so a later write can compare-and-set without reading the record again.
    _stored: bytes | None = PrivateAttr(default=None)

    @classmethod
    def from_stored(cls, raw: bytes) -> Job:
        job = cls.model_validate_json(raw)
        job._stored = raw
        return job

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def internal_json(self) -> str:
        """Serialised with the internal fields, for the store."""
        data = self.model_dump(mode="json")
        data["tenant"], data["traceparent"] = self.tenant, self.traceparent
        return json.dumps(data, separators=(",", ":"))

    def public(self, base_url: str = "") -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for artifact in data["artifacts"]:
            artifact["url"] = f"{base_url}/v1/jobs/{self.id}/artifacts/{artifact['name']}"
        return data


class Media(BaseModel):
    id: str
    tenant: str = Field(default="default", exclude=True)
    filename: str = ""
    content_type: str = ""
    size: int = 0
    duration: float | None = None
    format: str = ""
    streams: list[dict[str, Any]] = Field(default_factory=list)
    key: str = ""  # storage key of the bytes
    probed_by: str = ""  # who read the metadata: "compositor" (gRPC Probe) or "gateway" (fallback)
    created_at: datetime = Field(default_factory=utcnow)

    def internal_json(self) -> str:
        data = self.model_dump(mode="json")
        data["tenant"] = self.tenant
        return json.dumps(data, separators=(",", ":"))
