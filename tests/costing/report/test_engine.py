from __future__ import annotations

import csv
import io
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.costing.cost import EnergyInterval, intervals_from_readings
from wattd.costing.report.engine import (
    FRAME_PERIOD_S,
    GroupBy,
    build_report,
    period_range,
)
from wattd.costing.report.text import (
    format_amount,
    format_duration,
    format_money,
    render_csv,
    render_json,
    render_table,
)
from wattd.errors import TariffError
from wattd.storage.intervals import intervals_from_jsonl, intervals_from_store

BERLIN = ZoneInfo("Europe/Berlin")

CONFIG = """\
sensors:
  - {address: 1, name: web-1, rack: rack-a, customer: acme, location: fra}
  - {address: 2, name: web-2, rack: rack-a, customer: acme, location: fra}
  - {address: 3, name: db-1, rack: rack-b, customer: globex, location: ams}
  - {address: 4, name: fridge, customer: home}
locations:
  fra: {pue: 1.5}
  ams: {pue: 1.2, tariff: green}
tariffs:
  timezone: UTC
  default: tou
  plans:
    tou:
      currency: EUR
      price_per_kwh: 0.30
      co2_g_per_kwh: 400
      bands:
        - {name: night, price_per_kwh: 0.10, hours: "00:00-06:00"}
        - {name: peak, price_per_kwh: 1.00, hours: "17:00-20:00", days: weekdays}
    green:
      currency: EUR
      price_per_kwh: 0.25
      co2_g_per_kwh: 50
"""


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def steady(
    sensor: int, start: datetime, end: datetime, watts: float, step_s: float = 60.0
) -> list[EnergyInterval]:
    out = []
    t = start
    while t < end:
        nxt = min(t + timedelta(seconds=step_s), end)
        span = (nxt - t).total_seconds()
        out.append(
            EnergyInterval(
                sensor=sensor,
                start=t,
                end=nxt,
                wh=watts * span / 3600,
                mean_watts=watts,
                max_watts=watts,
                readings=span / FRAME_PERIOD_S,
            )
        )
        t = nxt
    return out


def make_reading(
    sensor: int, t: datetime, watts: float, wh_delta: float, total: float
) -> Reading:
    return Reading(
        sensor=sensor,
        name=f"sensor-{sensor}",
        time=t,
        monotonic_s=t.timestamp(),
        watts=watts,
        va=watts,
        vrms=230.0,
        irms=watts / 230,
        power_factor=1.0,
        wh_total=total,
        wh_delta=wh_delta,
        rssi_dbm=-50,
    )


def random_readings(seed: int, start: datetime, end: datetime) -> list[Reading]:
    """Irregular Tweet-a-Watt-like readings of four sensors, with dropouts."""
    rng = random.Random(seed)
    out: list[Reading] = []
    for sensor in (1, 2, 3, 4, 9):
        t = start + timedelta(seconds=rng.uniform(0, 3))
        total = rng.uniform(0, 1e5)
        previous = None
        while t < end:
            watts = rng.uniform(20, 900)
            wh = (
                0.0
                if previous is None
                else watts * (t - previous).total_seconds() / 3600
            )
            total += wh
            out.append(make_reading(sensor, t, watts, wh, total))
            previous = t
            gap = (
                rng.uniform(1.9, 2.3) if rng.random() > 0.002 else rng.uniform(60, 900)
            )
            t += timedelta(seconds=gap)
    out.sort(key=lambda r: r.time)
    return out


def config() -> Config:
    return parse_config(CONFIG)


# -- totals -----------------------------------------------------------------------


# Over local midnight and Berlin's DST change (01:00 UTC), and band edges.
SPAN = (at(2025, 3, 29, 21, 30), at(2025, 3, 30, 5, 10))


@pytest.fixture(scope="module")
def many_readings() -> list[Reading]:
    return random_readings(11, *SPAN)


