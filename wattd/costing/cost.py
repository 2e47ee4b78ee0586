"""Pricing energy: split intervals at band edges and charge each part its band.

Strategy: an energy interval says "``wh`` were used between ``start`` and
``end``". Within it the power is taken as constant, so a part of the interval
gets the share of energy its duration has. That is exact for the store's
buckets (their energy was itself split by time across bucket edges) and for
single readings (the integrator assumes constant power between frames). The
last part of a split takes whatever the others left, so parts add up to the
interval's energy.

Facility energy is IT energy times the location's PUE; cost and CO2 are on
facility energy, since that is what the meter on the building counts.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from wattd.costing.bands import MARKET, PriceSource
from wattd.costing.tariff import Band, MeterKey, Tariff
from wattd.errors import TariffError
from wattd.support.clock import wall_to_utc

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from zoneinfo import ZoneInfo

    from wattd.core.readings import Reading

__all__ = [
    "DemandPeak",
    "EnergyInterval",
    "HourPrice",
    "PricedPart",
    "Timeline",
    "billing_periods",
    "counter_rise",
    "demand_peaks",
    "hour_prices",
    "intervals_from_readings",
    "intervals_from_totals",
    "price_interval",
]

PEAK_WINDOW_S: Final = 900
"""Peak power is the highest 15-minute average, like a utility's demand meter."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnergyInterval:
    """Energy one meter used over ``[start, end)`` (aware datetimes).

    ``sensor`` is the radio address for one host's data, or the fleet
    identity for data read from a central store. ``readings`` counts the
    frames behind it; it may be fractional once an interval has been cut at a
    report's edges.
    """

    sensor: MeterKey
    start: datetime
    end: datetime
    wh: float
    mean_watts: float | None = None
    max_watts: float | None = None
    readings: float = 0.0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise TariffError(
                f"sensor {self.sensor}: interval {self.start} has no timezone;"
                " use UTC-aware datetimes"
            )
        if self.end < self.start:
            raise TariffError(
                f"sensor {self.sensor}: interval ends ({self.end.isoformat()}) before"
                f" it starts ({self.start.isoformat()})"
            )
        if not math.isfinite(self.wh):
            raise TariffError(f"sensor {self.sensor}: interval energy {self.wh} Wh")

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return (self.end - self.start).total_seconds()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PricedPart:
    """A piece of an interval inside one band."""

    start: datetime
    end: datetime
    wh: float
    facility_wh: float
    band: Band
    peak: bool
    cost: float
    co2_g: float | None
    peak_premium: float
    """For peak parts: cost above what the cheapest band would have charged."""
    source: PriceSource = "band"


def price_interval(
    interval: EnergyInterval, tariff: Tariff, *, pue: float = 1.0
) -> list[PricedPart]:
    """Price an interval, split exactly where the tariff's band changes."""
    slots = list(tariff.slots(interval.start, interval.end))
    if not slots:
        # A zero-length interval (a first reading) is priced at its instant.
        band = tariff.band_at(interval.start)
        local_day = interval.start.astimezone(tariff.timezone).date()
        peak = tariff.is_peak(band, local_day)
        source: PriceSource = "band"
        if tariff.prices is not None:
            source = "market" if band.name == MARKET else "fallback"
        shares = [(interval.start, interval.end, band, peak, source)]
    else:
        shares = [(s.start, s.end, s.band, s.peak, s.source) for s in slots]
    total_s = interval.duration_s
    parts: list[PricedPart] = []
    left = interval.wh
    for i, (start, end, band, peak, src) in enumerate(shares):
        if i == len(shares) - 1:
            wh = left
        else:
            wh = interval.wh * (end - start).total_seconds() / total_s
            left -= wh
        parts.append(_priced(start, end, wh, pue, band, peak, tariff, src))
    return parts


def _priced(
    start: datetime,
    end: datetime,
    wh: float,
    pue: float,
    band: Band,
    peak: bool,
    tariff: Tariff,
    source: PriceSource,
) -> PricedPart:
    facility_wh = wh * pue
    kwh = facility_wh / 1000.0
    co2 = kwh * band.co2_g_per_kwh if band.co2_g_per_kwh is not None else None
    premium = (
        kwh * (band.price_per_kwh - tariff.cheapest_price_per_kwh) if peak else 0.0
    )
    return PricedPart(
        start=start,
        end=end,
        wh=wh,
        facility_wh=facility_wh,
        band=band,
        peak=peak,
        cost=kwh * band.price_per_kwh,
        co2_g=co2,
        peak_premium=premium,
        source=source,
    )


# -- a precomputed timeline for many intervals ---------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """One piece of a :class:`Timeline`: constant band, inside one local hour."""

    start_s: float
    end_s: float
    band: Band | None
    peak: bool
    hour: int
    """Index into :attr:`Timeline.hours`."""
    source: PriceSource = "band"


