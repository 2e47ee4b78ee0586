from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from wattd.config import parse_config
from wattd.costing.billing import billing_range, customer_report
from wattd.costing.report.bill import render_bill_csv
from wattd.costing.report.engine import build_report
from wattd.costing.report.html import render_html
from wattd.costing.report.text import render_table, report_to_dict
from wattd.errors import TariffError

CONFIG = """\
sensors:
  - {address: 1, name: web-1, customer: acme}
  - {address: 2, name: web-2, customer: acme}
  - {address: 3, name: db-1, customer: globex}
  - {address: 4, name: db-9, customer: initech}
tariffs:
  timezone: UTC
  default: m
  standing_charges:
    customers: {acme: 5.0}
    sensors: {db-9: 0.5}
  plans:
    m:
      currency: EUR
      price_per_kwh: 0.3
      standing_charge_per_day: 1.0
      demand: {price_per_kw: 10, billing_day: 15}
      versions:
        - {valid_from: 2025-04-03, standing_charge_per_day: 2.0}
"""
START = datetime(2025, 4, 1, 10, tzinfo=UTC)
END = datetime(2025, 4, 4, tzinfo=UTC)


def test_standing_charges_count_whole_local_days_per_account() -> None:
    config = parse_config(CONFIG)
    # 1-3 April, the first from 10:00: three whole days. acme pays one
    # customer charge (5/day) for both meters; db-1 its plan's 1, 1, then 2
    # from the version of 3 April; db-9 its own 0.5.
    by_customer = build_report(config, [], START, END, by="customer")
    charges = {g.key: g.standing_charge for g in by_customer.groups}
    assert charges == {"acme": 15.0, "globex": 4.0, "initech": 1.5}
    assert by_customer.total.standing_charge == pytest.approx(20.5)
    assert by_customer.total.standing_days == 3
    assert by_customer.total.cost == pytest.approx(20.5 + 0.0)
    by_sensor = build_report(config, [], START, END, by="sensor")
    charges = {g.key: g.standing_charge for g in by_sensor.groups}
    # A meter does not pay its customer's whole charge; the total does.
    assert charges == {"web-1": None, "web-2": None, "db-1": 4.0, "db-9": 1.5}
    assert by_sensor.total.standing_charge == pytest.approx(20.5)


def test_a_customer_bill_names_only_its_meters_in_every_format() -> None:
    config = parse_config(CONFIG)
    bill = customer_report(config, [], START, END, customer="acme")
    assert bill.keys() == ["web-1", "web-2"]
    assert bill.total.cost == pytest.approx(15.0)
    assert bill.comparison is not None
    html = render_html(bill)
    assert 'id="charges"' in html
    assert "standing charge" in html
    assert "db-1" not in html
    assert "db-1" not in render_table(bill)
    rows = list(csv.reader(io.StringIO(render_bill_csv(bill))))
    assert rows[0] == [
        "section",
        "item",
        "quantity",
        "unit",
        "amount",
        "currency",
        "co2_kg",
    ]
    assert rows[1][:2] == ["customer", "acme"]
    standing = next(r for r in rows if r[1].startswith("standing charge"))
    assert (standing[2], standing[3], standing[4]) == ("3.0", "days", "15.0")
    assert [r[1] for r in rows if r[0] == "meter"] == ["web-1", "web-2"]
    data = report_to_dict(bill)
    assert data["customer"] == "acme"
    assert data["total"]["standing_charge"] == 15.0
    assert data["comparison"]["estimate"] is True


def test_an_unknown_customer_is_an_error_listing_the_known_ones() -> None:
    config = parse_config(CONFIG)
    with pytest.raises(TariffError, match="customers: acme, globex, initech"):
        customer_report(config, [], START, END, customer="umbrella")


def test_the_billing_period_starts_on_the_demand_billing_day() -> None:
    config = parse_config(CONFIG)
    now = datetime(2025, 4, 10, 12, tzinfo=UTC)
    assert billing_range(config, "acme", now) == (
        datetime(2025, 3, 15, tzinfo=UTC),
        now,
    )
    assert billing_range(config, "acme", now, previous=True) == (
        datetime(2025, 2, 15, tzinfo=UTC),
        datetime(2025, 3, 15, tzinfo=UTC),
    )