@pytest.mark.parametrize("by", ["sensor", "rack", "customer", "location", "all"])
def test_report_totals_equal_the_sum_of_the_readings_energy(
    by: GroupBy, many_readings: list[Reading]
) -> None:
    start, end = SPAN
    readings = many_readings
    cfg = parse_config(CONFIG.replace("timezone: UTC", "timezone: Europe/Berlin"))
    report = build_report(cfg, intervals_from_readings(readings), start, end, by=by)
    expected_kwh = math.fsum(r.wh_delta for r in readings) / 1000
    assert report.total.it_kwh == pytest.approx(expected_kwh, rel=1e-9)
    assert math.fsum(g.it_kwh for g in report.groups) == pytest.approx(
        expected_kwh, rel=1e-9
    )
    assert math.fsum(d.it_kwh for d in report.total.days) == pytest.approx(
        expected_kwh, rel=1e-9
    )
    assert math.fsum(report.total.sensor_kwh.values()) == pytest.approx(
        expected_kwh, rel=1e-9
    )
    # Each meter's hourly power times its time with data gives the energy back,
    # and a group's mean is the sum of its meters' means.
    if by == "sensor":
        for g in report.groups:
            hourly_wh = math.fsum((h.mean_watts or 0.0) * h.data_s for h in g.hours)
            assert hourly_wh / 3.6e6 == pytest.approx(g.it_kwh, rel=1e-9)
            assert g.mean_watts == pytest.approx(g.it_kwh * 3.6e6 / g.data_s)
    assert report.total.mean_watts == pytest.approx(
        math.fsum(g.mean_watts for g in report.groups)
    )
    assert report.total.received_frames == pytest.approx(len(readings))
    fac = math.fsum(g.facility_kwh for g in report.groups)
    assert report.total.facility_kwh == pytest.approx(fac, rel=1e-9)


def test_cost_peak_share_and_premium_match_hand_computation() -> None:
    # One sensor, 100 W for a whole Wednesday (UTC): 0.6 kWh night at 0.10,
    # 0.3 kWh peak at 1.00, 1.5 kWh standard at 0.30; PUE 1.5.
    start, end = at(2025, 3, 5), at(2025, 3, 6)
    report = build_report(
        config(), steady(1, start, end, 100.0), start, end, by="sensor"
    )
    g = report.group("web-1")
    assert g.it_kwh == pytest.approx(2.4)
    assert g.facility_kwh == pytest.approx(3.6)
    assert g.energy_cost == pytest.approx(1.5 * (0.6 * 0.10 + 0.3 * 1.00 + 1.5 * 0.30))
    assert g.cost == pytest.approx(1.5 * 0.81)
    assert g.peak_kwh == pytest.approx(0.3)
    assert g.peak_share == pytest.approx(0.3 / 2.4)
    assert g.peak_premium == pytest.approx(1.5 * 0.3 * (1.00 - 0.10))
    assert g.co2_kg == pytest.approx(3.6 * 0.4)
    assert g.mean_watts == pytest.approx(100.0)
    assert g.peak_watts == pytest.approx(100.0)
    assert g.cost_per_it_kwh == pytest.approx(1.5 * 0.81 / 2.4)
    assert g.completeness == pytest.approx(1.0)


def test_locations_compare_on_cost_and_co2_per_it_kwh() -> None:
    start, end = at(2025, 3, 5), at(2025, 3, 6)
    intervals = steady(1, start, end, 100.0) + steady(3, start, end, 100.0)
    report = build_report(config(), intervals, start, end, by="location")
    fra, ams = report.group("fra"), report.group("ams")
    assert fra.it_kwh == pytest.approx(ams.it_kwh)
    assert fra.facility_kwh == pytest.approx(2.4 * 1.5)
    assert ams.facility_kwh == pytest.approx(2.4 * 1.2)
    assert ams.cost_per_it_kwh == pytest.approx(1.2 * 0.25)
    assert fra.cost_per_it_kwh == pytest.approx(1.5 * 0.81 / 2.4)
    assert ams.co2_g_per_it_kwh == pytest.approx(1.2 * 50)
    assert fra.co2_g_per_it_kwh == pytest.approx(1.5 * 400)
    assert ams.peak_share is None  # a flat tariff has no peak hours


def test_missing_hour_shows_as_missing_not_cheap() -> None:
    start, end = at(2025, 3, 5), at(2025, 3, 6)
    gap = (at(2025, 3, 5, 18), at(2025, 3, 5, 19))  # the meter was silent in peak time
    intervals = steady(1, start, gap[0], 100.0) + steady(1, gap[1], end, 100.0)
    report = build_report(config(), intervals, start, end, by="sensor", only=["web-1"])
    g = report.group("web-1")
    assert g.completeness == pytest.approx(23 / 24)
    silent = [h for h in g.hours if h.mean_watts is None]
    assert [h.start for h in silent] == [gap[0]]
    assert silent[0].completeness == 0.0
    day = g.days[0]
    assert day.completeness == pytest.approx(23 / 24)
    text = render_table(report)
    assert "96%" in text  # 23 of 24 hours


