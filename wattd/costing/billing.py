"""One customer's bill: its meters' report, billing period, prices and comparison.

What the web page and ``wattd report --customer`` call; everything is priced
by the report engine, so a bill and a report of the same range agree.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from wattd.costing.compare import ComparisonBuilder
from wattd.costing.cost import HourPrice, Timeline, hour_prices
from wattd.costing.report.engine import build_report
from wattd.costing.report.periods import billing_period
from wattd.costing.tariff import TariffBook
from wattd.errors import TariffError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from wattd.config import Config
    from wattd.costing.cost import EnergyInterval
    from wattd.costing.report.engine import Report
    from wattd.costing.tariff import MeterKey, Tariff

__all__ = ["HourPrice", "billing_range", "customer_report", "hourly_prices"]


def customer_report(
    config: Config,
    intervals: Iterable[EnergyInterval],
    start: datetime,
    end: datetime,
    *,
    customer: str,
    now: datetime | None = None,
    book: TariffBook | None = None,
    title: str | None = None,
) -> Report:
    """The customer's meters, one group each; the total is the bill.

    The report also carries the comparison (:func:`wattd.costing.compare.compare`).

    Raises:
        TariffError: no configured sensor (nor meter in the data) has this customer.
    """
    book = book or TariffBook(config)
    names = {s.display_name for s in config.sensors if s.customer == customer}
    names.update(
        a.name for a in map(book.for_sensor, book.addresses()) if a.customer == customer
    )
    if not names:
        known = sorted({s.customer for s in config.sensors if s.customer})
        raise TariffError(
            f"no sensor has customer {customer!r}; customers: "
            + (", ".join(known) or "none (set customer: on the sensors)")
        )
    mine = (i for i in intervals if book.for_sensor(i.sensor).customer == customer)
    builder = ComparisonBuilder(config, start, end, customer=customer, book=book)
    report = build_report(
        config,
        mine,
        start,
        end,
        by="sensor",
        only=sorted(names),
        title=title or f"Energy bill for {customer}",
        now=now,
        book=book,
        comparison=builder,
    )
    return dataclasses.replace(report, customer=customer)


def billing_range(
    config: Config,
    customer: str,
    now: datetime,
    *,
    previous: bool = False,
    book: TariffBook | None = None,
) -> tuple[datetime, datetime]:
    """The customer's billing period so far (or the whole one before it).

    It starts on the ``billing_day`` of the demand charge of the customer's
    tariff, else on the 1st, at local midnight of the plan's timezone.
    """
    book = book or TariffBook(config)
    tariff = _tariff_of(config, book, customer=customer, sensor=None)
    if tariff is None:
        return billing_period(now, book.timezone, 1, previous=previous)
    terms = tariff.terms_at(now)
    day = terms.demand.billing_day if terms.demand is not None else 1
    return billing_period(now, tariff.timezone, day, previous=previous)


def hourly_prices(
    config: Config,
    start: datetime,
    end: datetime,
    *,
    customer: str | None = None,
    sensor: MeterKey | None = None,
    book: TariffBook | None = None,
) -> tuple[HourPrice, ...]:
    """The mean price per local hour from the tariff of the customer's first meter.

    ``sensor`` picks a meter instead. Empty when that meter has no tariff.
    """
    book = book or TariffBook(config)
    tariff = _tariff_of(config, book, customer=customer, sensor=sensor)
    if tariff is None:
        return ()
    line = Timeline(start, end, tariff=tariff, timezone=book.timezone, step_s=3600)
    return tuple(h for h in hour_prices(line) if h is not None)


def _tariff_of(
    config: Config,
    book: TariffBook,
    *,
    customer: str | None,
    sensor: MeterKey | None,
) -> Tariff | None:
    if sensor is None:
        first = next((s for s in config.sensors if s.customer == customer), None)
        if first is None:
            return None
        sensor = first.address
    return book.for_sensor(sensor).tariff
