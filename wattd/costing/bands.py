"""Price bands and the rules that say when each is in force.

Plain values: :mod:`wattd.costing.tariff` combines them into a tariff.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from wattd.errors import TariffError

if TYPE_CHECKING:
    from datetime import date

__all__ = [
    "MARKET",
    "WEEKDAY_NAMES",
    "Band",
    "BandRule",
    "DemandCharge",
    "PriceSource",
    "Season",
    "parse_hour_range",
]

MARKET: Final = "market"
"""The band name of energy priced from a plan's price file."""
PriceSource: TypeAlias = Literal["band", "market", "fallback"]
"""Where a price came from: the bands, the price file, or the bands standing
in for time the price file leaves out."""
WEEKDAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Band:
    """A price (and optional CO2 intensity) with a name."""

    name: str
    price_per_kwh: float
    co2_g_per_kwh: float | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BandRule:
    """When a band is in force: minute ranges of the day, day kinds, seasons."""

    band: Band
    minutes: tuple[tuple[int, int], ...]
    """Half-open ``[start, end)`` minutes of the day; wrapping ranges come split."""
    days: frozenset[str]
    seasons: frozenset[str] = frozenset()
    """Empty means every season."""

    def matches(self, minute: int, tags: frozenset[str], season: str | None) -> bool:
        """True if the rule covers this minute of a day with these tags."""
        if self.seasons and season not in self.seasons:
            return False
        if self.days.isdisjoint(tags):
            return False
        return any(lo <= minute < hi for lo, hi in self.minutes)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Season:
    """A yearly range of days, both ends included; may wrap over new year."""

    name: str
    start: tuple[int, int]
    end: tuple[int, int]

    def contains(self, day: date) -> bool:
        """True if the calendar day falls in the season."""
        md = (day.month, day.day)
        if self.start <= self.end:
            return self.start <= md <= self.end
        return md >= self.start or md <= self.end


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DemandCharge:
    """Price per kW of the highest ``window_min`` average power of a billing period."""

    price_per_kw: float
    window_min: int = 15
    billing_day: int = 1
    """Day of the month (local time) on which a billing period starts."""


def parse_hour_range(text: str) -> list[tuple[int, int]]:
    """``"22:00-06:00"`` -> ``[(1320, 1440), (0, 360)]`` (minutes, half-open)."""
    try:
        first, second = text.split("-")
        start = int(first[:2]) * 60 + int(first[3:5])
        end = int(second[:2]) * 60 + int(second[3:5])
    except ValueError:
        raise TariffError(f"hour range {text!r} is not HH:MM-HH:MM") from None
    if start < end:
        return [(start, end)]
    return [(start, 1440), (0, end)] if end else [(start, 1440)]