class Timeline:
    """``[start, end)`` cut at band edges, local hours and every ``step_s``.

    Pricing millions of store buckets one by one through :meth:`Tariff.slots`
    is slow; a report builds one timeline per tariff and drops each bucket into
    it with a bisection.
    """

    def __init__(
        self,
        start: datetime,
        end: datetime,
        *,
        tariff: Tariff | None,
        timezone: ZoneInfo,
        step_s: int = PEAK_WINDOW_S,
    ) -> None:
        self.start = start.astimezone(UTC)
        self.end = end.astimezone(UTC)
        self.tariff = tariff
        self.timezone = timezone
        self.hours = local_hours(self.start, self.end, timezone)
        self.days = [h.astimezone(timezone).date() for h in self.hours]
        t0, t1 = self.start.timestamp(), self.end.timestamp()
        cuts = {t0, t1}
        cuts.update(h.timestamp() for h in self.hours)
        first_step = math.ceil(t0 / step_s) * step_s
        cuts.update(float(s) for s in range(first_step, math.ceil(t1), step_s))
        slots = list(tariff.slots(self.start, self.end)) if tariff else []
        cuts.update(s.start.timestamp() for s in slots)
        self.edges = sorted(c for c in cuts if t0 <= c <= t1)
        slot_starts = [s.start.timestamp() for s in slots]
        hour_starts = [h.timestamp() for h in self.hours]
        self.segments: list[Segment] = []
        for a, b in zip(self.edges, self.edges[1:], strict=False):
            slot = slots[bisect_right(slot_starts, a) - 1] if slots else None
            self.segments.append(
                Segment(
                    start_s=a,
                    end_s=b,
                    band=slot.band if slot else None,
                    peak=slot.peak if slot else False,
                    hour=max(0, bisect_right(hour_starts, a) - 1),
                    source=slot.source if slot else "band",
                )
            )

    def split(self, start: datetime, end: datetime) -> Iterator[tuple[Segment, float]]:
        """Yield each segment an interval touches with the share of it inside.

        Shares outside the timeline are dropped, so they add up to the part
        of the interval within ``[start, end)`` of the timeline.
        """
        a, b = start.timestamp(), end.timestamp()
        edges = self.edges
        if not self.segments:
            return
        if b <= a:
            if edges[0] <= a < edges[-1]:
                yield self.segments[bisect_right(edges, a) - 1], 1.0
            return
        i = max(0, bisect_right(edges, a) - 1)
        duration = b - a
        n = len(self.segments)
        while i < n and edges[i] < b:
            overlap = min(b, edges[i + 1]) - max(a, edges[i])
            if overlap > 0:
                yield self.segments[i], overlap / duration
            i += 1


