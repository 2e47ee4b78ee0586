"""Cost reports: energy intervals in, per-group totals out (table, CSV, JSON).

The engine reads a plain iterable of :class:`~wattd.costing.cost.EnergyInterval`, so it
runs the same over the store's minute buckets, single readings or test data.
Each interval is cut on a per-tariff :class:`~wattd.costing.cost.Timeline` and its
parts are added to its group, its day and its local hour.

Definitions (also in docs/cost.md):

* Peak hours: time in a tariff's most expensive band(s) of the season; a flat
  tariff has none. Peak premium: what the energy used in peak hours cost above
  the tariff's cheapest band.
* Mean W and peak W: power over the time with data only
  (:mod:`wattd.costing.report.coverage`), so time before a meter's first frame or
  during an outage does not count as 0 W. Peak W is the highest 15-minute
  window of the group's combined IT load.
* Completeness: frames received over frames expected (one per
  :data:`FRAME_PERIOD_S` per sensor), so a silent hour shows up as missing
  rather than as a cheap one.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Final, Literal

from wattd.costing.cost import (
    PEAK_WINDOW_S,
    DemandMeter,
    DemandPeak,
    EnergyInterval,
    Timeline,
)
from wattd.costing.report.charges import (
    Account,
    PriceLine,
    account_of,
    price_lines,
    standing_charge,
)
from wattd.costing.report.coverage import Layout, MeterCoverage, PowerBins
from wattd.costing.report.periods import period_range
from wattd.costing.tariff import Assignment, MeterKey, TariffBook
from wattd.errors import TariffError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from wattd.config import Config
    from wattd.costing.bands import PriceSource
    from wattd.costing.compare import Comparison, ComparisonBuilder

__all__ = [
    "FRAME_PERIOD_S",
    "DayFigures",
    "GroupBy",
    "GroupReport",
    "HourFigures",
    "Report",
    "build_report",
    "period_range",
]

FRAME_PERIOD_S: Final = 2.08
"""A Tweet-a-Watt sends one frame every ~2.08 s (measured over real captures)."""
FULL_SHARE: Final = 0.99
"""Data over at least this share of a span counts as covering it."""
UNASSIGNED: Final = "(unassigned)"
TOTAL: Final = "total"
ALL: Final = "all"
"""The one group of ``--by all``."""

GroupBy = Literal["all", "sensor", "rack", "customer", "location", "node"]
WHOLE: Final = frozenset({"all", "customer"})
"""Groupings whose groups hold whole customers, so pay customer-wide charges."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DayFigures:
    """One local calendar day of a group."""

    day: date
    it_kwh: float
    facility_kwh: float
    cost: float | None
    completeness: float | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HourFigures:
    """One local clock hour of a group; ``mean_watts`` is None without data."""

    start: datetime
    mean_watts: float | None
    """Power over the part of the hour with data."""
    completeness: float | None
    peak_share: float
    """Fraction of the hour's energy used in peak bands."""
    data_s: float = 0.0
    """Seconds of the hour with data (the longest of any one meter)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GroupReport:
    """Totals of one group (or of everything, with key ``total``)."""

    key: str
    sensors: tuple[str, ...]
    it_kwh: float
    facility_kwh: float
    energy_cost: float | None
    demand_charge: float | None
    cost: float | None
    co2_kg: float | None
    mean_watts: float
    """Power over the time with data (each meter's own), summed over meters."""
    peak_watts: float
    """The highest 15-minute window's power, over its time with data."""
    max_reading_watts: float | None
    peak_kwh: float
    peak_share: float | None
    peak_premium: float | None
    unpriced_kwh: float
    received_frames: float
    expected_frames: float
    completeness: float | None
    sensor_kwh: Mapping[str, float]
    demand: tuple[DemandPeak, ...] = ()
    days: tuple[DayFigures, ...] = ()
    hours: tuple[HourFigures, ...] = ()
    data_s: float = 0.0
    """Seconds of the range with data (the longest of any one meter)."""
    peak_window_start: datetime | None = None
    peak_data_s: float = 0.0
    """Seconds with data in the peak window."""
    peak_window_s: float = 0.0
    """Length of the peak window inside the range (15 minutes but at its edges)."""
    standing_charge: float | None = None
    standing_days: int = 0
    """Local calendar days the standing charge counts (whole days)."""
    standing_payers: int = 0
    """Meters (or whole customers) that pay a standing charge."""
    fallback_kwh: float = 0.0
    """IT energy a plan's bands priced because its price file had no row for it."""
    prices: tuple[PriceLine, ...] = ()
    """Facility energy and cost by band or market price."""

    @property
    def cost_per_it_kwh(self) -> float | None:
        """Cost per kWh of IT load: how locations compare, PUE included."""
        if self.cost is None or self.it_kwh <= 0:
            return None
        return self.cost / self.it_kwh

    @property
    def co2_g_per_it_kwh(self) -> float | None:
        """CO2 grams per kWh of IT load."""
        if self.co2_kg is None or self.it_kwh <= 0:
            return None
        return self.co2_kg * 1000.0 / self.it_kwh

    @property
    def biggest(self) -> tuple[str, float] | None:
        """The sensor with the most energy and its kWh."""
        if not self.sensor_kwh:
            return None
        name = max(self.sensor_kwh, key=lambda n: (self.sensor_kwh[n], n))
        return name, self.sensor_kwh[name]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A whole report: its range, grouping and figures."""

    start: datetime
    end: datetime
    timezone: str
    by: GroupBy
    currency: str | None
    groups: tuple[GroupReport, ...]
    total: GroupReport
    generated: datetime
    title: str = "Energy report"
    customer: str | None = None
    """The customer a bill is for."""
    comparison: Comparison | None = None

    def group(self, key: str) -> GroupReport:
        """The group with this key."""
        for g in self.groups:
            if g.key == key:
                return g
        raise TariffError(f"no group {key!r} in the report; groups: {self.keys()}")

    def keys(self) -> list[str]:
        """Group keys in report order."""
        return [g.key for g in self.groups]


# -- building -----------------------------------------------------------------


def group_key(assignment: Assignment, by: GroupBy) -> str:
    """The group a sensor belongs to under ``by``."""
    if by == "all":
        return ALL
    if by == "sensor":
        return assignment.name
    value = getattr(assignment, by)
    return str(value) if value else UNASSIGNED


class _Acc:
    """Running sums of one group."""

    def __init__(self, n_hours: int, n_days: int) -> None:
        self.power = PowerBins.empty(n_hours)
        self.sensors: set[str] = set()
        self.it_wh = 0.0
        self.fac_wh = 0.0
        self.cost = 0.0
        self.priced_it_wh = 0.0
        self.unpriced_wh = 0.0
        self.co2_g = 0.0
        self.co2_known = False
        self.peak_wh = 0.0
        self.premium = 0.0
        self.time_of_use = False
        self.has_tariff = False
        self.received = 0.0
        self.expected = 0.0
        self.max_reading: float | None = None
        self.fallback_wh = 0.0
        self.lines: dict[tuple[str, PriceSource], list[float]] = {}
        self.accounts: dict[str, Account] = {}
        self.sensor_wh: dict[str, float] = {}
        self.meters: dict[str, DemandMeter] = {}
        self.hour_wh = [0.0] * n_hours
        self.hour_peak_wh = [0.0] * n_hours
        self.hour_frames = [0.0] * n_hours
        self.hour_expected = [0.0] * n_hours
        self.day_it = [0.0] * n_days
        self.day_fac = [0.0] * n_days
        self.day_cost = [0.0] * n_days
        self.day_frames = [0.0] * n_days
        self.day_expected = [0.0] * n_days

    def merge(self, other: _Acc) -> None:
        self.sensors |= other.sensors
        for name in (
            "it_wh",
            "fac_wh",
            "cost",
            "priced_it_wh",
            "unpriced_wh",
            "fallback_wh",
            "co2_g",
            "peak_wh",
            "premium",
            "received",
            "expected",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.co2_known |= other.co2_known
        self.has_tariff |= other.has_tariff
        self.time_of_use |= other.time_of_use
        if other.max_reading is not None:
            self.max_reading = max(self.max_reading or 0.0, other.max_reading)
        for k, v in other.sensor_wh.items():
            self.sensor_wh[k] = self.sensor_wh.get(k, 0.0) + v
        for line, (wh, cost) in other.lines.items():
            mine_line = self.lines.setdefault(line, [0.0, 0.0])
            mine_line[0] += wh
            mine_line[1] += cost
        self.accounts.update(other.accounts)
        self.power.merge(other.power)
        for name, meter in other.meters.items():
            mine = self.meters.get(name)
            if mine is None:
                mine = self.meters[name] = DemandMeter(
                    meter.tariff, meter.start, meter.end
                )
            for k3, v in meter.windows.items():
                mine.windows[k3] = mine.windows.get(k3, 0.0) + v
        for arr in (
            "hour_wh",
            "hour_peak_wh",
            "hour_frames",
            "hour_expected",
            "day_it",
            "day_fac",
            "day_cost",
            "day_frames",
            "day_expected",
        ):
            mine_arr, theirs = getattr(self, arr), getattr(other, arr)
            for i, v in enumerate(theirs):
                mine_arr[i] += v


def build_report(
    config: Config,
    intervals: Iterable[EnergyInterval],
    start: datetime,
    end: datetime,
    *,
    by: GroupBy = "sensor",
    only: Sequence[str] = (),
    title: str | None = None,
    now: datetime | None = None,
    book: TariffBook | None = None,
    comparison: ComparisonBuilder | None = None,
) -> Report:
    """Aggregate energy intervals over ``[start, end)`` into a report.

    ``comparison`` is fed every interval too, and its result goes in the report.

    Configured sensors that sent nothing still appear (with completeness 0).
    ``only`` keeps just the named groups. ``book`` assigns groups and tariffs
    to the intervals' meters; by default it is the config's own
    (:class:`~wattd.costing.tariff.TariffBook`, keyed by radio address).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise TariffError("report range needs aware datetimes (UTC)")
    if end <= start:
        raise TariffError(
            f"report range is empty: {start.isoformat()} is not before"
            f" {end.isoformat()}; check --from/--to"
        )
    if book is None:
        book = TariffBook(config)
    tz = book.timezone
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    steps = [PEAK_WINDOW_S] + [
        t.demand.window_min * 60 for t in book.tariffs.values() if t.demand
    ]
    step = math.gcd(*steps)
    timelines: dict[str | None, Timeline] = {}
    base = Timeline(start, end, tariff=None, timezone=tz, step_s=step)
    timelines[None] = base
    hours = base.hours
    days = sorted(set(base.days))
    day_index = {d: i for i, d in enumerate(days)}
    hour_day = [day_index[d] for d in base.days]
    accs: dict[str, _Acc] = {}
    seen: set[MeterKey] = set()
    layout = Layout(base)
    coverage: dict[MeterKey, MeterCoverage] = {}

    def acc_for(assignment: Assignment) -> _Acc:
        key = group_key(assignment, by)
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _Acc(len(hours), len(days))
        return acc

    for interval in intervals:
        a = book.for_sensor(interval.sensor)
        acc = acc_for(a)
        if interval.sensor not in seen:
            seen.add(interval.sensor)
            _expect(acc, a, base, hour_day)
        tariff = a.tariff
        key = tariff.name if tariff else None
        timeline = timelines.get(key)
        if timeline is None:
            timeline = timelines[key] = Timeline(
                start, end, tariff=tariff, timezone=tz, step_s=step
            )
        meter = None
        if tariff is not None and tariff.demand is not None:
            meter = acc.meters.get(tariff.name)
            if meter is None:
                meter = acc.meters[tariff.name] = DemandMeter(tariff, start, end)
        track = coverage.get(interval.sensor)
        if track is None:
            track = coverage[interval.sensor] = MeterCoverage(
                layout, acc.power, FRAME_PERIOD_S
            )
        _add(acc, a, interval, timeline, hour_day, meter, track)
        track.feed(interval)
        if comparison is not None:
            comparison.feed(interval)
    for track in coverage.values():
        track.finish()

    for address in book.addresses():
        if address not in seen:
            a = book.for_sensor(address)
            _expect(acc_for(a), a, base, hour_day)

    currency = book.currency
    groups = []
    total_acc = _Acc(len(hours), len(days))
    for key in sorted(accs, key=lambda k: (k == UNASSIGNED, k)):
        if only and key not in only:
            continue
        acc = accs[key]
        total_acc.merge(acc)
        groups.append(_finish(key, acc, layout, hours, days, whole=by in WHOLE))
    if only and not groups:
        raise TariffError(
            f"no group named {', '.join(only)} when grouping by {by};"
            f" groups: {', '.join(sorted(accs)) or 'none'}"
        )
    total = _finish(TOTAL, total_acc, layout, hours, days, whole=True)
    return Report(
        start=start,
        end=end,
        timezone=str(tz.key),
        by=by,
        currency=currency,
        groups=tuple(groups),
        total=total,
        generated=(now or datetime.now(UTC)).astimezone(UTC),
        title=title or "Energy report",
        comparison=comparison.finish() if comparison is not None else None,
    )


def _expect(acc: _Acc, a: Assignment, base: Timeline, hour_day: list[int]) -> None:
    """Count the frames one sensor should have sent over the range."""
    acc.sensors.add(a.name)
    acc.sensor_wh.setdefault(a.name, 0.0)
    acc.has_tariff |= a.tariff is not None
    account = account_of(a)
    if account is not None:
        acc.accounts[account.key] = account
    for segment in base.segments:
        frames = (segment.end_s - segment.start_s) / FRAME_PERIOD_S
        acc.expected += frames
        acc.hour_expected[segment.hour] += frames
        acc.day_expected[hour_day[segment.hour]] += frames


def _add(
    acc: _Acc,
    a: Assignment,
    interval: EnergyInterval,
    timeline: Timeline,
    hour_day: list[int],
    meter: DemandMeter | None,
    track: MeterCoverage,
) -> None:
    tariff = a.tariff
    pue = a.pue
    if tariff is not None and tariff.time_of_use:
        acc.time_of_use = True
    cheapest = tariff.cheapest_price_per_kwh if tariff else 0.0
    top = interval.max_watts
    if top is not None and (acc.max_reading is None or top > acc.max_reading):
        acc.max_reading = top
    used = 0.0
    for segment, share in timeline.split(interval.start, interval.end):
        wh = interval.wh * share
        used += wh
        frames = interval.readings * share
        fac = wh * pue
        h = segment.hour
        d = hour_day[h]
        acc.received += frames
        acc.hour_frames[h] += frames
        acc.day_frames[d] += frames
        acc.hour_wh[h] += wh
        acc.day_it[d] += wh
        acc.day_fac[d] += fac
        track.energy(h, int(segment.start_s // PEAK_WINDOW_S), wh)
        band = segment.band
        if band is None:
            acc.unpriced_wh += wh
            continue
        kwh = fac / 1000.0
        cost = kwh * band.price_per_kwh
        line = acc.lines.setdefault((band.name, segment.source), [0.0, 0.0])
        line[0] += fac
        line[1] += cost
        if segment.source == "fallback":
            acc.fallback_wh += wh
        acc.cost += cost
        acc.day_cost[d] += cost
        acc.priced_it_wh += wh
        if band.co2_g_per_kwh is not None:
            acc.co2_g += kwh * band.co2_g_per_kwh
            acc.co2_known = True
        if segment.peak:
            acc.peak_wh += wh
            acc.hour_peak_wh[h] += wh
            acc.premium += kwh * (band.price_per_kwh - cheapest)
        if meter is not None:
            meter.add(segment.start_s, fac)
    acc.it_wh += used
    acc.fac_wh += used * pue
    acc.sensor_wh[a.name] = acc.sensor_wh.get(a.name, 0.0) + used


def _finish(
    key: str,
    acc: _Acc,
    layout: Layout,
    hours: list[datetime],
    days: list[date],
    *,
    whole: bool,
) -> GroupReport:
    priced = acc.has_tariff
    demand: list[DemandPeak] = []
    for meter in acc.meters.values():
        demand.extend(meter.peaks())
    demand_charge = math.fsum(p.charge for p in demand) if demand else None
    standing, payers = standing_charge(acc.accounts, days, customer_wide=whole)
    energy_cost = acc.cost if priced else None
    cost = None
    if energy_cost is not None:
        cost = energy_cost + (demand_charge or 0.0) + (standing or 0.0)
    power = acc.power
    peak_window, peak_watts, peak_data_s = power.peak()
    day_figs = tuple(
        DayFigures(
            day=d,
            it_kwh=acc.day_it[i] / 1000.0,
            facility_kwh=acc.day_fac[i] / 1000.0,
            cost=acc.day_cost[i] if priced else None,
            completeness=_ratio(acc.day_frames[i], acc.day_expected[i]),
        )
        for i, d in enumerate(days)
    )
    hour_figs = []
    for i, h in enumerate(hours):
        has_data = power.hour_data_s[i] > 0 or acc.hour_wh[i] != 0
        hour_figs.append(
            HourFigures(
                start=h,
                mean_watts=power.hour_watts[i] if has_data else None,
                completeness=_ratio(acc.hour_frames[i], acc.hour_expected[i]),
                peak_share=acc.hour_peak_wh[i] / acc.hour_wh[i]
                if acc.hour_wh[i] > 0
                else 0.0,
                data_s=power.hour_data_s[i],
            )
        )
    return GroupReport(
        key=key,
        sensors=tuple(sorted(acc.sensors)),
        it_kwh=acc.it_wh / 1000.0,
        facility_kwh=acc.fac_wh / 1000.0,
        energy_cost=energy_cost,
        demand_charge=demand_charge,
        cost=cost,
        co2_kg=acc.co2_g / 1000.0 if acc.co2_known else None,
        mean_watts=power.mean_watts,
        peak_watts=peak_watts,
        max_reading_watts=acc.max_reading,
        peak_kwh=acc.peak_wh / 1000.0,
        peak_share=(
            acc.peak_wh / acc.priced_it_wh
            if acc.time_of_use and acc.priced_it_wh > 0
            else None
        ),
        peak_premium=acc.premium if acc.time_of_use else None,
        unpriced_kwh=acc.unpriced_wh / 1000.0,
        received_frames=acc.received,
        expected_frames=acc.expected,
        completeness=_ratio(acc.received, acc.expected),
        sensor_kwh={k: v / 1000.0 for k, v in sorted(acc.sensor_wh.items())},
        demand=tuple(demand),
        days=day_figs,
        hours=tuple(hour_figs),
        data_s=power.data_s,
        peak_window_start=(
            None
            if peak_window is None
            else datetime.fromtimestamp(
                max(layout.start_s, peak_window * PEAK_WINDOW_S), UTC
            )
        ),
        peak_data_s=peak_data_s,
        peak_window_s=0.0 if peak_window is None else layout.window_len_s(peak_window),
        standing_charge=standing,
        standing_days=len(days) if standing is not None else 0,
        standing_payers=payers if standing is not None else 0,
        fallback_kwh=acc.fallback_wh / 1000.0,
        prices=price_lines(acc.lines),
    )


def _ratio(num: float, den: float) -> float | None:
    if den <= 0:
        return None
    return min(1.0, num / den)
