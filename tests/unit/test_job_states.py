"""The job state machine of design.md."""

from __future__ import annotations

import pytest

from mediaflow.common.jobs.keys import COMPOSE_HEAVY_QUEUE, COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import TERMINAL, JobState, JobType, can_transition
from mediaflow.common.jobs.queues import queue_for
from mediaflow.common.settings import Settings

S = JobState


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (S.queued, S.running),
        (S.running, S.succeeded),
        (S.running, S.failed),
        (S.queued, S.cancelled),
        (S.running, S.cancelling),
        (S.cancelling, S.cancelled),
        (S.failed, S.queued),
        (S.cancelled, S.queued),
    ],
)
def test_allowed(src: JobState, dst: JobState) -> None:
    assert can_transition(src, dst)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (S.succeeded, S.queued),
        (S.succeeded, S.running),
        (S.cancelled, S.running),
        (S.failed, S.succeeded),
        (S.queued, S.succeeded),
    ],
)
def test_forbidden(src: JobState, dst: JobState) -> None:
    assert not can_transition(src, dst)


def test_terminal_states() -> None:
    assert {S.succeeded, S.failed, S.cancelled} == TERMINAL


def test_routing_by_size() -> None:
    settings = Settings(heavy_items=40, heavy_4k_items=20)
    item = {"kind": "video", "media_id": "m_x"}
    assert queue_for(JobType.transcribe, {}, settings) == TRANSCRIBE_QUEUE
    assert queue_for(JobType.compose, {"items": [item] * 40}, settings) == COMPOSE_QUEUE
    assert queue_for(JobType.compose, {"items": [item] * 41}, settings) == COMPOSE_HEAVY_QUEUE
    four_k = {"resolution": "3840x2160"}
    assert queue_for(JobType.compose, {"items": [item] * 20, "output": four_k}, settings) == COMPOSE_QUEUE
    assert queue_for(JobType.compose, {"items": [item] * 21, "output": four_k}, settings) == COMPOSE_HEAVY_QUEUE
