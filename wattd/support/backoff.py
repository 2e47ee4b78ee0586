"""The one retry schedule: capped exponential backoff with jitter.

Serial ports, sinks, broker sessions and summary posts all wait this way, so a
fault anywhere retries soon at first, then no more often than its cap, and
many daemons restarted together do not retry in step.
"""

from __future__ import annotations

import dataclasses
import random

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    initial_s: float,
    max_s: float,
    jitter: float = 0.0,
    jitter_up: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    The ceiling doubles from ``initial_s`` up to ``max_s``; with ``jitter`` the
    wait is drawn from ``[ceiling * (1 - jitter), ceiling]``, and ``jitter_up``
    lets the draw run over the ceiling by that share too.
    """
    ceiling = min(max_s, initial_s * 2.0 ** min(max(attempt, 1) - 1, 60))
    low = ceiling * (1.0 - min(max(jitter, 0.0), 1.0))
    high = ceiling * (1.0 + max(jitter_up, 0.0))
    if low == high:
        return ceiling
    draw = (rng or random).uniform
    return draw(low, high)


@dataclasses.dataclass(slots=True)
class Backoff:
    """A retry schedule that remembers how many attempts have failed in a row."""

    initial_s: float
    max_s: float
    jitter: float = 0.0
    """0: exact doubling; 0.5: each wait drawn from the upper half."""
    rng: random.Random | None = None
    jitter_up: float = 0.0
    """Share a wait may run over the ceiling (0.2 with jitter 0.2: 80-120 %)."""
    failures: int = 0

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before retrying."""
        self.failures += 1
        return backoff_delay(
            self.failures,
            initial_s=self.initial_s,
            max_s=self.max_s,
            jitter=self.jitter,
            jitter_up=self.jitter_up,
            rng=self.rng,
        )

    def reset(self) -> None:
        """A success: the next failure waits ``initial_s`` again."""
        self.failures = 0
