from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from wattd.config import load_config
from wattd.costing.compare import compare
from wattd.costing.cost import EnergyInterval

if TYPE_CHECKING:
    from pathlib import Path

    from wattd.config import Config

START = datetime(2025, 4, 1, tzinfo=UTC)
CONFIG = """\
sensors:
  - {address: 1, name: web-1, customer: acme, location: a}
  - {address: 3, name: db-1, customer: globex, location: a}
tariffs:
  timezone: UTC
  flexible_shares: {acme: 0.5}
  plans:
    a: {currency: EUR, price_per_kwh: 9.0, co2_g_per_kwh: 500, price_file: a.csv}
    b: {currency: EUR, price_per_kwh: 0.25, co2_g_per_kwh: 100}
locations:
  a: {pue: 1.2, tariff: a}
  b: {pue: 1.5, tariff: b, co2_file: b-co2.csv}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "a.csv").write_text(
        "start,price_per_kwh\n"
        "2025-04-01T00:00Z,0.40\n2025-04-01T01:00Z,0.10\n"
        "2025-04-01T02:00Z,0.30\n2025-04-01T03:00Z,0.20\n"
    )
    (tmp_path / "b-co2.csv").write_text(
        "start,co2_g_per_kwh\n2025-04-01T00:00Z,50\n2025-04-01T02:00Z,150\n"
    )
    (tmp_path / "wattd.yaml").write_text(CONFIG)
    return load_config(tmp_path / "wattd.yaml")


def load() -> list[EnergyInterval]:
    """acme's web-1 uses 1, 2, 1 and 0 kWh in four hours; globex's meter a lot."""
    out = []
    for h, wh in enumerate((1000.0, 2000.0, 1000.0, 0.0)):
        t = START + timedelta(hours=h)
        out.append(EnergyInterval(sensor=1, start=t, end=t + timedelta(hours=1), wh=wh))
        out.append(
            EnergyInterval(sensor=3, start=t, end=t + timedelta(hours=1), wh=9000.0)
        )
    return out


def test_location_and_shift_figures_match_a_hand_computation(config: Config) -> None:
    cmp = compare(config, load(), START, START + timedelta(hours=4), customer="acme")
    # Actual, at a (PUE 1.2): 4.8 kWh; 1.2 * (1*0.40 + 2*0.10 + 1*0.30) EUR;
    # 4.8 kWh * 500 g.
    assert cmp.actual.it_kwh == pytest.approx(4.0)
    assert cmp.actual.facility_kwh == pytest.approx(4.8)
    assert cmp.actual.energy_cost == pytest.approx(1.08)
    assert cmp.actual.co2_kg == pytest.approx(2.4)
    at_a, at_b = cmp.locations
    assert at_a.name == "a"
    assert at_a.energy_cost == pytest.approx(1.08)
    assert at_a.co2_kg == pytest.approx(2.4)
    # At b (PUE 1.5): 6 kWh at 0.25; carbon from b's own file: 50 g for the
    # first two hours (3 kWh IT), 150 g after (1 kWh IT).
    assert at_b.facility_kwh == pytest.approx(6.0)
    assert at_b.energy_cost == pytest.approx(1.5)
    assert at_b.co2_kg == pytest.approx(1.5 * (3 * 50 + 1 * 150) / 1000)
    # Shifted: half of the day's 4 kWh moves; each hour takes at most the
    # day's mean hour (1 kWh), cheapest first: 01:00 at 0.10, 03:00 at 0.20.
    assert cmp.flexible_share == 0.5
    assert cmp.shifted is not None
    assert cmp.shifted.energy_cost == pytest.approx(0.5 * 1.08 + 1.2 * (0.10 + 0.20))
    assert cmp.shifted.co2_kg == pytest.approx(0.5 * 2.4 + 1.2 * 2 * 0.5)
    assert cmp.shifted.it_kwh == pytest.approx(cmp.actual.it_kwh)


def test_no_flexible_share_means_no_shift(config: Config) -> None:
    cmp = compare(config, load(), START, START + timedelta(hours=4), customer="globex")
    assert cmp.flexible_share == 0
    assert cmp.shifted is None
    assert cmp.actual.it_kwh == pytest.approx(36.0)