def test_configured_sensor_without_data_is_listed_as_missing() -> None:
    start, end = at(2025, 3, 5), at(2025, 3, 6)
    report = build_report(
        config(), steady(1, start, end, 50.0), start, end, by="sensor"
    )
    db = report.group("db-1")
    assert db.it_kwh == 0.0
    assert db.completeness == 0.0
    assert db.cost == 0.0  # it has a tariff: nothing used, nothing owed
    assert db.expected_frames == pytest.approx(86400 / FRAME_PERIOD_S)
    assert report.total.completeness == pytest.approx(1 / 4)


def test_unknown_sensors_and_no_tariff() -> None:
    cfg = parse_config("sensors: [{address: 1, name: a}]\n")
    start, end = at(2025, 3, 5), at(2025, 3, 5, 2)
    report = build_report(cfg, steady(5, start, end, 60.0), start, end, by="rack")
    assert report.keys() == ["(unassigned)"]
    g = report.group("(unassigned)")
    assert g.cost is None
    assert g.unpriced_kwh == pytest.approx(0.12)
    assert g.sensors == ("a", "sensor-5")
    assert "No tariff for" in render_table(report)
    assert format_money(None, None) == "\N{EM DASH}"


def test_intervals_outside_the_range_are_cut_at_its_edges() -> None:
    start, end = at(2025, 3, 5, 10), at(2025, 3, 5, 11)
    spill = [
        EnergyInterval(
            sensor=1, start=at(2025, 3, 5, 9, 30), end=at(2025, 3, 5, 10, 30), wh=60.0
        ),
        EnergyInterval(
            sensor=1, start=at(2025, 3, 5, 10, 45), end=at(2025, 3, 5, 11, 15), wh=30.0
        ),
        EnergyInterval(
            sensor=1, start=at(2025, 3, 5, 12), end=at(2025, 3, 5, 13), wh=99.0
        ),
    ]
    report = build_report(config(), spill, start, end, by="all")
    assert report.total.it_kwh == pytest.approx((30.0 + 15.0) / 1000)


def test_only_filters_groups_and_refuses_unknown_ones() -> None:
    start, end = at(2025, 3, 5), at(2025, 3, 5, 1)
    intervals = steady(1, start, end, 10.0) + steady(3, start, end, 10.0)
    report = build_report(config(), intervals, start, end, by="customer", only=["acme"])
    assert report.keys() == ["acme"]
    assert report.total.it_kwh == pytest.approx(report.group("acme").it_kwh)
    with pytest.raises(TariffError, match="no group named nobody"):
        build_report(config(), intervals, start, end, by="customer", only=["nobody"])
    with pytest.raises(TariffError, match="empty"):
        build_report(config(), intervals, end, start)


def test_demand_charge_is_added_to_cost() -> None:
    text = CONFIG.replace(
        "      co2_g_per_kwh: 400\n",
        "      co2_g_per_kwh: 400\n      demand: {price_per_kw: 10}\n",
    )
    start, end = at(2025, 3, 5), at(2025, 3, 6)
    intervals = steady(1, start, end, 200.0)
    report = build_report(
        parse_config(text), intervals, start, end, by="sensor", only=["web-1"]
    )
    g = report.group("web-1")
    assert g.demand_charge == pytest.approx(0.2 * 1.5 * 10)
    assert g.energy_cost is not None
    assert g.cost == pytest.approx(g.energy_cost + 3.0)
    assert [p.period_start for p in g.demand] == [at(2025, 3, 1)]


# -- periods ------------------------------------------------------------------------


def test_period_ranges_in_local_calendar() -> None:
    now = datetime(2025, 3, 30, 15, tzinfo=BERLIN)  # a Sunday, the DST day
    day = period_range("day", now, BERLIN)
    assert day == (
        datetime(2025, 3, 30, tzinfo=BERLIN).astimezone(UTC),
        now.astimezone(UTC),
    )
    prev_day = period_range("day", now, BERLIN, previous=True)
    assert prev_day == (at(2025, 3, 28, 23), at(2025, 3, 29, 23))
    week = period_range("week", now, BERLIN, previous=True)
    assert week == (at(2025, 3, 16, 23), at(2025, 3, 23, 23))
    month = period_range("month", now, BERLIN, previous=True)
    assert month == (at(2025, 1, 31, 23), at(2025, 2, 28, 23))
    assert period_range("month", now, BERLIN)[0] == at(2025, 2, 28, 23)


