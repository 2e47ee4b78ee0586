from __future__ import annotations

import random

import pytest

from wattd.support.backoff import Backoff, backoff_delay


def test_the_ceiling_doubles_up_to_the_cap() -> None:
    waits = [backoff_delay(n, initial_s=0.5, max_s=10.0) for n in range(1, 9)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_jitter_draws_below_the_ceiling_and_never_below_its_share() -> None:
    rng = random.Random(7)
    waits = [
        backoff_delay(4, initial_s=1.0, max_s=60.0, jitter=0.5, rng=rng)
        for _ in range(500)
    ]
    assert all(4.0 <= w <= 8.0 for w in waits)
    # Spread out, so daemons restarted together do not retry in step.
    assert max(waits) - min(waits) > 3.0


def test_a_huge_attempt_count_stays_at_the_cap() -> None:
    assert backoff_delay(10_000, initial_s=0.1, max_s=30.0) == 30.0


def test_backoff_counts_failures_and_starts_over_after_a_success() -> None:
    b = Backoff(initial_s=1.0, max_s=5.0)
    assert [b.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert b.failures == 4
    b.reset()
    assert b.next_delay() == pytest.approx(1.0)


def test_jitter_up_spreads_the_wait_on_both_sides_of_the_ceiling() -> None:
    rng = random.Random(3)
    waits = [
        backoff_delay(
            2, initial_s=10.0, max_s=3600.0, jitter=0.2, jitter_up=0.2, rng=rng
        )
        for _ in range(500)
    ]
    assert all(16.0 <= w <= 24.0 for w in waits)
    assert min(waits) < 18.0
    assert max(waits) > 22.0
    # The cap holds before the jitter: at most 20 % over it.
    capped = backoff_delay(30, initial_s=10.0, max_s=3600.0, jitter_up=0.2, rng=rng)
    assert 3600.0 <= capped <= 4320.0


def test_backoff_without_jitter_draws_nothing() -> None:
    rng = random.Random(5)
    state = rng.getstate()
    assert Backoff(initial_s=0.5, max_s=30.0, rng=rng).next_delay() == 0.5
    assert rng.getstate() == state
