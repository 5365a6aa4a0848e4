"""Queue policy: the retry backoff with jitter, per job type (docs/design.md, "Job states")."""

from __future__ import annotations

import random

import pytest

from mediaflow.common.jobs.model import JobType
from mediaflow.common.jobs.queues import retry_delay
from mediaflow.common.settings import Settings

T = JobType


def test_first_retry_waits_exactly_the_base() -> None:
    settings = Settings()
    assert retry_delay(T.probe, 1, settings) == 2  # "retrying in 2 s", as before
    assert retry_delay(T.probe, 0, settings) == 2


def test_delays_grow_stay_in_the_jittered_window_and_are_capped() -> None:
    settings = Settings(retry_base_seconds=2, retry_max_seconds=60)
    for attempt in range(2, 12):
        ceiling = min(60.0, 2 * 2 ** (attempt - 1))
        seen = {retry_delay(T.compose, attempt, settings) for _ in range(200)}
        assert all(ceiling / 2 <= d <= ceiling for d in seen), (attempt, seen)
        assert len(seen) > 1  # jittered
    # the window's ends, with a uniform that returns them
    assert retry_delay(T.compose, 3, settings, uniform=lambda a, b: a) == 4
    assert retry_delay(T.compose, 3, settings, uniform=lambda a, b: b) == 8
    assert retry_delay(T.compose, 50, settings, uniform=lambda a, b: b) == 60
    assert retry_delay(T.compose, 10_000, settings, uniform=lambda a, b: a) == 30


def test_growth_on_average() -> None:
    settings = Settings()
    rng = random.Random(7)
    means = [sum(retry_delay(T.probe, n, settings, uniform=rng.uniform) for _ in range(300)) / 300 for n in range(2, 6)]
    assert means == sorted(means) and means[-1] > 2 * means[0]


def test_per_type_base_and_cap_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAFLOW_RETRY_BASE_BY_TYPE", "transcribe:5, compose:0.5")
    monkeypatch.setenv("MEDIAFLOW_RETRY_MAX_BY_TYPE", "transcribe:12")
    monkeypatch.setenv("MEDIAFLOW_RETRY_BASE_SECONDS", "3")
    settings = Settings()
    assert retry_delay(T.transcribe, 1, settings) == 5
    assert retry_delay(T.transcribe, 3, settings, uniform=lambda a, b: b) == 12  # 20, capped
    assert retry_delay(T.compose, 1, settings) == 0.5
    assert retry_delay(T.compose, 2, settings, uniform=lambda a, b: b) == 1
    assert retry_delay(T.probe, 1, settings) == 3  # the default base
    assert retry_delay(T.probe, 9, settings, uniform=lambda a, b: b) == 60  # the default cap