# -- renderers -----------------------------------------------------------------------


def test_csv_json_and_table_agree_with_the_report() -> None:
    start, end = at(2025, 3, 5), at(2025, 3, 6)
    intervals = (
        steady(1, start, end, 100.0)
        + steady(2, start, end, 50.0)
        + steady(4, start, end, 10.0)
    )
    report = build_report(config(), intervals, start, end, by="rack")
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [r["group"] for r in rows] == ["rack-a", "rack-b", "(unassigned)", "total"]
    assert rows[-1]["kind"] == "total"
    assert float(rows[-1]["it_kwh"]) == pytest.approx(report.total.it_kwh)
    assert float(rows[0]["cost"]) == pytest.approx(report.group("rack-a").cost)
    assert rows[0]["currency"] == "EUR"
    data = json.loads(render_json(report))
    assert data["total"]["it_kwh"] == pytest.approx(report.total.it_kwh)
    assert len(data["total"]["days"]) == 1
    assert len(data["total"]["hours"]) == 24
    assert data["groups"][0]["sensor_kwh"] == {
        "web-1": pytest.approx(2.4),
        "web-2": pytest.approx(1.2),
    }
    table = render_table(report)
    assert "rack-a" in table
    assert format_money(report.total.cost, "EUR") in table
    assert format_money(61.8, "USD") == "$61.80"
    assert format_money(1234.5, "CHF") == "1,234.50 CHF"


# -- sources ---------------------------------------------------------------------------


def test_store_adapter_yields_the_stored_energy(tmp_path: Path) -> None:
    from wattd.storage.store import Store

    start, end = at(2025, 3, 5, 10, 50), at(2025, 3, 5, 12, 10)
    readings = random_readings(3, start, end)
    store = Store.open(tmp_path / "wattd.sqlite")
    try:
        store.insert_readings(readings)
        intervals = list(
            intervals_from_store(
                store, start - timedelta(hours=1), end + timedelta(hours=1)
            )
        )
    finally:
        store.close()
    assert math.fsum(i.wh for i in intervals) == pytest.approx(
        math.fsum(r.wh_delta for r in readings), rel=1e-9
    )
    assert sum(i.readings for i in intervals) == len(readings)
    report = build_report(
        config(), intervals, start - timedelta(hours=1), end + timedelta(hours=1)
    )
    assert report.total.it_kwh == pytest.approx(
        math.fsum(r.wh_delta for r in readings) / 1000
    )


def test_jsonl_readings_become_intervals(tmp_path: Path) -> None:
    start = at(2025, 3, 5, 10)
    readings = [
        make_reading(1, start + timedelta(seconds=2 * i), 100.0, 0.0, 50.0 + i * 0.05)
        for i in range(10)
    ]
    path = tmp_path / "readings.jsonl"
    path.write_text(
        "\n".join(json.dumps(r.to_json_dict()) for r in reversed(readings)) + "\n"
    )
    intervals = intervals_from_jsonl(path)
    assert math.fsum(i.wh for i in intervals) == pytest.approx(0.45)
    path.write_text('{"time": "2025-03-05T10:00:00Z", "sensor": 1}\n')
    with pytest.raises(TariffError, match=r"readings.jsonl:1"):
        intervals_from_jsonl(path)


# -- time with data -------------------------------------------------------------------


def heater_readings(
    first: datetime, seconds: float, watts: float = 100.0
) -> list[Reading]:
    """A meter that starts sending at ``first``, one frame per 2.08 s."""
    out: list[Reading] = []
    total = 0.0
    for i in range(int(seconds / FRAME_PERIOD_S) + 1):
        wh = 0.0 if i == 0 else watts * FRAME_PERIOD_S / 3600
        total += wh
        out.append(
            make_reading(
                1, first + timedelta(seconds=i * FRAME_PERIOD_S), watts, wh, total
            )
        )
    return out


