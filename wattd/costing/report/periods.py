"""Report ranges: the local day, week, month or billing period around a moment."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from wattd.support.clock import wall_to_utc

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = ["Period", "billing_period", "period_range"]

Period = Literal["day", "week", "month"]


def period_range(
    period: Period, now: datetime, tz: ZoneInfo, *, previous: bool = False
) -> tuple[datetime, datetime]:
    """The local calendar day, ISO week or month around ``now``, in UTC.

    The current period ends at ``now``; with ``previous`` the whole period
    before it is returned.
    """
    today = now.astimezone(tz).date()
    if period == "day":
        first = today
    elif period == "week":
        first = today - timedelta(days=today.weekday())
    else:
        first = today.replace(day=1)
    if previous:
        last = first
        first = _step_back(period, first)
        return _midnight(first, tz), _midnight(last, tz)
    return _midnight(first, tz), now.astimezone(UTC)


def billing_period(
    now: datetime, tz: ZoneInfo, billing_day: int, *, previous: bool = False
) -> tuple[datetime, datetime]:
    """The billing period (from local midnight of ``billing_day``) around ``now``.

    Like :func:`period_range`: the current period ends at ``now``.
    """
    today = now.astimezone(tz).date()
    first = today.replace(day=billing_day)
    if today.day < billing_day:
        first = _month_before(first)
    if previous:
        return _midnight(_month_before(first), tz), _midnight(first, tz)
    return _midnight(first, tz), now.astimezone(UTC)


def _month_before(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=day.day)


def _step_back(period: Period, first: date) -> date:
    if period == "day":
        return first - timedelta(days=1)
    if period == "week":
        return first - timedelta(days=7)
    return (first - timedelta(days=1)).replace(day=1)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return wall_to_utc(datetime(day.year, day.month, day.day), tz)  # local wall time
