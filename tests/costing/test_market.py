"""Price files, carbon files and dated versions, priced by the tariff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from wattd.config import load_config
from wattd.core.readings import Reading
from wattd.costing.cost import EnergyInterval, price_interval
from wattd.costing.livecost import LiveCost
from wattd.costing.report.engine import build_report
from wattd.costing.tariff import TariffBook

if TYPE_CHECKING:
    from pathlib import Path

    from wattd.config import Config


def at(day: int, hour: int = 0, minute: int = 0, month: int = 4) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


def setup(tmp_path: Path, plan: str, files: dict[str, str], extra: str = "") -> Config:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "wattd.yaml").write_text(
        "sensors:\n  - {address: 1, name: web-1, customer: acme, location: dc}\n"
        "tariffs:\n  timezone: Europe/Berlin\n  default: m\n  plans:\n    m:\n"
        + "".join(f"      {line}\n" for line in plan.strip().splitlines())
        + extra,
        encoding="utf-8",
    )
    return load_config(tmp_path / "wattd.yaml")


HOURLY = (
    "start,price_per_kwh,co2_g_per_kwh\n"
    "2025-04-01T00:00Z,0.10,300\n"
    "2025-04-01T01:00Z,0.20,\n"
    "2025-04-01T02:00Z,0.40,100\n"
    "2025-04-01T03:00Z,,\n"
    "2025-04-01T04:00Z,0.05,50\n"
)
"""Hourly UTC rows; 03:00 has no price (a gap) and 04:00 is the last row."""


def test_energy_splits_exactly_at_each_price_change(tmp_path: Path) -> None:
    config = setup(
        tmp_path,
        "price_per_kwh: 0.30\nco2_g_per_kwh: 400\nprice_file: prices.csv",
        {"prices.csv": HOURLY},
    )
    tariff = TariffBook(config).tariffs["m"]
    # 1 kW from 00:30 to 02:30: 0.5 kWh at 0.10, 1 kWh at 0.20, 0.5 kWh at 0.40.
    span = EnergyInterval(sensor=1, start=at(1, 0, 30), end=at(1, 2, 30), wh=2000.0)
    parts = price_interval(span, tariff)
    assert [(p.start, p.end) for p in parts] == [
        (at(1, 0, 30), at(1, 1)),
        (at(1, 1), at(1, 2)),
        (at(1, 2), at(1, 2, 30)),
    ]
    assert [p.wh for p in parts] == pytest.approx([500.0, 1000.0, 500.0])
    assert [p.band.price_per_kwh for p in parts] == [0.10, 0.20, 0.40]
    assert sum(p.cost for p in parts) == pytest.approx(0.05 + 0.20 + 0.20)
    # The 01:00 row leaves CO2 empty: the plan's figure stands in.
    assert [p.co2_g_per_kwh for p in (q.band for q in parts)] == [300, 400, 100]
    assert {p.source for p in parts} == {"market"}


def test_time_without_a_price_row_falls_back_to_the_bands_and_is_counted(
    tmp_path: Path,
) -> None:
    config = setup(
        tmp_path,
        "price_per_kwh: 0.30\nprice_file: prices.csv\n"
        'bands:\n  - {name: night, price_per_kwh: 0.12, hours: "00:00-07:00"}',
        {"prices.csv": HOURLY},
    )
    # 1 kWh in every hour from 02:00 to 07:00 UTC (04:00-09:00 Berlin).
    intervals = [
        EnergyInterval(sensor=1, start=at(1, h), end=at(1, h + 1), wh=1000.0)
        for h in range(2, 7)
    ]
    report = build_report(config, intervals, at(1, 2), at(1, 7), by="all")
    g = report.total
    # 02:00 at 0.40; 03:00 a gap: night band (05:00 Berlin) 0.12; 04:00 at
    # 0.05; 05:00 and 06:00 are after the last row's hour: night until 07:00
    # Berlin (05:00 UTC), so 05:00 UTC is 07:00 Berlin, standard 0.30.
    assert g.energy_cost == pytest.approx(0.40 + 0.12 + 0.05 + 0.30 + 0.30)
    assert g.fallback_kwh == pytest.approx(3.0)
    lines = {(p.kind, p.name): (p.kwh, p.cost) for p in g.prices}
    assert lines == {
        ("market", "market"): pytest.approx((2.0, 0.45)),
        ("fallback", "night"): pytest.approx((1.0, 0.12)),
        ("fallback", "standard"): pytest.approx((2.0, 0.60)),
    }


def test_prices_across_a_dst_change_in_the_plans_zone(tmp_path: Path) -> None:
    # 26 October 2025 in Berlin has 25 hours: 02:00-03:00 comes twice. The
    # file gives each of them its own row, priced 0.01 times its index.
    first = datetime(2025, 10, 25, 22, tzinfo=UTC)  # local midnight, +02:00
    berlin = ZoneInfo("Europe/Berlin")
    hours = [(first + timedelta(hours=i)).astimezone(berlin) for i in range(25)]
    rows = [
        "start,price_per_kwh",
        *(f"{t.isoformat()},{i / 100}" for i, t in enumerate(hours)),
    ]
    assert rows[3].startswith("2025-10-26T02:00:00+02:00")
    assert rows[4].startswith("2025-10-26T02:00:00+01:00")
    config = setup(
        tmp_path,
        "price_per_kwh: 9.99\nprice_file: prices.csv\nstanding_charge_per_day: 1.5",
        {"prices.csv": "\n".join(rows) + "\n"},
    )
    end = datetime(2025, 10, 26, 23, tzinfo=UTC)  # the next local midnight
    intervals = [
        EnergyInterval(
            sensor=1,
            start=first + timedelta(hours=i),
            end=first + timedelta(hours=i + 1),
            wh=1000.0,
        )
        for i in range(25)
    ]
    report = build_report(config, intervals, first, end, by="all")
    g = report.total
    assert len(g.days) == 1
    assert g.days[0].it_kwh == pytest.approx(25.0)
    assert g.energy_cost == pytest.approx(sum(i / 100 for i in range(25)))
    assert g.fallback_kwh == 0
    assert (g.standing_days, g.standing_charge) == (1, 1.5)
    assert g.cost == pytest.approx(3.00 + 1.5)


def test_dated_versions_split_at_local_midnight(tmp_path: Path) -> None:
    config = setup(
        tmp_path,
        "price_per_kwh: 0.20\nversions:\n"
        "  - {valid_from: 2025-04-01, price_per_kwh: 0.30}",
        {},
    )
    tariff = TariffBook(config).tariffs["m"]
    # Berlin's 1 April starts at 22:00 UTC on 31 March (+02:00).
    span = EnergyInterval(
        sensor=1, start=at(31, 20, month=3), end=at(31, 23, month=3), wh=3000.0
    )
    parts = price_interval(span, tariff)
    assert [(p.end, p.band.price_per_kwh) for p in parts] == [
        (at(31, 22, month=3), 0.20),
        (at(31, 23, month=3), 0.30),
    ]
    assert sum(p.cost for p in parts) == pytest.approx(2 * 0.20 + 0.30)
    report = build_report(
        config, [span], at(31, 20, month=3), at(31, 23, month=3), by="all"
    )
    days = report.total.days
    assert [d.day.isoformat() for d in days] == ["2025-03-31", "2025-04-01"]
    assert [d.cost for d in days] == pytest.approx([0.40, 0.30])


def test_a_version_may_bring_its_own_price_file(tmp_path: Path) -> None:
    config = setup(
        tmp_path,
        "price_per_kwh: 0.20\nversions:\n"
        "  - {valid_from: 2025-04-01, price_file: prices.csv}",
        {"prices.csv": HOURLY},
    )
    tariff = TariffBook(config).tariffs["m"]
    assert tariff.band_at(at(1, 1, 30)).price_per_kwh == 0.20
    assert tariff.band_at(at(1, 2, 30)).price_per_kwh == 0.40
    assert tariff.band_at(at(30, 2, 30, month=3)).price_per_kwh == 0.20
    assert tariff.band_at(at(30, 2, 30, month=3)).name == "standard"


def test_a_locations_carbon_file_wins_over_the_plan(tmp_path: Path) -> None:
    co2 = "start,co2_g_per_kwh\n2025-04-01T00:00Z,700\n2025-04-01T01:00Z,20\n"
    config = setup(
        tmp_path,
        "price_per_kwh: 0.30\nco2_g_per_kwh: 400\nprice_file: prices.csv",
        {"prices.csv": HOURLY, "co2.csv": co2},
        extra="locations:\n  dc: {pue: 1.5, co2_file: co2.csv}\n",
    )
    intervals = [
        EnergyInterval(sensor=1, start=at(1, h), end=at(1, h + 1), wh=1000.0)
        for h in range(3)
    ]
    report = build_report(config, intervals, at(1), at(1, 3), by="all")
    # Facility energy 1.5 kWh an hour: 700 g, 20 g, then the file has ended
    # and the price row's own 100 g applies.
    assert report.total.co2_kg == pytest.approx(1.5 * (700 + 20 + 100) / 1000)
    assert report.total.energy_cost == pytest.approx(1.5 * (0.10 + 0.20 + 0.40))


def test_live_cost_prices_each_reading_from_the_file(tmp_path: Path) -> None:
    config = setup(
        tmp_path, "price_per_kwh: 0.30\nprice_file: prices.csv", {"prices.csv": HOURLY}
    )
    live = LiveCost(config)

    def reading(t: datetime, wh: float) -> Reading:
        return Reading(
            sensor=1,
            name="web-1",
            time=t,
            monotonic_s=0.0,
            watts=1000.0,
            va=1000.0,
            vrms=230.0,
            irms=4.3,
            power_factor=1.0,
            wh_total=0.0,
            wh_delta=wh,
            rssi_dbm=None,
        )

    live.apply(reading(at(1, 0, 30), 0.0))
    # 0.5 kWh over the hour from 00:30: half at 0.10, half at 0.20.
    out = live.apply(reading(at(1, 1, 30), 500.0))
    assert (out.price_band, out.price_per_kwh) == ("market", 0.20)
    assert out.cost_per_hour == pytest.approx(0.20)
    assert out.cost_today == pytest.approx(0.25 * 0.10 + 0.25 * 0.20)
