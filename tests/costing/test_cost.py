from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from wattd.config import parse_config
from wattd.core.readings import Reading
from wattd.costing.cost import (
    EnergyInterval,
    Timeline,
    billing_periods,
    demand_peaks,
    intervals_from_readings,
    intervals_from_totals,
    price_interval,
)
from wattd.costing.tariff import Tariff, TariffBook
from wattd.errors import TariffError

NY = ZoneInfo("America/New_York")


def tou(extra: str = "", tz: str = "UTC") -> Tariff:
    text = f"""\
tariffs:
  timezone: {tz}
  plans:
    t:
      price_per_kwh: 0.30
      co2_g_per_kwh: 400
      bands:
        - {{name: night, price_per_kwh: 0.10, co2_g_per_kwh: 200, hours: "00:00-06:00"}}
        - {{name: peak, price_per_kwh: 1.00, hours: "17:00-20:00", days: weekdays}}
{extra}"""
    return TariffBook(parse_config(text)).tariffs["t"]


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def interval(
    start: datetime, end: datetime, wh: float, sensor: int = 1
) -> EnergyInterval:
    return EnergyInterval(sensor=sensor, start=start, end=end, wh=wh)


def test_interval_across_a_band_boundary_matches_hand_computation() -> None:
    # 100 W from 05:00 to 07:00 UTC on a Wednesday: 100 Wh at night, 100 Wh
    # standard -> 0.1 kWh * 0.10 + 0.1 kWh * 0.30 = 0.04.
    parts = price_interval(interval(at(2025, 3, 5, 5), at(2025, 3, 5, 7), 200.0), tou())
    assert [p.band.name for p in parts] == ["night", "standard"]
    assert [p.wh for p in parts] == pytest.approx([100.0, 100.0])
    assert sum(p.cost for p in parts) == pytest.approx(0.04)
    assert sum(p.co2_g for p in parts if p.co2_g is not None) == pytest.approx(
        0.1 * 200 + 0.1 * 400
    )


def test_parts_add_up_to_the_interval_energy() -> None:
    rng = random.Random(7)
    t = tou(tz="Europe/Berlin")
    for _ in range(200):
        start = at(2025, 3, 28) + timedelta(seconds=rng.uniform(0, 5 * 86400))
        end = start + timedelta(seconds=rng.uniform(0, 30 * 3600))
        wh = rng.uniform(0, 5000)
        parts = price_interval(interval(start, end, wh), t)
        assert math.fsum(p.wh for p in parts) == pytest.approx(wh, rel=1e-12, abs=1e-9)
        assert parts[0].start == start
        assert parts[-1].end == end


def test_zero_length_interval_is_priced_at_its_instant() -> None:
    parts = price_interval(interval(at(2025, 3, 5, 18), at(2025, 3, 5, 18), 5.0), tou())
    assert len(parts) == 1
    assert parts[0].band.name == "peak"
    assert parts[0].cost == pytest.approx(0.005 * 1.00)


def test_pue_scales_facility_energy_cost_and_co2() -> None:
    parts = price_interval(
        interval(at(2025, 3, 5, 8), at(2025, 3, 5, 9), 1000.0), tou(), pue=1.4
    )
    [part] = parts
    assert part.wh == pytest.approx(1000.0)
    assert part.facility_wh == pytest.approx(1400.0)
    assert part.cost == pytest.approx(1.4 * 0.30)
    assert part.co2_g == pytest.approx(1.4 * 400)


def test_peak_premium_is_the_excess_over_the_cheapest_band() -> None:
    # 2 kWh in the peak band: premium = 2 * (1.00 - 0.10).
    [part] = price_interval(
        interval(at(2025, 3, 5, 17), at(2025, 3, 5, 19), 2000.0), tou()
    )
    assert part.peak
    assert part.peak_premium == pytest.approx(1.8)
    [off] = price_interval(
        interval(at(2025, 3, 5, 8), at(2025, 3, 5, 9), 1000.0), tou()
    )
    assert not off.peak
    assert off.peak_premium == 0.0


def test_dst_spring_forward_energy_neither_lost_nor_doubled() -> None:
    # A meter at 1 kW through the New York night of 2024-03-10: 00:00 to 06:00
    # local is only 5 real hours, so 5 kWh, all in the night band.
    t = tou(tz="America/New_York")
    start = datetime(2024, 3, 10, tzinfo=NY)
    end = datetime(2024, 3, 10, 6, tzinfo=NY)
    hours = (end - start.astimezone(UTC)).total_seconds() / 3600
    assert hours == 5
    parts = price_interval(interval(start, end, 1000.0 * hours), t)
    assert {p.band.name for p in parts} == {"night"}
    assert sum(p.cost for p in parts) == pytest.approx(5 * 0.10)


def test_dst_fall_back_prices_the_repeated_hour() -> None:
    # 2024-11-03 00:00-03:00 local is 4 real hours; the 01:00 hour repeats.
    t = tou(tz="America/New_York")
    start = datetime(2024, 11, 3, tzinfo=NY)
    end = datetime(2024, 11, 3, 3, tzinfo=NY)
    parts = price_interval(interval(start, end, 4000.0), t)
    assert sum((p.end - p.start).total_seconds() for p in parts) == 4 * 3600
    assert sum(p.cost for p in parts) == pytest.approx(4 * 0.10)


def test_naive_or_reversed_intervals_are_refused() -> None:
    with pytest.raises(TariffError, match="no timezone"):
        EnergyInterval(sensor=1, start=datetime(2025, 1, 1), end=at(2025, 1, 2), wh=1)
    with pytest.raises(TariffError, match="before it starts"):
        interval(at(2025, 1, 2), at(2025, 1, 1), 1.0)
    with pytest.raises(TariffError, match="energy"):
        interval(at(2025, 1, 1), at(2025, 1, 2), math.nan)


