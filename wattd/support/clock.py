"""Local wall time and UTC: DST changes found exactly, wall times mapped to instants.

Readings carry UTC; tariffs, schedules and reports speak local wall time. These
pure functions are the one place where the two meet.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = ["next_offset_change", "utc_now", "wall_to_utc"]


def next_offset_change(
    tz: ZoneInfo, after: datetime, until: datetime
) -> datetime | None:
    """The first instant in ``(after, until]`` whose UTC offset in ``tz`` differs.

    Assumes at most one change in between (true for spans under a day).
    Offsets change on whole seconds, so a bisection on seconds is exact.
    """
    before = after.astimezone(tz).utcoffset()
    if until.astimezone(tz).utcoffset() == before:
        return None
    lo = math.floor(after.timestamp())
    hi = math.ceil(until.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def wall_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time.

    A time that happens twice (the repeated hour in autumn) maps to its first
    occurrence; a time that never happens (the skipped hour in spring) maps to
    the instant the clocks jump, so "at 02:30" still happens once that night.
    """
    naive = wall.replace(tzinfo=None)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    other = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = sorted((first, other))
    return next_offset_change(tz, lo, hi) or hi


def utc_now() -> datetime:
    """The wall clock, as an aware UTC datetime (for stamping, never for timing)."""
    return datetime.now(UTC)
