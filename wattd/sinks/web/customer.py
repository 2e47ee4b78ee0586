"""What a customer may see, and the customer page's figures and bills.

A :class:`Scope` is the set of meters a viewer sees: every one for the
operator, the meters whose ``customer`` is its name for a customer. The
handlers filter every answer through it. A customer never learns of anyone
else's meters: another customer's sensor answers 404, as one that does not
exist would, and daemon internals (ports, sinks, counts of the whole site,
``/metrics``) are the operator's alone.

:class:`CustomerDesk` prices the page's figures and bills off the event loop
and keeps the work bounded. Pricing takes seconds for a customer with many
servers (the engine spends ~0.25 ms per meter-hour), so it runs on threads of
its own, not on the daemon's shared worker, where state saves and scrapes
would wait behind it: one summary and one bill at a time. A customer's
figures are kept for a couple of minutes, an ended billing period's until
the next reload, and a bill covers at most ``web.max_bill_days``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from typing import TYPE_CHECKING, Any, Final

from wattd.sinks.web.bills import customer_summary, render_bill

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from wattd.config import Config
    from wattd.sinks.web.bills import Bill, BillFormat, ClosedPeriods

__all__ = ["EVERYTHING", "BillBusy", "CustomerDesk", "Scope", "scopes_for"]

SUMMARY_TTL_S: Final = 120.0
"""The page's period figures change slowly (power now comes live)."""
SUMMARY_CACHE_SIZE: Final = 256


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """The meters a viewer sees: ``sensors`` None means all of them."""

    customer: str | None = None
    sensors: frozenset[int] | None = None

    def allows(self, sensor: int) -> bool:
        """Whether ``sensor`` is one of the viewer's meters."""
        return self.sensors is None or sensor in self.sensors

    @property
    def is_operator(self) -> bool:
        """True for the whole site's view."""
        return self.sensors is None


EVERYTHING: Final = Scope()


def scopes_for(config: Config) -> dict[str, Scope]:
    """One scope per customer named by a sensor."""
    members: dict[str, set[int]] = {}
    for sensor in config.sensors:
        if sensor.customer:
            members.setdefault(sensor.customer, set()).add(sensor.address)
    return {name: Scope(name, frozenset(s)) for name, s in members.items()}


class BillBusy(Exception):
    """Another bill is being made; the client should retry shortly."""


class CustomerDesk:
    """The customer page's figures (cached) and bills (one at a time)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._scopes: dict[str, Scope] = {}
        self._summaries: dict[str, tuple[float, dict[str, Any]]] = {}
        self._closed: ClosedPeriods = {}
        self._summary_lock = asyncio.Lock()
        self.bill_lock = asyncio.Lock()

    def reconfigure(self, config: Config) -> None:
        """Take a new config; cached figures are dropped."""
        self.config = config
        self._scopes = scopes_for(config)
        self._summaries.clear()
        self._closed.clear()

    def scope_named(self, customer: str | None) -> Scope:
        """The meters a customer sees (None: the operator sees every meter)."""
        if customer is None:
            return EVERYTHING
        return self._scopes.get(customer) or Scope(customer, frozenset())

    def customers(self) -> list[str]:
        """Every customer some sensor names, sorted."""
        return sorted(self._scopes)

    def known(self, customer: str) -> bool:
        """Whether some sensor names ``customer``."""
        return customer in self._scopes

    async def summary(self, customer: str) -> dict[str, Any]:
        """The page's figures for ``customer`` (two minutes old at most)."""
        async with self._summary_lock:
            now = time.monotonic()
            cached = self._summaries.get(customer)
            if cached is not None and cached[0] > now:
                return cached[1]
            config = self.config
            if len(self._closed) >= SUMMARY_CACHE_SIZE:
                self._closed.clear()
            data = await asyncio.to_thread(
                functools.partial(
                    customer_summary,
                    config,
                    config.store_path,
                    customer,
                    self._clock(),
                    self._closed,
                )
            )
            if len(self._summaries) >= SUMMARY_CACHE_SIZE:
                self._summaries.clear()
            self._summaries[customer] = (time.monotonic() + SUMMARY_TTL_S, data)
            return data

    async def bill(
        self, customer: str, start: datetime, end: datetime, fmt: BillFormat
    ) -> Bill:
        """The bill for ``[start, end)``, made on a thread of its own.

        Raises:
            BillBusy: another bill is being made.
        """
        if self.bill_lock.locked():
            raise BillBusy
        config = self.config
        async with self.bill_lock:
            return await asyncio.to_thread(
                functools.partial(
                    render_bill,
                    config,
                    config.store_path,
                    customer,
                    start,
                    end,
                    fmt,
                    now=self._clock(),
                )
            )
