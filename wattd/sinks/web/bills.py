"""A customer's figures and bills, priced from the store's rollups.

Blocking (SQLite and the cost engine): run these off the event loop. Energy
comes from :func:`~wattd.sinks.web.history.intervals_between`, hour buckets
for whole hours and minute buckets at the edges, and only the customer's own
sensors are read, so nothing of another customer enters a figure or a bill.
A month of a customer's servers is a few thousand buckets.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias
from zoneinfo import ZoneInfo

from wattd.costing.billing import billing_range, customer_report, hourly_prices
from wattd.costing.cost import local_hours
from wattd.costing.report.bill import comparison_to_dict, render_bill_csv
from wattd.costing.report.engine import period_range
from wattd.costing.report.html import render_html
from wattd.costing.tariff import TariffBook
from wattd.errors import TariffError
from wattd.sinks.web.history import intervals_between
from wattd.support.clock import parse_when

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping
    from pathlib import Path

    from wattd.config import Config
    from wattd.costing.cost import EnergyInterval
    from wattd.costing.report.engine import GroupReport, Report

    ClosedPeriods: TypeAlias = MutableMapping[tuple[str, datetime, datetime], Report]
    """Reports of billing periods that have ended, by customer and range."""

__all__ = [
    "BILL_LIST_LENGTH",
    "Bill",
    "BillFormat",
    "bill_range",
    "customer_sensors",
    "customer_summary",
    "render_bill",
]

BillFormat = Literal["html", "csv"]
BILL_LIST_LENGTH: Final = 12
"""How many past billing periods the page offers for download."""


@dataclasses.dataclass(frozen=True, slots=True)
class Bill:
    """A rendered bill, ready to send."""

    body: str
    content_type: str
    filename: str


def customer_sensors(config: Config, customer: str) -> dict[int, str]:
    """The customer's configured sensors: address to display name."""
    return {s.address: s.display_name for s in config.sensors if s.customer == customer}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _report(
    config: Config,
    path: Path,
    customer: str,
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    book: TariffBook,
) -> tuple[Report, list[EnergyInterval]]:
    sensors = customer_sensors(config, customer)
    intervals = intervals_between(path, start, end, sensors)
    report = customer_report(
        config, intervals, start, end, customer=customer, now=now, book=book
    )
    return report, intervals


def _figures(report: Report) -> dict[str, Any]:
    g = report.total
    return {
        "start_ms": _ms(report.start),
        "end_ms": _ms(report.end),
        "it_kwh": _num(g.it_kwh),
        "facility_kwh": _num(g.facility_kwh),
        "energy_cost": _num(g.energy_cost),
        "standing_charge": _num(g.standing_charge),
        "demand_charge": _num(g.demand_charge),
        "cost": _num(g.cost),
        "co2_kg": _num(g.co2_kg),
        "completeness": _num(g.completeness, 4),
    }


def _servers(
    names: Mapping[int, str], config: Config, reports: Mapping[str, Report]
) -> list[dict[str, Any]]:
    by_name: dict[str, dict[str, GroupReport]] = {
        label: {g.key: g for g in r.groups} for label, r in reports.items()
    }
    meta = config.sensor_map()
    out = []
    for address, name in sorted(names.items(), key=lambda kv: kv[1]):
        cfg = meta[address]
        row: dict[str, Any] = {
            "sensor": address,
            "name": name,
            "rack": cfg.rack,
            "location": cfg.location,
        }
        for label, groups in by_name.items():
            g = groups.get(name)
            row[label] = {
                "it_kwh": _num(g.it_kwh) if g else None,
                "cost": _num(g.cost) if g else None,
                "co2_kg": _num(g.co2_kg) if g else None,
            }
        out.append(row)
    return out


def _curve(
    config: Config,
    customer: str,
    intervals: list[EnergyInterval],
    day: tuple[datetime, datetime],
    now: datetime,
    book: TariffBook,
) -> list[dict[str, Any]]:
    """Price per local hour of today, with the customer's mean load so far.

    The load of an hour is its energy over the hour (over the part gone by,
    for the current one), so a quiet meter lowers it as it lowers the bill.
    """
    hours = local_hours(day[0], day[1], book.timezone)
    edges = [*hours, day[1]]
    wh = [0.0] * len(hours)
    for interval in intervals:
        mid = interval.start + (interval.end - interval.start) / 2
        i = bisect.bisect_right(hours, mid) - 1
        if 0 <= i < len(hours) and mid < edges[i + 1]:
            wh[i] += interval.wh
    prices = {
        p.start: p
        for p in hourly_prices(config, day[0], day[1], customer=customer, book=book)
    }
    out = []
    for i, start in enumerate(hours):
        elapsed_h = (min(edges[i + 1], now) - start).total_seconds() / 3600
        price = prices.get(start)
        out.append(
            {
                "start_ms": _ms(start),
                "price_per_kwh": _num(price.price_per_kwh) if price else None,
                "co2_g_per_kwh": _num(price.co2_g_per_kwh, 2) if price else None,
                "source": price.source if price else None,
                "watts": _num(wh[i] / elapsed_h, 2) if elapsed_h > 0 else None,
            }
        )
    return out


