"""Local wall time and UTC: DST changes found exactly, wall times mapped to instants.

Readings carry UTC; tariffs, schedules and reports speak local wall time. These
pure functions are the one place where the two meet.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from wattd.errors import TariffError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = ["next_offset_change", "parse_when", "utc_now", "wall_to_utc"]


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


def parse_when(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> datetime:
    """A date or time (command line, query string) as an aware UTC datetime.

    A bare date is local midnight (the next midnight with ``end_of_day``, so
    ``--to 2025-03-31`` includes the 31st); a time without offset is local.

    Raises:
        TariffError: the text is not a date or time.
    """
    value = text.strip()
    try:
        if len(value) == len("2025-03-01"):
            day = date.fromisoformat(value)
            if end_of_day:
                day += timedelta(days=1)
            return wall_to_utc(datetime(day.year, day.month, day.day), tz)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TariffError(
            f"{text!r} is not a date (2025-03-01) or time (2025-03-01T08:00)"
        ) from None
    if moment.tzinfo is None:
        return wall_to_utc(moment, tz)
    return moment.astimezone(UTC)
