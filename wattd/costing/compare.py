"""What a group's energy would have cost elsewhere, or at cheaper hours.

Both are estimates over the same load shape, not forecasts: the meters' IT
energy, interval by interval, is priced again.

* At each configured location: that location's PUE, tariff (its own, else
  ``tariffs.default``) with its price file, and its carbon (its ``co2_file``,
  else the tariff's figures). Energy cost only: standing and demand charges
  depend on contracts, not on where the load runs.
* Shifted: each meter, each local day, moves its flexible share
  (``tariffs.flexible_shares[customer]``, else ``tariffs.flexible_share``) of
  the day's energy out of every hour in proportion, and puts it back into
  the day's cheapest hours (by mean hourly price), each taking at most the
  day's mean hourly energy on top of what stays in it (so the load of an
  hour stays under about twice the day's mean). The rest is priced as it was
  used.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import TYPE_CHECKING

from wattd.costing.cost import Timeline, hour_prices
from wattd.costing.tariff import TariffBook

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import date, datetime

    from wattd.config import Config
    from wattd.costing.cost import EnergyInterval, HourPrice
    from wattd.costing.tariff import MeterKey, Tariff

__all__ = ["Comparison", "ComparisonBuilder", "Scenario", "compare"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """Energy, energy cost and CO2 of one way of running the same load."""

    name: str
    it_kwh: float
    facility_kwh: float
    energy_cost: float | None
    """None when no tariff prices the load there."""
    co2_kg: float | None
    pue: float | None
    """None for the actual load when its meters sit at different PUEs."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """The actual figures beside the location and shift estimates."""

    actual: Scenario
    locations: tuple[Scenario, ...]
    shifted: Scenario | None
    """None when the flexible share is 0."""
    flexible_share: float
    currency: str | None

    @property
    def scenarios(self) -> list[Scenario]:
        """Actual, each location, then the shift when there is one: table order."""
        rows = [self.actual, *self.locations]
        if self.shifted is not None:
            rows.append(self.shifted)
        return rows


@dataclasses.dataclass(slots=True)
class _Sums:
    it_wh: float = 0.0
    fac_wh: float = 0.0
    cost: float = 0.0
    co2_g: float = 0.0
    priced: bool = False
    co2_known: bool = False

    def scenario(self, name: str, pue: float | None) -> Scenario:
        return Scenario(
            name=name,
            it_kwh=self.it_wh / 1000.0,
            facility_kwh=self.fac_wh / 1000.0,
            energy_cost=self.cost if self.priced else None,
            co2_kg=self.co2_g / 1000.0 if self.co2_known else None,
            pue=pue,
        )


class _Pricer:
    """Prices intervals on one timeline per tariff; keeps energy per hour."""

    def __init__(self, start: datetime, end: datetime, book: TariffBook) -> None:
        self.start, self.end, self.book = start, end, book
        self.lines: dict[str | None, Timeline] = {}

    def line(self, tariff: Tariff | None) -> Timeline:
        key = tariff.name if tariff is not None else None
        hit = self.lines.get(key)
        if hit is None:
            hit = self.lines[key] = Timeline(
                self.start,
                self.end,
                tariff=tariff,
                timezone=self.book.timezone,
                step_s=3600,
            )
        return hit

    def add(
        self,
        sums: _Sums,
        intervals: Iterable[EnergyInterval],
        tariff: Tariff | None,
        pue: float,
        hours: list[float] | None = None,
    ) -> None:
        line = self.line(tariff)
        for interval in intervals:
            for seg, share in line.split(interval.start, interval.end):
                wh = interval.wh * share
                sums.it_wh += wh
                sums.fac_wh += wh * pue
                if hours is not None:
                    hours[seg.hour] += wh
                if seg.band is None:
                    continue
                sums.priced = True
                kwh = wh * pue / 1000.0
                sums.cost += kwh * seg.band.price_per_kwh
                if seg.band.co2_g_per_kwh is not None:
                    sums.co2_g += kwh * seg.band.co2_g_per_kwh
                    sums.co2_known = True


def compare(
    config: Config,
    intervals: Iterable[EnergyInterval],
    start: datetime,
    end: datetime,
    *,
    customer: str | None = None,
    book: TariffBook | None = None,
) -> Comparison:
    """Compare a customer's (or everyone's) load at each location and shifted."""
    builder = ComparisonBuilder(config, start, end, customer=customer, book=book)
    for interval in intervals:
        builder.feed(interval)
    return builder.finish()


class ComparisonBuilder:
    """:func:`compare` one interval at a time, beside a report reading the same."""

    def __init__(
        self,
        config: Config,
        start: datetime,
        end: datetime,
        *,
        customer: str | None = None,
        book: TariffBook | None = None,
    ) -> None:
        self.book = book or TariffBook(config)
        self.customer = customer
        self.share = config.tariffs.flexible_share_of(customer)
        self.pricer = _Pricer(start, end, self.book)
        self.actual = _Sums()
        self.hours: dict[MeterKey, list[float]] = {}
        default = config.tariffs.default
        self.sites: list[tuple[str, float, Tariff | None, _Sums]] = []
        for name, site in sorted(config.locations.items()):
            plan = site.tariff or default
            tariff = self.book.tariffs[plan] if plan else None
            if tariff is not None:
                tariff = self.book.at_location(tariff, name)
            self.sites.append((name, site.pue, tariff, _Sums()))

    def feed(self, interval: EnergyInterval) -> None:
        """Add one interval (other customers' are skipped)."""
        a = self.book.for_sensor(interval.sensor)
        if self.customer is not None and a.customer != self.customer:
            return
        hours = self.hours.get(interval.sensor)
        if hours is None:
            n = len(self.pricer.line(a.tariff).hours)
            hours = self.hours[interval.sensor] = [0.0] * n
        self.pricer.add(self.actual, (interval,), a.tariff, a.pue, hours)
        for _, pue, tariff, sums in self.sites:
            self.pricer.add(sums, (interval,), tariff, pue)

    def finish(self) -> Comparison:
        """The figures of everything fed."""
        share, actual = self.share, self.actual
        pues = {self.book.for_sensor(k).pue for k in self.hours}
        shifted = None
        if share > 0:
            extra = _Sums()
            for sensor, hours in self.hours.items():
                a = self.book.for_sensor(sensor)
                if a.tariff is None:
                    continue
                line = self.pricer.line(a.tariff)
                _shift(extra, hours, hour_prices(line), line.days, share, a.pue)
            keep = 1.0 - share
            moved = _Sums(
                it_wh=actual.it_wh,
                fac_wh=actual.fac_wh,
                cost=actual.cost * keep + extra.cost,
                co2_g=actual.co2_g * keep + extra.co2_g,
                priced=actual.priced,
                co2_known=actual.co2_known,
            )
            shifted = moved.scenario("shifted", _one(pues))
        return Comparison(
            actual=actual.scenario("actual", _one(pues)),
            locations=tuple(s.scenario(n, pue) for n, pue, _, s in self.sites),
            shifted=shifted,
            flexible_share=share,
            currency=self.book.currency,
        )


def _shift(
    sums: _Sums,
    hours: list[float],
    prices: Sequence[HourPrice | None],
    days: Sequence[date],
    share: float,
    pue: float,
) -> None:
    """Add cost and CO2 of the flexible energy put into each day's cheapest hours."""
    by_day: dict[date, list[int]] = defaultdict(list)
    for h, day in enumerate(days):
        by_day[day].append(h)
    for day_hours in by_day.values():
        day_wh = math.fsum(hours[h] for h in day_hours)
        flexible = share * day_wh
        room = day_wh / len(day_hours)
        priced = [h for h in day_hours if prices[h] is not None]
        priced.sort(key=lambda h: (_price(prices[h]), h))
        for h in priced:
            if flexible <= 0:
                break
            placed = min(room, flexible)
            flexible -= placed
            price = prices[h]
            assert price is not None  # noqa: S101 - filtered above
            kwh = placed * pue / 1000.0
            sums.cost += kwh * price.price_per_kwh
            if price.co2_g_per_kwh is not None:
                sums.co2_g += kwh * price.co2_g_per_kwh


def _price(hour: HourPrice | None) -> float:
    return hour.price_per_kwh if hour is not None else math.inf


def _one(values: set[float]) -> float | None:
    return next(iter(values)) if len(values) == 1 else None