def local_hours(start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """UTC starts of the local clock hours that overlap ``[start, end)``."""
    out: list[datetime] = []
    t = _local_hour_floor(start.astimezone(UTC), tz)
    stop = end.astimezone(UTC)
    while t < stop:
        out.append(t)
        nxt = _local_hour_floor(t + timedelta(hours=1), tz)
        t = nxt if nxt > t else t + timedelta(hours=1)
    return out


def _local_hour_floor(t: datetime, tz: ZoneInfo) -> datetime:
    local = t.astimezone(tz)
    into = timedelta(
        minutes=local.minute, seconds=local.second, microseconds=local.microsecond
    )
    return t - into


# -- demand charges ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DemandPeak:
    """The highest window-average power of one billing period and its charge."""

    period_start: datetime
    period_end: datetime
    peak_kw: float
    window_start: datetime | None
    charge: float


def billing_periods(
    tariff: Tariff, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The tariff's billing periods that overlap ``[start, end)``, in UTC.

    A period starts at local midnight on the demand charge's ``billing_day``.
    """
    if tariff.demand is None:
        return []
    tz = tariff.timezone
    bday = tariff.demand.billing_day
    local = start.astimezone(tz).date()
    year, month = local.year, local.month
    if local.day < bday:
        year, month = _add_month(year, month, -1)
    out: list[tuple[datetime, datetime]] = []
    while True:
        ps = wall_to_utc(datetime(year, month, bday), tz)  # local wall time
        if ps >= end:
            break
        ny, nm = _add_month(year, month, 1)
        pe = wall_to_utc(datetime(ny, nm, bday), tz)  # local wall time
        out.append((ps, pe))
        year, month = ny, nm
    return out


def _add_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


class DemandMeter:
    """Accumulates facility energy per demand window, then finds period peaks."""

    def __init__(self, tariff: Tariff, start: datetime, end: datetime) -> None:
        if tariff.demand is None:
            raise TariffError(f"tariff {tariff.name!r} has no demand charge")
        self.tariff = tariff
        self.start = start
        self.end = end
        self.window_s = tariff.demand.window_min * 60
        self.periods = billing_periods(tariff, start, end)
        self.windows: dict[int, float] = {}

    def add(self, at_s: float, facility_wh: float) -> None:
        """Add energy used at ``at_s`` (epoch seconds) to its window."""
        key = math.floor(at_s / self.window_s)
        self.windows[key] = self.windows.get(key, 0.0) + facility_wh

    def peaks(self) -> list[DemandPeak]:
        """One result per billing period, in order."""
        assert self.tariff.demand is not None  # noqa: S101 - checked in __init__
        price = self.tariff.demand.price_per_kw
        hours = self.window_s / 3600.0
        out = []
        for ps, pe in self.periods:
            lo, hi = ps.timestamp(), pe.timestamp()
            best_key: int | None = None
            best_wh = 0.0
            for key, wh in self.windows.items():
                if lo <= key * self.window_s < hi and wh > best_wh:
                    best_key, best_wh = key, wh
            kw = best_wh / hours / 1000.0
            out.append(
                DemandPeak(
                    period_start=ps,
                    period_end=pe,
                    peak_kw=kw,
                    window_start=(
                        datetime.fromtimestamp(best_key * self.window_s, UTC)
                        if best_key is not None
                        else None
                    ),
                    charge=kw * price,
                )
            )
        return out


def demand_peaks(
    tariff: Tariff,
    intervals: Iterable[EnergyInterval],
    start: datetime,
    end: datetime,
    *,
    pue: float = 1.0,
) -> list[DemandPeak]:
    """Demand charges of the summed load of ``intervals`` within ``[start, end)``."""
    if tariff.demand is None:
        return []
    step = math.gcd(PEAK_WINDOW_S, tariff.demand.window_min * 60)
    timeline = Timeline(start, end, tariff=None, timezone=tariff.timezone, step_s=step)
    meter = DemandMeter(tariff, start, end)
    for interval in intervals:
        for segment, share in timeline.split(interval.start, interval.end):
            meter.add(segment.start_s, interval.wh * share * pue)
    return meter.peaks()


# -- intervals from readings ------------------------------------------------------


def intervals_from_readings(readings: Iterable[Reading]) -> Iterator[EnergyInterval]:
    """One interval per reading: from the sensor's previous reading to this one.

    The first reading of a sensor becomes a zero-length interval at its time,
    so no energy is lost and none is invented.
    """
    previous: dict[int, datetime] = {}
    for reading in readings:
        start = previous.get(reading.sensor, reading.time)
        if start > reading.time:
            start = reading.time
        previous[reading.sensor] = reading.time
        yield EnergyInterval(
            sensor=reading.sensor,
            start=start,
            end=reading.time,
            wh=reading.wh_delta,
            mean_watts=reading.watts,
            max_watts=reading.watts,
            readings=1.0,
        )


def counter_rise(previous: float, total: float) -> float:
    """Energy between two readings of a running total.

    A total that went down was reset (a meter or daemon that lost its count),
    so it counts from zero.
    """
    return total - previous if total >= previous else total


def intervals_from_totals(
    rows: Iterable[tuple[MeterKey, datetime, float, float | None]],
) -> Iterator[EnergyInterval]:
    """Intervals from ``(sensor, time, wh_total, watts)`` rows, e.g. MQTT JSON.

    Energy is the rise of the running total between consecutive rows of a
    sensor (:func:`counter_rise`).
    """
    last: dict[MeterKey, tuple[datetime, float]] = {}
    for sensor, time, total, watts in rows:
        prev = last.get(sensor)
        last[sensor] = (time, total)
        if prev is None:
            yield EnergyInterval(
                sensor=sensor,
                start=time,
                end=time,
                wh=0.0,
                mean_watts=watts,
                max_watts=watts,
                readings=1.0,
            )
            continue
        start = min(prev[0], time)
        wh = counter_rise(prev[1], total)
        yield EnergyInterval(
            sensor=sensor,
            start=start,
            end=time,
            wh=wh,
            mean_watts=watts,
            max_watts=watts,
            readings=1.0,
        )


# -- price per hour ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HourPrice:
    """The time-weighted mean price (and carbon) of one local clock hour."""

    start: datetime
    end: datetime
    price_per_kwh: float
    co2_g_per_kwh: float | None
    source: PriceSource
    """Of the hour's start: ``market``, ``band`` or ``fallback``."""
    band: str
    """Of the hour's start; ``market`` for a price file's row."""


def hour_prices(timeline: Timeline) -> list[HourPrice | None]:
    """The price of each hour of a tariff's timeline (None where nothing prices it)."""
    n = len(timeline.hours)
    span = [0.0] * n
    money = [0.0] * n
    co2_span = [0.0] * n
    co2 = [0.0] * n
    first: list[Segment | None] = [None] * n
    for seg in timeline.segments:
        band = seg.band
        if band is None:
            continue
        h = seg.hour
        length = seg.end_s - seg.start_s
        if first[h] is None:
            first[h] = seg
        span[h] += length
        money[h] += length * band.price_per_kwh
        if band.co2_g_per_kwh is not None:
            co2_span[h] += length
            co2[h] += length * band.co2_g_per_kwh
    out: list[HourPrice | None] = []
    for h in range(n):
        lead = first[h]
        if lead is None or lead.band is None or span[h] <= 0:
            out.append(None)
            continue
        end = timeline.hours[h + 1] if h + 1 < n else timeline.end
        out.append(
            HourPrice(
                start=max(timeline.hours[h], timeline.start),
                end=end,
                price_per_kwh=money[h] / span[h],
                co2_g_per_kwh=co2[h] / co2_span[h] if co2_span[h] > 0 else None,
                source=lead.source,
                band=lead.band.name,
            )
        )
    return out