def _past_periods(
    config: Config, customer: str, now: datetime, book: TariffBook
) -> list[dict[str, int]]:
    out = []
    moment = now
    for _ in range(BILL_LIST_LENGTH):
        start, end = billing_range(config, customer, moment, previous=True, book=book)
        out.append({"start_ms": _ms(start), "end_ms": _ms(end)})
        moment = start
    return out


def _slim(report: Report) -> Report:
    # What the page needs of an ended period: totals, not hours and days.
    def cut(g: GroupReport) -> GroupReport:
        return dataclasses.replace(g, hours=(), days=())

    return dataclasses.replace(
        report, groups=tuple(map(cut, report.groups)), total=cut(report.total)
    )


def customer_summary(
    config: Config,
    path: Path,
    customer: str,
    now: datetime,
    closed: ClosedPeriods | None = None,
) -> dict[str, Any]:
    """Today, this billing period and the last one, per server and in total.

    Also the hourly price curve behind today's load, the comparison with the
    other locations and with the flexible load shifted, and the past billing
    periods a bill can be downloaded for. The last period, which no longer
    changes, is taken from ``closed`` when it is there, and put there if not.
    """
    book = TariffBook(config)
    tz = book.timezone
    day = period_range("day", now, tz)
    current = billing_range(config, customer, now, book=book)
    previous = billing_range(config, customer, now, previous=True, book=book)
    names = customer_sensors(config, customer)
    today, today_intervals = _report(config, path, customer, *day, now=now, book=book)
    key = (customer, *previous)
    last = None if closed is None else closed.get(key)
    if last is None:
        last = _slim(_report(config, path, customer, *previous, now=now, book=book)[0])
        if closed is not None:
            closed[key] = last
    reports = {
        "today": today,
        "current": _report(config, path, customer, *current, now=now, book=book)[0],
        "previous": last,
    }
    day_end = period_range("day", day[0] + timedelta(hours=36), tz)[0]
    curve = _curve(config, customer, today_intervals, (day[0], day_end), now, book)
    return {
        "customer": customer,
        "currency": book.currency,
        "timezone": str(tz.key),
        "periods": {label: _figures(r) for label, r in reports.items()},
        "servers": _servers(names, config, reports),
        "curve": curve,
        "comparison": comparison_to_dict(reports["current"].comparison),
        "bills": _past_periods(config, customer, now, book),
    }


def render_bill(
    config: Config,
    path: Path,
    customer: str,
    start: datetime,
    end: datetime,
    fmt: BillFormat,
    *,
    now: datetime,
) -> Bill:
    """The customer's bill for ``[start, end)`` as HTML or CSV."""
    book = TariffBook(config)
    report = _report(config, path, customer, start, end, now=now, book=book)[0]
    tz = book.timezone
    first = start.astimezone(tz).date().isoformat()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date().isoformat()
    stem = f"bill-{_safe(customer)}-{first}-{last}"
    if fmt == "csv":
        return Bill(render_bill_csv(report), "text/csv", f"{stem}.csv")
    return Bill(render_html(report), "text/html", f"{stem}.html")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "customer"


def bill_range(
    config: Config,
    customer: str,
    now: datetime,
    *,
    start: str | None,
    end: str | None,
    period: str | None,
) -> tuple[datetime, datetime]:
    """The range a bill request asks for, checked and bounded.

    ``period`` is ``current`` or ``previous`` (the default): a billing period.
    Otherwise ``start`` and ``end`` (end exclusive; a date is local midnight).
    The end is cut at ``now``; the range may span ``web.max_bill_days``.

    Raises:
        ValueError: a parameter is missing or wrong (the message says which).
    """
    if period is not None and (start is not None or end is not None):
        msg = "give period, or start and end, not both"
        raise ValueError(msg)
    if start is None and end is None:
        if period not in (None, "current", "previous"):
            msg = f"period must be current or previous, not {period[:20]!r}"
            raise ValueError(msg)
        return billing_range(config, customer, now, previous=period != "current")
    if start is None or end is None:
        msg = (
            "start and end go together (end is exclusive, e.g. 2026-11-01..2026-12-01)"
        )
        raise ValueError(msg)
    # Only the calendar is needed here; the bill's thread builds the tariffs.
    tz = ZoneInfo(config.tariffs.timezone)
    lo = parse_moment(start, tz, what="start")
    hi = min(parse_moment(end, tz, what="end"), now)
    if hi <= lo:
        msg = f"start {start[:40]!r} must be before end (and before now)"
        raise ValueError(msg)
    limit = config.web.max_bill_days
    if hi - lo > timedelta(days=limit):
        msg = f"a bill may cover at most {limit} days (web.max_bill_days)"
        raise ValueError(msg)
    return lo, hi


def parse_moment(text: str, tz: ZoneInfo, *, what: str) -> datetime:
    """An ISO date (local midnight) or date-time (local unless it has an offset).

    Raises:
        ValueError: not such a value (the message says which parameter).
    """
    try:
        if text != text.strip():
            raise TariffError(text)
        return parse_when(text, tz)
    except TariffError:
        msg = f"{what} {text[:40]!r} is not a date (2026-11-01) or an ISO date-time"
        raise ValueError(msg) from None
