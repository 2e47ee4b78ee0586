"""``wattd report --customer`` on the worked example of docs/cost.md."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.cli import run_cli
from tests.fixtures.paths import REPO_ROOT
from wattd.core.readings import Reading

if TYPE_CHECKING:
    from pathlib import Path

EXAMPLES = REPO_ROOT / "config" / "examples"
CONFIG = EXAMPLES / "market-prices.yaml"
START = datetime(2025, 3, 30, 22, tzinfo=UTC)  # 31 March, local midnight
MINUTES = 48 * 60
WATTS = {1: 200.0, 2: 100.0, 3: 500.0}  # web-1, web-2 (acme), db-1 (globex)
RANGE = ["--from", "2025-03-31", "--to", "2025-04-01"]


@pytest.fixture(scope="module")
def readings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One reading a minute of constant loads over the two days."""
    path = tmp_path_factory.mktemp("prices") / "readings.jsonl"
    lines = []
    for sensor, watts in WATTS.items():
        for minute in range(MINUTES + 1):
            r = Reading(
                sensor=sensor,
                name=f"s{sensor}",
                time=START + timedelta(minutes=minute),
                monotonic_s=0.0,
                watts=watts,
                va=watts,
                vrms=230.0,
                irms=watts / 230,
                power_factor=1.0,
                wh_total=watts * minute / 60,
                wh_delta=0.0,
                rssi_dbm=None,
            )
            lines.append(json.dumps(r.to_json_dict()))
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(name: str) -> list[tuple[datetime, str]]:
    text = (EXAMPLES / name).read_text()
    body = [line for line in text.splitlines() if not line.startswith("#")]
    return [(datetime.fromisoformat(r[0]), r[1]) for r in csv.reader(body[1:]) if r]


def in_force(table: list[tuple[datetime, str]], t: datetime) -> str:
    return [value for start, value in table if start <= t][-1]


def by_hand() -> dict[str, float]:
    """acme's bill from the example files, minute by minute, without wattd."""
    prices, carbon = rows("day-ahead.csv"), rows("fra-1-co2.csv")
    pue, fallback_price = 1.4, 0.30
    out = {"market": 0.0, "fallback": 0.0, "fallback_it_kwh": 0.0, "co2_kg": 0.0}
    for watts in (WATTS[1], WATTS[2]):
        for minute in range(MINUTES):
            t = START + timedelta(minutes=minute)
            kwh = watts / 1000 / 60 * pue
            price = in_force(prices, t)
            if price:
                out["market"] += kwh * float(price)
            else:
                out["fallback"] += kwh * fallback_price
                out["fallback_it_kwh"] += kwh / pue
            out["co2_kg"] += kwh * float(in_force(carbon, t)) / 1000
    out["standing"] = 2 * (0.50 + 0.60)  # two meters; the rise of 1 April
    out["total"] = out["market"] + out["fallback"] + out["standing"]
    return out


def test_the_bill_equals_a_hand_computation_over_the_readings(
    readings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "-c", str(CONFIG), "--readings", str(readings), *RANGE]
    rc, out, err = run_cli([*args, "--customer", "acme", "--format", "json"], capsys)
    assert rc == 0, err
    data = json.loads(out)
    hand = by_hand()
    total = data["total"]
    assert [g["group"] for g in data["groups"]] == ["web-1", "web-2"]
    assert total["energy_cost"] == pytest.approx(hand["market"] + hand["fallback"])
    assert total["standing_charge"] == pytest.approx(hand["standing"])
    assert total["standing_days"] == 2
    assert total["cost"] == pytest.approx(hand["total"])
    assert total["co2_kg"] == pytest.approx(hand["co2_kg"])
    assert total["fallback_kwh"] == pytest.approx(hand["fallback_it_kwh"])
    lines = {p["kind"]: p["cost"] for p in total["prices"]}
    assert lines == {
        "market": pytest.approx(hand["market"]),
        "fallback": pytest.approx(hand["fallback"]),
    }
    assert data["comparison"]["shifted"]["energy_cost"] < total["energy_cost"]


def test_the_docs_worked_example_shows_what_the_report_prints(
    readings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = (REPO_ROOT / "docs" / "cost.md").read_text()
    block = re.search(r"<!-- market-example -->\n```text\n(.*?)```", doc, re.S)
    assert block is not None, "docs/cost.md lost its market example block"
    shown = [line for line in block.group(1).splitlines() if line.strip()]
    args = ["report", "-c", str(CONFIG), "--readings", str(readings), *RANGE]
    rc, out, err = run_cli([*args, "--customer", "acme"], capsys)
    assert rc == 0, err
    printed = out.splitlines()
    for line in shown:
        assert line in printed, line
    # And the doc's figures are the hand computation's.
    hand = by_hand()
    line = re.compile(r"^\s*(energy at market prices|total):.*€([\d.]+)$", re.M)
    money = {m.group(1): float(m.group(2)) for m in line.finditer(block.group(1))}
    assert money["energy at market prices"] == round(hand["market"], 2)
    assert money["total"] == round(hand["total"], 2)


def test_csv_and_html_bills_hold_only_the_customers_meters(
    readings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "-c", str(CONFIG), "--readings", str(readings), *RANGE]
    rc, out, err = run_cli([*args, "--customer", "acme", "--format", "csv"], capsys)
    assert rc == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["item"] for r in table if r["section"] == "meter"] == ["web-1", "web-2"]
    total = next(r for r in table if r["section"] == "total")
    assert float(total["amount"]) == pytest.approx(by_hand()["total"])
    estimates = [r["item"] for r in table if r["section"] == "estimate"]
    assert "at location osl-1 (PUE 1.15)" in estimates
    rc, out, err = run_cli([*args, "--customer", "acme", "--format", "html"], capsys)
    assert rc == 0, err
    assert 'id="charges"' in out
    assert 'id="comparison"' in out
    assert "db-1" not in out


def test_customer_goes_without_by(
    readings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "-c", str(CONFIG), "--readings", str(readings), *RANGE]
    rc, _, err = run_cli([*args, "--customer", "acme", "--by", "rack"], capsys)
    assert rc == 2
    assert "--customer lists the customer's meters" in err


def test_compare_adds_the_estimates_to_any_report(
    readings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "-c", str(CONFIG), "--readings", str(readings), *RANGE]
    more = ["--by", "customer", "--compare", "--format", "json"]
    rc, out, err = run_cli([*args, *more], capsys)
    assert rc == 0, err
    data = json.loads(out)
    cmp = data["comparison"]
    # Everyone's load: acme's 300 W and globex's 500 W for 48 h.
    assert cmp["actual"]["it_kwh"] == pytest.approx(0.8 * 48)
    assert cmp["actual"]["energy_cost"] == pytest.approx(data["total"]["energy_cost"])
    assert [s["name"] for s in cmp["locations"]] == ["fra-1", "osl-1"]
    assert cmp["locations"][1]["energy_cost"] == pytest.approx(0.8 * 48 * 1.15 * 0.26)
    assert cmp["shifted"] is None  # no global flexible share
