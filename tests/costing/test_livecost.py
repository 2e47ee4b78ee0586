from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from wattd.config import parse_config
from wattd.core.readings import Reading
from wattd.costing.cost import EnergyInterval
from wattd.costing.livecost import LiveCost
from wattd.storage.intervals import recent_intervals

if TYPE_CHECKING:
    from pathlib import Path

NY = ZoneInfo("America/New_York")

CONFIG = """\
sensors:
  - {address: 1, name: fridge, location: home}
  - {address: 2, name: rack, location: dc}
  - {address: 3, name: free, tariff: none-here}
locations:
  home: {pue: 1.0}
  dc: {pue: 2.0}
tariffs:
  timezone: America/New_York
  default: tou
  plans:
    tou:
      currency: USD
      price_per_kwh: 0.30
      bands:
        - {name: night, price_per_kwh: 0.10, hours: "00:00-06:00"}
        - {name: peak, price_per_kwh: 1.00, hours: "17:00-20:00"}
    none-here:
      currency: USD
      price_per_kwh: 0.0
"""


def reading(sensor: int, t: datetime, watts: float, wh_delta: float) -> Reading:
    return Reading(
        sensor=sensor,
        name=str(sensor),
        time=t,
        monotonic_s=t.timestamp(),
        watts=watts,
        va=watts,
        vrms=120.0,
        irms=watts / 120,
        power_factor=1.0,
        wh_total=0.0,
        wh_delta=wh_delta,
        rssi_dbm=None,
    )


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=NY)


def test_reading_gets_band_price_and_cost_per_hour() -> None:
    live = LiveCost(parse_config(CONFIG))
    out = live.apply(reading(2, local(2025, 3, 5, 18, 0), 500.0, 0.0))
    assert out.price_band == "peak"
    assert out.price_per_kwh == 1.00
    assert out.currency == "USD"
    assert out.cost_per_hour == pytest.approx(0.5 * 2.0 * 1.00)  # PUE 2
    data = out.to_json_dict()
    assert data["cost_per_hour"] == pytest.approx(1.0)
    assert data["cost_today"] == 0.0
    json.dumps(data)


def test_cost_today_prices_each_reading_over_its_interval_split_at_band_edges() -> None:
    live = LiveCost(parse_config(CONFIG))
    t0 = local(2025, 3, 5, 16, 59)
    live.apply(reading(1, t0, 600.0, 0.0))
    # 600 W over 16:59-17:01: 10 Wh standard (0.30) + 10 Wh peak (1.00).
    out = live.apply(reading(1, t0 + timedelta(minutes=2), 600.0, 20.0))
    assert out.cost_today == pytest.approx(0.010 * 0.30 + 0.010 * 1.00)
    out = live.apply(reading(1, t0 + timedelta(minutes=3), 600.0, 10.0))
    assert out.cost_today == pytest.approx(0.013 + 0.010 * 1.00)


def test_daily_total_resets_at_local_midnight_keeping_yesterdays_share() -> None:
    live = LiveCost(parse_config(CONFIG))
    live.apply(reading(1, local(2025, 3, 5, 23, 0), 1000.0, 0.0))
    before = live.apply(reading(1, local(2025, 3, 5, 23, 30), 1000.0, 500.0))
    assert before.cost_today == pytest.approx(0.5 * 0.30)
    # 23:30 -> 00:30: half before midnight (standard, yesterday), half after (night).
    after = live.apply(reading(1, local(2025, 3, 6, 0, 30), 1000.0, 1000.0))
    assert after.cost_today == pytest.approx(0.5 * 0.10)
    assert after.price_band == "night"
    # Midnight is New York's, not UTC's: 00:30 local is 05:30 UTC.
    assert after.time.astimezone(UTC).hour == 5


def test_sensor_without_tariff_passes_through_and_zero_price_tariff_works() -> None:
    cfg = parse_config(CONFIG.replace("  default: tou\n", ""))
    live = LiveCost(cfg)
    r = reading(9, local(2025, 3, 5, 12), 100.0, 1.0)
    assert live.apply(r) is r
    free = live.apply(reading(3, local(2025, 3, 5, 12), 100.0, 1.0))
    assert free.cost_per_hour == 0.0
    assert free.price_band == "standard"


def test_snapshot_restore_and_seed_survive_a_restart() -> None:
    cfg = parse_config(CONFIG)
    live = LiveCost(cfg)
    live.apply(reading(1, local(2025, 3, 5, 10), 100.0, 0.0))
    live.apply(reading(1, local(2025, 3, 5, 11), 100.0, 100.0))
    saved = json.loads(json.dumps(live.snapshot()))
    again = LiveCost(cfg)
    again.restore(saved)
    assert again.cost_today(1) == pytest.approx(0.1 * 0.30)
    nxt = again.apply(reading(1, local(2025, 3, 5, 12), 100.0, 100.0))
    assert nxt.cost_today == pytest.approx(0.2 * 0.30)

    seeded = LiveCost(cfg)
    seeded.seed(
        [
            EnergyInterval(
                sensor=1,
                start=local(2025, 3, 4, 23),
                end=local(2025, 3, 5, 1),
                wh=200.0,
            ),
            EnergyInterval(
                sensor=1,
                start=local(2025, 3, 5, 9),
                end=local(2025, 3, 5, 10),
                wh=100.0,
            ),
        ],
        now=local(2025, 3, 5, 10, 5),
    )
    # Only today's part counts: 100 Wh night (00-01) + 100 Wh standard.
    assert seeded.cost_today(1) == pytest.approx(0.1 * 0.10 + 0.1 * 0.30)
    again.restore({"x": {"day": "nonsense"}})  # malformed entries are skipped


def test_prepare_seeds_today_from_the_store(tmp_path: Path) -> None:
    from wattd.storage.store import Store

    cfg = parse_config(CONFIG + f"state_dir: {tmp_path}\n")
    with Store.open(cfg.store_path) as store:
        store.insert_readings(
            [
                reading(1, local(2025, 3, 5, 9).astimezone(UTC), 100.0, 0.0),
                reading(1, local(2025, 3, 5, 10).astimezone(UTC), 100.0, 100.0),
            ]
        )
    live = LiveCost(
        cfg,
        history=lambda a, b: recent_intervals(cfg, a, b),
        now=lambda: local(2025, 3, 5, 10, 5),
    )
    live.prepare()
    # 100 Wh between 09:00 and 10:00 at the standard 0.30/kWh.
    assert live.cost_today(1) == pytest.approx(0.1 * 0.30)
    # Without a store file, prepare is a no-op rather than an error.
    empty = parse_config(CONFIG + f"state_dir: {tmp_path / 'none'}\n")
    fresh = LiveCost(
        empty,
        history=lambda a, b: recent_intervals(empty, a, b),
        now=lambda: local(2025, 3, 5, 10, 5),
    )
    fresh.prepare()
    assert fresh.cost_today(1) is None
