"""Per-meter aggregation of readings over fixed wall-clock intervals (sans IO).

The MQTT and InfluxDB sinks can publish one reading per meter per interval
instead of every reading (``aggregate_s``). Nothing here does IO or reads a
clock: time comes from the readings' own ``time``, so a replay aggregates
exactly like live data.

* **Buckets** are aligned to multiples of the interval since the Unix epoch
  (``time_ns // interval_ns``): two daemons, or one daemon before and after a
  restart, cut the same intervals, and a query grouped by the interval sees at
  most one point per meter per group.
* **One bucket closes** when its meter sends a reading of another interval, or
  when any meter's reading shows that time has moved past it (so a meter that
  fell silent is emitted too), or on :meth:`ReadingAggregator.drain`. A meter
  with no reading in an interval emits nothing for it; nothing is invented.
* **The emitted reading** is the bucket's last reading with these replaced:
  ``watts``, ``va``, ``vrms``, ``irms`` and ``cost_per_hour`` are arithmetic
  means; ``power_factor`` is mean watts / mean VA (None when no reading of the
  bucket had one, as :mod:`wattd.core.power` does at no load); ``wh_delta`` is the
  sum; ``rssi_dbm`` the rounded mean; ``flags`` the union; ``gap_s`` the
  longest gap. ``time``, ``wh_total`` and every other field are the last
  reading's, so energy totals stay exact and the sum of the emitted
  ``wh_delta`` equals the sum of the readings'. A bucket of one reading is
  emitted as that very reading.
* **All meters silent** (a radio unplugged): nothing would close the open
  buckets, so :meth:`ReadingAggregator.expire_idle` closes them once no
  reading at all has come for two intervals (at least :data:`IDLE_MIN_S`).
  The caller passes its monotonic clock; the aggregator keeps none.
* **Late readings** (older than their meter's open bucket, e.g. after the wall
  clock was stepped back) are never dropped nor merged into a newer bucket: the
  open bucket is emitted and the late reading starts a bucket of its own
  interval, emitted with its own time once the meter's readings move on. A
  clock stepped back by an hour therefore just restarts aggregation on the new
  clock instead of flooding or stalling the output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wattd.core.readings import Flag, Reading

__all__ = ["MAX_INTERVAL_S", "ReadingAggregator"]

MAX_INTERVAL_S: Final = 3600.0
"""The longest interval the config accepts."""
IDLE_MIN_S = 10.0
"""Silence shorter than this never closes buckets early: a busy daemon may
take seconds to deliver a batch, and that is no silence."""


class ReadingAggregator:
    """Turns a stream of readings into one mean reading per meter per interval.

    ``interval_s`` of 0 passes readings through untouched.
    """

    def __init__(self, interval_s: float) -> None:
        if not (math.isfinite(interval_s) and 0.0 <= interval_s <= MAX_INTERVAL_S):
            msg = f"interval must be 0-{MAX_INTERVAL_S:g} s, got {interval_s!r}"
            raise ValueError(msg)
        self.interval_s = interval_s
        self._interval_ns = round(interval_s * 1e9)
        self._open: dict[int, _Bucket] = {}
        self._latest: int | None = None
        """Interval of the most recent reading of any meter."""
        self._last_add_s: float | None = None
        """Caller's monotonic time of the last :meth:`add` with readings."""

    @property
    def active(self) -> bool:
        """False when readings pass through (interval 0)."""
        return self._interval_ns > 0

    @property
    def pending(self) -> int:
        """Meters with an open bucket."""
        return len(self._open)

    def add(
        self, readings: Sequence[Reading], now_s: float | None = None
    ) -> Sequence[Reading]:
        """Take readings in arrival order; return the buckets that closed.

        ``now_s`` is the caller's monotonic time, for :meth:`expire_idle`.
        With interval 0 this is ``readings`` itself, not a copy.
        """
        step = self._interval_ns
        if not step:
            return readings
        if readings and now_s is not None:
            self._last_add_s = now_s
        out: list[Reading] = []
        buckets = self._open
        for reading in readings:
            index = reading.time_ns // step
            latest = self._latest
            if latest is not None and index > latest:
                # Time moved on: every other interval is over, including those
                # of meters that have gone quiet.
                self._close_all_but(index, out)
            # Follows a clock stepped back too: its next step forward then
            # closes what was left open from before the step.
            self._latest = index
            bucket = buckets.get(reading.sensor)
            if bucket is None:
                buckets[reading.sensor] = _Bucket(index, reading)
            elif bucket.index == index:
                bucket.add(reading)
            else:
                # A later or (clock stepped back) earlier interval for this meter.
                out.append(bucket.result())
                buckets[reading.sensor] = _Bucket(index, reading)
        return out

    def expire_idle(self, now_s: float) -> list[Reading]:
        """Close every bucket after a silence of two intervals (or IDLE_MIN_S).

        ``now_s`` is the caller's monotonic time. Active meters close each
        other's buckets as time moves on; this is for when none is left.
        """
        last = self._last_add_s
        idle_s = max(2 * self.interval_s, IDLE_MIN_S)
        if not self._open or last is None or now_s - last < idle_s:
            return []
        return self.drain()

    def drain(self) -> list[Reading]:
        """Close every open bucket now (flush, reload, shutdown)."""
        closed = sorted(self._open.values(), key=lambda b: b.index)
        self._open.clear()
        self._latest = None
        return [bucket.result() for bucket in closed]

    def _close_all_but(self, index: int, out: list[Reading]) -> None:
        buckets = self._open
        closed = [b for b in buckets.values() if b.index != index]
        for bucket in closed:
            del buckets[bucket.last.sensor]
            out.append(bucket.result())


