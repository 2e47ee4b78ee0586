"""Cron schedules evaluated in local wall time, DST included.

Five fields, ``minute hour day month weekday``, with ``*``, lists, ranges,
steps and English month/weekday names, plus ``@hourly``, ``@daily``,
``@weekly`` and ``@monthly``. Firing times are found in local wall time and
mapped to UTC with :func:`wattd.support.clock.wall_to_utc`: a time skipped by a DST
change fires when the clocks jump; a repeated one fires once, the first time.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Final

from wattd.errors import ScheduleError
from wattd.support.clock import wall_to_utc

if TYPE_CHECKING:
    from collections.abc import Iterable
    from zoneinfo import ZoneInfo

__all__ = ["CronSchedule"]

_FIELDS: Final = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
)
_MONTHS: Final = "jan feb mar apr may jun jul aug sep oct nov dec".split()  # noqa: SIM905
_DOWS: Final = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_MACROS: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * sun",
    "@monthly": "0 0 1 * *",
}


@dataclasses.dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron line (``minute hour day month weekday``) in local wall time.

    As in cron, when both day and weekday are restricted either may match.
    A local time skipped by a DST change fires when the clocks jump; a repeated
    one fires once, the first time.
    """

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """Python weekdays: Monday is 0."""
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        """Parse a cron line or a macro like ``@daily``.

        Raises:
            ScheduleError: with the bad field named.
        """
        line = _MACROS.get(text.strip().lower(), text.strip().lower())
        parts = line.split()
        if len(parts) != 5:
            raise ScheduleError(
                f"schedule {text!r} needs 5 fields (minute hour day month weekday),"
                f" got {len(parts)}; e.g. '0 8 * * mon'"
            )
        values = []
        for (field, lo, hi), part in zip(_FIELDS, parts[:4], strict=True):
            names = _MONTHS if field == "month" else ()
            values.append(_cron_field(text, field, part, lo, hi, names, 1))
        dows = _cron_field(text, "weekday", parts[4], 0, 7, _DOWS, 0)
        return cls(
            text=text,
            minutes=tuple(sorted(values[0])),
            hours=tuple(sorted(values[1])),
            days=frozenset(values[2]),
            months=frozenset(values[3]),
            weekdays=frozenset((d - 1) % 7 for d in dows),
            any_day=parts[2] == "*",
            any_weekday=parts[4] == "*",
        )

    def matches_day(self, day: date) -> bool:
        """True if the schedule runs on this calendar day."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.weekday() in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        """The first firing strictly after ``after``, as a UTC instant."""
        local = after.astimezone(tz).replace(tzinfo=None)
        first = (local.hour, local.minute)
        # Four years and a day: long enough for a 29 February schedule.
        for offset in range(366 * 4 + 1):
            day = local.date() + timedelta(days=offset)
            if not self.matches_day(day):
                continue
            for hour in self.hours:
                for minute in self.minutes:
                    if offset == 0 and (hour, minute) < first:
                        continue
                    wall = datetime(day.year, day.month, day.day, hour, minute)
                    at = wall_to_utc(wall, tz)
                    if at > after:
                        return at
        raise ScheduleError(f"schedule {self.text!r} never fires (check day and month)")

    def last_at_or_before(
        self, now: datetime, since: datetime, tz: ZoneInfo
    ) -> datetime | None:
        """The latest firing in ``(since, now]``, if any."""
        # Look back a little first, so a schedule firing every few minutes is
        # not stepped through for weeks.
        for window in (timedelta(hours=2), timedelta(days=2), now - since):
            t = start = max(since, now - window)
            found = None
            while (nxt := self.next_after(t, tz)) <= now:
                found = t = nxt
            if found is not None or start == since:
                return found
        return None


def _cron_field(
    text: str, field: str, part: str, lo: int, hi: int, names: Iterable[str], base: int
) -> set[int]:
    lookup = {name: i + base for i, name in enumerate(names)}

    def value(token: str) -> int:
        return lookup[token] if token in lookup else int(token)

    out: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                first, last = lo, hi
            elif "-" in body:
                a, b = body.split("-", 1)
                first, last = value(a), value(b)
            else:
                first = value(body)
                last = hi if step_text else first
        except ValueError:
            raise ScheduleError(
                f"schedule {text!r}: {field} {item!r} is not valid"
            ) from None
        if step < 1 or not (lo <= first <= last <= hi):
            raise ScheduleError(
                f"schedule {text!r}: {field} {item!r} is outside {lo}-{hi}"
            )
        out.update(range(first, last + 1, step))
    return out
