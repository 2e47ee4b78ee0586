"""Rate limits for log lines, so a fault that repeats cannot flood the journal."""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

__all__ = ["LOG_INTERVAL_S", "LogThrottle"]

LOG_INTERVAL_S: Final = 60.0
"""Default: one line per problem per minute."""


class LogThrottle:
    """Let one log line per key through per interval; count the rest.

    ``allow(key)`` returns ``None`` when the line should be suppressed, else the
    number of lines suppressed since the last one let through (often 0).
    """

    def __init__(
        self,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._suppressed: collections.Counter[Hashable] = collections.Counter()

    def allow(self, key: Hashable) -> int | None:
        """Check whether a line for ``key`` may be logged now."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] += 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)
