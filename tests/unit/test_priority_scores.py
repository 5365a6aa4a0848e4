"""Queue policy: the queue score that orders jobs by priority with aging (docs/api.md, "Priority")."""

from __future__ import annotations

import random

import pytest

from mediaflow.common.jobs.model import Priority
from mediaflow.common.jobs.queues import boost_ms, deferred_score, queue_score, read_score
from mediaflow.common.settings import Settings

B = 300.0  # the aging bound of these tests, in seconds
NOW = 1_765_000_000_123  # ms
P = Priority


def ready_ms(score: int) -> float:
    return read_score(score, B)[1] * 1000


def test_every_fresh_job_is_due_at_once() -> None:
    # an idle worker starts low work immediately: no score is in the future, even at a ms boundary
    for now in range(NOW, NOW + 8):
        for priority in P:
            assert queue_score(priority, now, B) < now


@pytest.mark.parametrize(
    ("higher", "lower", "bound_s"), [(P.high, P.normal, B), (P.normal, P.low, B), (P.high, P.low, 2 * B)]
)
def test_higher_overtakes_work_younger_than_the_bound_and_never_older(
    higher: Priority, lower: Priority, bound_s: float
) -> None:
    for waited_s in (0.0, 1.0, bound_s / 2, bound_s - 0.05):
        assert queue_score(higher, NOW, B) < queue_score(lower, NOW - int(waited_s * 1000), B), waited_s
    for waited_s in (bound_s + 0.05, bound_s + 1, 10 * bound_s):
        assert queue_score(lower, NOW - int(waited_s * 1000), B) < queue_score(higher, NOW, B), waited_s


def test_same_priority_is_first_come_first_served() -> None:
    for priority in P:
        assert queue_score(priority, NOW, B) < queue_score(priority, NOW + 4, B)
        assert queue_score(priority, NOW, B) <= queue_score(priority, NOW + 1, B)


def test_a_score_tells_its_priority_and_when_it_became_ready() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        now = NOW + rng.randrange(10**9)
        for priority in P:
            got, ready = read_score(queue_score(priority, now, B), B)
            assert got == priority
            assert now - 4 <= ready * 1000 <= now  # a few ms early at most: never reported as younger
        # what /v1/queues reads back is the score Redis holds: a float
        assert read_score(float(queue_score(P.low, now, B)), B) == read_score(queue_score(P.low, now, B), B)


def test_a_score_from_elsewhere_reads_as_low_ready_at_its_score() -> None:
    priority, ready = read_score(NOW - NOW % 4 + 3, B)  # remainder 3: never written by queue_score
    assert priority == P.low and abs(ready * 1000 - NOW) < 8


def test_a_deferred_retry_is_in_the_future_and_due_when_its_backoff_ends() -> None:
    for priority in P:
        due = NOW + 2000
        score = deferred_score(priority, due)
        assert NOW < score <= due  # counted as deferred until then, due (claimable) by then
        assert read_score(score, B)[0] == priority
        # once due, the worker subtracts the boost (PROMOTE_SCRIPT): then it ranks as a job of its
        # priority that became ready at `due`
        promoted = score - boost_ms(priority, B)
        assert promoted == queue_score(priority, due, B)
        assert read_score(promoted, B) == (priority, pytest.approx(due / 1000, abs=0.008))


def test_a_due_retry_not_yet_promoted_reads_as_ready_at_its_score() -> None:
    # no worker promoted it (a dead pool, or claimed first): read as boosted, a high one would seem to
    # become ready 2B from now, and /v1/status would see a stall 2B late
    for priority in P:
        due = NOW - 5000
        priority_read, ready = read_score(deferred_score(priority, due), B, boosted=False)
        assert priority_read == priority
        assert due - 8 <= ready * 1000 <= due  # when its backoff ended
        boosted_ready = read_score(deferred_score(priority, due), B)[1]
        assert boosted_ready * 1000 - ready * 1000 == boost_ms(priority, B)


def test_boosts_are_whole_steps_of_the_bound() -> None:
    assert [boost_ms(p, B) for p in (P.high, P.normal, P.low)] == [600_000, 300_000, 0]
    assert all(boost_ms(p, 0.0013) % 4 == 0 for p in P)  # the remainder stays the priority's


def test_the_bound_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().priority_aging_seconds == 300
    monkeypatch.setenv("MEDIAFLOW_PRIORITY_AGING_SECONDS", "60")
    assert Settings().priority_aging_seconds == 60
    monkeypatch.setenv("MEDIAFLOW_PRIORITY_AGING_SECONDS", "0")
    with pytest.raises(ValueError, match="priority_aging_seconds"):
        Settings()