# -- demand charges ---------------------------------------------------------------

DEMAND = """\
      demand: {price_per_kw: 12.5, window_min: 15, billing_day: 15}
"""


def test_demand_charge_from_peak_15_minute_average_per_billing_period() -> None:
    t = tou(DEMAND)
    # A steady 1 kW, with 2.4 kW for 15 minutes on 2025-03-10 (period to the
    # 15th) and 3 kW for 10 minutes on 2025-03-20 (next period): the 10-minute
    # spike inside an aligned 15-minute window averages (3*10 + 1*5)/15 kW.
    intervals = []
    t0 = at(2025, 3, 8)
    for minute in range(14 * 24 * 60):
        start = t0 + timedelta(minutes=minute)
        kw = 1.0
        if at(2025, 3, 10, 12) <= start < at(2025, 3, 10, 12, 15):
            kw = 2.4
        if at(2025, 3, 20, 9, 0) <= start < at(2025, 3, 20, 9, 10):
            kw = 3.0
        intervals.append(interval(start, start + timedelta(minutes=1), kw * 1000 / 60))
    peaks = demand_peaks(t, intervals, t0, at(2025, 3, 22), pue=1.0)
    assert [(p.period_start, p.period_end) for p in peaks] == [
        (at(2025, 2, 15), at(2025, 3, 15)),
        (at(2025, 3, 15), at(2025, 4, 15)),
    ]
    assert peaks[0].peak_kw == pytest.approx(2.4)
    assert peaks[0].window_start == at(2025, 3, 10, 12)
    assert peaks[0].charge == pytest.approx(2.4 * 12.5)
    assert peaks[1].peak_kw == pytest.approx((3 * 10 + 1 * 5) / 15)
    assert peaks[1].charge == pytest.approx(12.5 * 35 / 15)
    with_pue = demand_peaks(t, intervals, t0, at(2025, 3, 22), pue=1.5)
    assert with_pue[0].peak_kw == pytest.approx(2.4 * 1.5)


def test_billing_periods_start_at_local_midnight() -> None:
    t = tou(DEMAND, tz="America/New_York")
    periods = billing_periods(t, at(2025, 3, 1), at(2025, 4, 20))
    assert [p[0].astimezone(NY).isoformat() for p in periods] == [
        "2025-02-15T00:00:00-05:00",
        "2025-03-15T00:00:00-04:00",
        "2025-04-15T00:00:00-04:00",
    ]
    assert billing_periods(tou(), at(2025, 3, 1), at(2025, 4, 1)) == []


# -- the timeline ---------------------------------------------------------------


def test_timeline_split_shares_cover_inside_and_clip_outside() -> None:
    t = tou(tz="Europe/Berlin")
    line = Timeline(
        at(2025, 3, 29), at(2025, 3, 31), tariff=t, timezone=ZoneInfo("Europe/Berlin")
    )
    inside = list(line.split(at(2025, 3, 29, 23, 50), at(2025, 3, 30, 2, 10)))
    assert sum(share for _, share in inside) == pytest.approx(1.0)
    straddling = list(line.split(at(2025, 3, 28, 23), at(2025, 3, 29, 1)))
    assert sum(share for _, share in straddling) == pytest.approx(0.5)
    assert list(line.split(at(2025, 4, 2), at(2025, 4, 3))) == []
    # 2025-03-30 in Berlin has 23 hours; the timeline's local hours say so.
    days = [d.isoformat() for d in line.days]
    assert days.count("2025-03-30") == 23
    assert (
        days.count("2025-03-29") == 23
    )  # 01:00-24:00 local; 00:00-01:00 is on the 28th


# -- intervals from readings ----------------------------------------------------------


def reading(
    sensor: int, t: datetime, wh_delta: float, wh_total: float = 0.0
) -> Reading:
    return Reading(
        sensor=sensor,
        name=f"s{sensor}",
        time=t,
        monotonic_s=0.0,
        watts=100.0,
        va=100.0,
        vrms=120.0,
        irms=0.8,
        power_factor=1.0,
        wh_total=wh_total,
        wh_delta=wh_delta,
        rssi_dbm=None,
    )


def test_intervals_from_readings_keep_every_watt_hour() -> None:
    readings = [
        reading(1, at(2025, 1, 1, 0, 0, 0), 0.0),
        reading(2, at(2025, 1, 1, 0, 0, 1), 0.4),
        reading(1, at(2025, 1, 1, 0, 0, 2), 0.06),
        reading(1, at(2025, 1, 1, 0, 0, 4), 0.05),
    ]
    got = list(intervals_from_readings(readings))
    assert [(i.sensor, i.start.second, i.end.second, i.wh) for i in got] == [
        (1, 0, 0, 0.0),
        (2, 1, 1, 0.4),  # a first reading: zero length, energy kept
        (1, 0, 2, 0.06),
        (1, 2, 4, 0.05),
    ]
    assert sum(i.wh for i in got) == pytest.approx(0.51)


def test_intervals_from_totals_handle_a_counter_reset() -> None:
    rows = [
        (1, at(2025, 1, 1, 0, 0, 0), 100.0, 50.0),
        (1, at(2025, 1, 1, 0, 0, 2), 100.5, 50.0),
        (1, at(2025, 1, 1, 0, 0, 4), 0.25, 50.0),  # meter state lost: counts from 0
    ]
    got = list(intervals_from_totals(rows))
    assert [i.wh for i in got] == pytest.approx([0.0, 0.5, 0.25])
