"""Times in the store: integer nanoseconds since the Unix epoch (UTC).

Ranges are half-open ``[from, to)``; buckets start at whole multiples of
their size.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = [
    "DAY_NS",
    "HOUR_NS",
    "MINUTE_NS",
    "NS_PER_S",
    "ceil_ns",
    "floor_ns",
    "from_ns",
    "to_ns",
]

NS_PER_S: Final = 1_000_000_000
MINUTE_NS: Final = 60 * NS_PER_S
HOUR_NS: Final = 3600 * NS_PER_S
DAY_NS: Final = 86_400 * NS_PER_S

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def to_ns(moment: datetime) -> int:
    """An aware datetime as integer nanoseconds since the Unix epoch."""
    if moment.tzinfo is None:
        msg = f"naive datetime {moment.isoformat()} has no time zone; pass an aware one"
        raise ValueError(msg)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


def from_ns(time_ns: int) -> datetime:
    """Nanoseconds since the Unix epoch as a UTC datetime (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=time_ns // 1000)


def floor_ns(time_ns: int, size_ns: int) -> int:
    """Start of the bucket of ``size_ns`` that holds ``time_ns``."""
    return time_ns - time_ns % size_ns


def ceil_ns(time_ns: int, size_ns: int) -> int:
    """Smallest bucket boundary at or after ``time_ns``."""
    return -floor_ns(-time_ns, size_ns)
