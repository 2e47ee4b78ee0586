"""Bill lines beside energy: cost by price source, and standing charges.

Standing charges are counted per local calendar day of the report
(``tariffs.timezone``), whole days only: a report from 10:00 on the 1st to
the 3rd counts three days, with no pro-rating of a part day. Each billed
meter pays its plan's ``standing_charge_per_day`` (the version in force at
the day's local midnight), or its own from ``tariffs.standing_charges``; a
customer listed there pays one charge per day for all its meters instead.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import date

    from wattd.costing.bands import PriceSource
    from wattd.costing.tariff import Assignment, Tariff

__all__ = ["Account", "PriceLine", "account_of", "price_lines", "standing_charge"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PriceLine:
    """Facility energy and its cost under one band, or at market prices."""

    name: str
    kind: PriceSource
    """``band``, ``market`` (the price file) or ``fallback`` (bands standing in)."""
    kwh: float
    cost: float

    @property
    def mean_price_per_kwh(self) -> float | None:
        """The energy-weighted price of the line."""
        return self.cost / self.kwh if self.kwh > 0 else None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """Who pays a standing charge, and at what rate."""

    key: str
    per_day: float | None
    """A fixed rate; None means the tariff's rate of each day."""
    tariff: Tariff | None

    @property
    def customer_wide(self) -> bool:
        """True for one charge covering all of a customer's meters."""
        return self.key.startswith("customer:")


def account_of(assignment: Assignment) -> Account | None:
    """The standing-charge account of a meter, if it pays one."""
    if assignment.standing_account is None:
        return None
    return Account(
        key=assignment.standing_account,
        per_day=assignment.standing_per_day,
        tariff=assignment.tariff,
    )


def standing_charge(
    accounts: Mapping[str, Account], days: Sequence[date], *, customer_wide: bool
) -> tuple[float | None, int]:
    """The standing charges of ``days`` (None when nobody pays one), and payers.

    ``customer_wide`` False leaves out customer-wide charges, for groups finer
    than a customer (a meter or rack does not pay its customer's whole charge).
    """
    total: list[float] = []
    payers = 0
    for account in accounts.values():
        if account.customer_wide and not customer_wide:
            continue
        payers += 1
        for day in days:
            if account.per_day is not None:
                total.append(account.per_day)
            elif account.tariff is not None:
                total.append(account.tariff.standing_on(day))
    return (math.fsum(total) if total else None), payers


def price_lines(
    sums: Mapping[tuple[str, PriceSource], list[float]],
) -> tuple[PriceLine, ...]:
    """Lines from ``(name, kind) -> [facility Wh, cost]``; market first."""
    order = {"market": 0, "band": 1, "fallback": 2}
    lines = [
        PriceLine(name=name, kind=kind, kwh=wh / 1000.0, cost=cost)
        for (name, kind), (wh, cost) in sums.items()
    ]
    lines.sort(key=lambda line: (order[line.kind], -line.cost, line.name))
    return tuple(lines)