@pytest.mark.parametrize("source", ["store", "readings"])
def test_mean_and_peak_count_only_the_time_with_data(
    source: str, tmp_path: Path
) -> None:
    # The hour's report starts long before the heater's first frame (10:13:40)
    # and its two minutes of data straddle two peak windows.
    from wattd.storage.store import Store

    start, end = at(2025, 3, 5, 10), at(2025, 3, 5, 11)
    readings = heater_readings(at(2025, 3, 5, 10, 13, 40), 120)
    if source == "store":
        with Store.open(tmp_path / "wattd.sqlite") as store:
            store.insert_readings(readings)
            intervals = list(intervals_from_store(store, start, end))
    else:
        intervals = list(intervals_from_readings(readings))
    report = build_report(config(), intervals, start, end, only=["web-1"])
    g = report.group("web-1")
    assert g.it_kwh == pytest.approx(100 * 118.56 / 3.6e6, rel=0.01)
    assert g.mean_watts == pytest.approx(100.0, rel=0.03)
    assert g.peak_watts == pytest.approx(100.0, rel=0.03)
    assert g.data_s == pytest.approx(120.0, abs=4.0)
    assert g.peak_data_s == pytest.approx(80.0, abs=4.0)  # 10:13:40 to 10:15
    assert g.peak_window_start == at(2025, 3, 5, 10, 0)
    [hour] = g.hours
    assert hour.mean_watts == pytest.approx(100.0, rel=0.03)
    table = render_table(report)
    note = (
        f"web-1: mean over {format_duration(g.data_s)} with data,"
        f" peak over {format_duration(g.peak_data_s)} with data"
    )
    assert note in table
    assert "(the range is 1 h)" in table
    data = json.loads(render_json(report))
    assert data["groups"][0]["data_s"] == pytest.approx(g.data_s)
    assert data["groups"][0]["peak_window_start"] == "2025-03-05T10:00:00Z"


def test_full_data_needs_no_note_and_a_meter_without_data_shows_a_dash() -> None:
    start, end = at(2025, 3, 5), at(2025, 3, 6)
    report = build_report(config(), steady(1, start, end, 100.0), start, end)
    assert report.group("web-1").data_s == pytest.approx(86400.0)
    table = render_table(report)
    assert "with data" not in table
    db = next(line for line in table.splitlines() if line.startswith("db-1"))
    assert db.split()[5:7] == ["\N{EM DASH}", "\N{EM DASH}"]  # mean W, peak W


def test_an_outage_inside_the_range_is_not_counted_as_zero_watts() -> None:
    # Two meters in one rack; web-2 is silent for the first 18 hours of the day.
    start, end = at(2025, 3, 5), at(2025, 3, 6)
    late = at(2025, 3, 5, 18)
    intervals = steady(1, start, end, 100.0) + steady(2, late, end, 50.0)
    report = build_report(config(), intervals, start, end, by="rack")
    rack = report.group("rack-a")
    assert rack.mean_watts == pytest.approx(150.0)
    assert rack.peak_watts == pytest.approx(150.0)
    morning = next(h for h in rack.hours if h.start == at(2025, 3, 5, 9))
    assert morning.mean_watts == pytest.approx(100.0)
    assert rack.it_kwh == pytest.approx(2.4 + 0.3)  # energy is what was measured


def test_small_amounts_keep_two_significant_digits() -> None:
    assert format_money(0.0031, "EUR") == "€0.0031"
    assert format_money(0.001, "EUR") == "€0.0010"
    assert format_money(0.004, "EUR") == "€0.0040"  # not €0.00
    assert format_money(0.31, "EUR") == "€0.31"
    assert format_money(0.0999, "USD") == "$0.10"
    assert format_money(-0.0123, "GBP") == "-£0.012"
    assert format_money(0.0, "EUR") == "€0.00"
    assert format_money(2.5e-5, "CHF") == "0.000025 CHF"
    assert format_amount(0.4, 0) == "0.40"
    assert format_amount(123.4, 0) == "123"
    assert format_amount(0.00042, 3) == "0.00042"
    assert format_amount(12.345, 3) == "12.345"
    assert format_duration(45) == "45 s"
    assert format_duration(118.6) == "119 s"
    assert format_duration(600) == "10 min"
    assert format_duration(3 * 3600 + 5 * 60) == "3 h 05 min"
    assert format_duration(7 * 86400 - 3600) == "6 d 23 h"


def test_table_money_columns_use_significant_digits() -> None:
    # 5 W for a minute at night: €0.000013, shown as such, not as €0.00.
    start, end = at(2025, 3, 5, 1), at(2025, 3, 5, 1, 1)
    report = build_report(config(), steady(1, start, end, 5.0), start, end)
    row = next(line for line in render_table(report).splitlines() if "web-1" in line)
    assert format_money(report.group("web-1").cost, "EUR") == "€0.000013"
    assert "€0.000013" in row
