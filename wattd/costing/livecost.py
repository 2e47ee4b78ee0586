"""Live cost: stamp each reading with its price band, cost per hour and cost today.

A sans-IO stage in the reading path: no clock, no IO; the reading's own
``time`` is the clock, and the energy used earlier today is handed in. Each
reading's energy (``wh_delta``) is priced over the time since the sensor's
previous reading, split exactly at band edges and at
local midnight, so the part used before midnight stays with yesterday. The
running total restarts at local midnight in the timezone of the sensor's
tariff. Sensors without a tariff pass through unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from wattd.costing.cost import EnergyInterval, price_interval
from wattd.costing.tariff import MeterKey, TariffBook

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from wattd.config import Config
    from wattd.core.readings import Reading

__all__ = ["LiveCost"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class _Today:
    day: date
    cost: float
    last_time: datetime


class LiveCost:
    """Per-sensor running cost of the current local day.

    Use ``reading = live.apply(reading)`` for every reading, in arrival order.
    """

    def __init__(
        self,
        config: Config,
        *,
        history: Callable[[datetime, datetime], Iterable[EnergyInterval]] | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._config = config
        self._book = TariffBook(config)
        self._today: dict[MeterKey, _Today] = {}
        self._history = history
        self._now = now

    def prepare(self) -> None:
        """Seed today's totals from ``history``, so a restart keeps cost so far.

        Runs whatever IO ``history`` does (the daemon reads the store in a
        worker thread); without ``history`` and ``now`` it does nothing.
        """
        if self._history is None or self._now is None or not self._book.tariffs:
            return
        now = self._now()
        self.seed(self._history(now - timedelta(days=1), now), now)

    def reconfigure(self, config: Config) -> None:
        """Take new tariffs; today's totals so far are kept."""
        self._config = config
        self._book = TariffBook(config)

    def apply(self, reading: Reading) -> Reading:
        """Return the reading with price band, cost per hour and cost today set."""
        if not self._book.tariffs:
            # Nothing can be priced; and no per-sensor assignment is kept.
            return reading
        assignment = self._book.for_sensor(reading.sensor)
        tariff = assignment.tariff
        if tariff is None:
            return reading
        now = reading.time
        today = now.astimezone(tariff.timezone).date()
        band = tariff.band_at(now)
        state = self._today.get(reading.sensor)
        start = now
        if state is not None and state.last_time <= now:
            start = state.last_time
        if state is None or today > state.day:
            state = _Today(day=today, cost=0.0, last_time=now)
            self._today[reading.sensor] = state
        wh = reading.wh_delta if math.isfinite(reading.wh_delta) else 0.0
        if wh and today == state.day:
            interval = EnergyInterval(
                sensor=reading.sensor, start=start, end=now, wh=wh
            )
            for part in price_interval(interval, tariff, pue=assignment.pue):
                # Parts never straddle local midnight, so a part's start date
                # tells whether it belongs to today or stays with yesterday.
                if part.start.astimezone(tariff.timezone).date() == today:
                    state.cost += part.cost
        state.last_time = max(state.last_time, now)
        per_hour = None
        if math.isfinite(reading.watts):
            per_hour = reading.watts / 1000.0 * assignment.pue * band.price_per_kwh
        return dataclasses.replace(
            reading,
            price_band=band.name,
            price_per_kwh=band.price_per_kwh,
            currency=tariff.currency,
            cost_per_hour=per_hour,
            cost_today=state.cost if state.day == today else None,
        )

    def seed(self, intervals: Iterable[EnergyInterval], now: datetime) -> None:
        """Start today's totals from stored energy (e.g. the store at startup).

        Only energy since local midnight of ``now`` counts; intervals after
        ``now`` are ignored.
        """
        for interval in intervals:
            assignment = self._book.for_sensor(interval.sensor)
            tariff = assignment.tariff
            if tariff is None or interval.start >= now:
                continue
            today = now.astimezone(tariff.timezone).date()
            state = self._today.get(interval.sensor)
            if state is None or state.day != today:
                state = _Today(day=today, cost=0.0, last_time=interval.start)
                self._today[interval.sensor] = state
            for part in price_interval(interval, tariff, pue=assignment.pue):
                if part.start.astimezone(tariff.timezone).date() == today:
                    state.cost += part.cost
            state.last_time = max(state.last_time, min(interval.end, now))

    def snapshot(self) -> dict[str, Any]:
        """Today's totals as JSON-ready data (to survive a restart)."""
        return {
            str(sensor): {
                "day": s.day.isoformat(),
                "cost": s.cost,
                "last_time": s.last_time.astimezone(UTC).isoformat(),
            }
            for sensor, s in self._today.items()
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load totals saved by :meth:`snapshot`; malformed entries are skipped."""
        for key, entry in data.items():
            try:
                self._today[int(key)] = _Today(
                    day=date.fromisoformat(entry["day"]),
                    cost=float(entry["cost"]),
                    last_time=datetime.fromisoformat(entry["last_time"]),
                )
            except (KeyError, TypeError, ValueError):
                continue

    def cost_today(self, sensor: int) -> float | None:
        """The running total of a sensor, if it has one."""
        state = self._today.get(sensor)
        return state.cost if state else None