class _Bucket:
    """Running sums of one meter's readings within one interval."""

    __slots__ = (
        "cost_n",
        "cost_sum",
        "count",
        "flags",
        "gap_s",
        "index",
        "irms",
        "last",
        "means_n",
        "pf_seen",
        "rssi_n",
        "rssi_sum",
        "va",
        "vrms",
        "watts",
        "wh_delta",
    )

    def __init__(self, index: int, reading: Reading) -> None:
        self.index = index
        self.count = 0
        self.means_n = 0
        self.watts = 0.0
        self.va = 0.0
        self.vrms = 0.0
        self.irms = 0.0
        self.pf_seen = False
        self.wh_delta = 0.0
        self.rssi_sum = 0
        self.rssi_n = 0
        self.cost_sum = 0.0
        self.cost_n = 0
        self.flags: frozenset[Flag] = reading.flags
        self.gap_s: float | None = None
        self.last = reading
        self.add(reading)

    def add(self, r: Reading) -> None:
        self.count += 1
        self.last = r
        # Readings come ~evenly spaced (one frame per ~2 s), and each one is
        # already a mean over whole mains cycles: a sample of the power, so the
        # plain mean estimates the interval's mean power. A mean from energy
        # (sum(wh_delta) * 3600 / span) would be wrong wherever the integrator
        # adds nothing: a bucket's first reading after a gap (ENERGY_GAP), a
        # meter's first reading, negative power (the total never goes down),
        # and undefined for a single reading. Energy itself stays exact through
        # wh_total (last) and wh_delta (sum).
        if math.isfinite(r.watts + r.va + r.vrms + r.irms):
            self.means_n += 1
            self.watts += r.watts
            self.va += r.va
            self.vrms += r.vrms
            self.irms += r.irms
        if r.power_factor is not None:
            self.pf_seen = True
        self.wh_delta += r.wh_delta
        if r.rssi_dbm is not None:
            self.rssi_sum += r.rssi_dbm
            self.rssi_n += 1
        if r.cost_per_hour is not None and math.isfinite(r.cost_per_hour):
            self.cost_sum += r.cost_per_hour
            self.cost_n += 1
        if r.flags is not self.flags and not r.flags <= self.flags:
            self.flags = self.flags | r.flags
        if r.gap_s is not None and (self.gap_s is None or r.gap_s > self.gap_s):
            self.gap_s = r.gap_s

    def result(self) -> Reading:
        last = self.last
        if self.count == 1:
            return last
        n = self.means_n
        if n:
            watts, va = self.watts / n, self.va / n
            vrms, irms = self.vrms / n, self.irms / n
        else:
            watts = va = vrms = irms = math.nan
        power_factor = None
        # As in wattd.core.power: no figure when every reading was too near no load.
        if self.pf_seen and va > 0.0:
            power_factor = max(-1.0, min(1.0, watts / va))
        return dataclasses.replace(
            last,
            watts=watts,
            va=va,
            vrms=vrms,
            irms=irms,
            power_factor=power_factor,
            wh_delta=self.wh_delta,
            rssi_dbm=round(self.rssi_sum / self.rssi_n) if self.rssi_n else None,
            flags=self.flags,
            gap_s=self.gap_s,
            cost_per_hour=self.cost_sum / self.cost_n if self.cost_n else None,
        )
