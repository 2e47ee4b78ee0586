"""Past figures for the dashboard, read from the SQLite store's rollups.

Blocking SQLite calls: run these in a worker thread. Each call opens the store
read-only (WAL lets it read while the daemon writes) and closes it again, so
the dashboard holds no connection between requests. A missing store (fresh
install, ``store.enabled: false``) reads as "no history", not as an error.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Final

from wattd.costing.cost import EnergyInterval
from wattd.errors import StoreError
from wattd.storage.store import HOUR_NS, MINUTE_NS, Rollup, Store, from_ns, to_ns

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable
    from datetime import datetime
    from pathlib import Path

__all__ = ["energy_between", "intervals_between", "sparklines"]

# Above this many sensors the overview reads hourly buckets: a day of minute
# buckets is 1,440 rows per sensor, too many to read once a minute for a fleet.
MINUTE_DETAIL_MAX_SENSORS: Final = 200
# The overview's sparkline resolution when minute buckets are read.
SPARK_BUCKET_NS: Final = 10 * MINUTE_NS


def _open(path: Path) -> Store | None:
    if not path.exists():
        return None
    try:
        return Store.open(path, readonly=True)
    except StoreError:
        return None


def _edged_rollups(
    store: Store, lo: int, hi: int, sensors: Collection[int] | None = None
) -> list[Rollup]:
    """Buckets covering ``[lo, hi)``: hourly for whole hours, minutes at the edges.

    A local midnight that is not on the hour and the current hour come from
    minute buckets; a day of hours is 24 rows per sensor where minutes are
    1,440, which is what keeps a month's bill cheap.
    """
    chosen = None if sensors is None else sorted(sensors)
    first_hour = -(-lo // HOUR_NS) * HOUR_NS
    last_hour = hi // HOUR_NS * HOUR_NS
    if first_hour >= last_hour:
        return store.rollups("1m", lo, hi, chosen)
    return [
        *store.rollups("1m", lo, first_hour, chosen),
        *store.rollups("1h", first_hour, last_hour, chosen),
        *store.rollups("1m", last_hour, hi, chosen),
    ]


def energy_between(path: Path, start: datetime, end: datetime) -> dict[int, float]:
    """Energy (Wh) per sensor in ``[start, end)`` from the rollups."""
    store = _open(path)
    if store is None:
        return {}
    out: dict[int, float] = collections.defaultdict(float)
    try:
        with store:
            for row in _edged_rollups(store, to_ns(start), to_ns(end)):
                out[row.sensor] += row.wh
    except StoreError:
        return {}
    return dict(out)


def intervals_between(
    path: Path, start: datetime, end: datetime, sensors: Collection[int]
) -> list[EnergyInterval]:
    """The sensors' energy in ``[start, end)`` as intervals for the cost engine.

    Whole hours come as hour buckets (their energy spread evenly over the
    hour when a price changes inside it), the edges as minute buckets.
    """
    store = _open(path)
    if store is None or not sensors:
        return []
    try:
        with store:
            rows = _edged_rollups(store, to_ns(start), to_ns(end), sensors)
    except StoreError:
        return []
    return [
        EnergyInterval(
            sensor=r.sensor,
            start=r.start,
            end=from_ns(r.end_ns),
            wh=r.wh,
            mean_watts=r.watts_mean,
            max_watts=r.watts_max,
            readings=float(r.n_readings),
        )
        for r in rows
    ]


def sparklines(
    path: Path,
    *,
    end: datetime,
    hours: float = 24.0,
    sensors: Iterable[int] | None = None,
    minute_detail: bool | None = None,
) -> dict[str, object]:
    """Mean watts per bucket over the last ``hours``, per sensor.

    Returns ``{"bucket_ms": size, "series": {sensor: [[start_ms, watts], ...]}}``.
    Minute buckets are grouped into 10-minute points, unless there are too many
    sensors (then hourly points) or ``minute_detail`` forces a choice (a single
    sensor's detail view asks for minutes, ungrouped).
    """
    store = _open(path)
    if store is None:
        return {"bucket_ms": 0, "series": {}}
    hi = to_ns(end)
    lo = hi - int(hours * HOUR_NS)
    chosen = sorted(set(sensors)) if sensors is not None else None
    try:
        with store:
            count = len(chosen) if chosen is not None else len(store.known_sensors())
            use_minutes = (
                count <= MINUTE_DETAIL_MAX_SENSORS
                if minute_detail is None
                else minute_detail
            )
            if use_minutes:
                rows = store.rollups("1m", lo // MINUTE_NS * MINUTE_NS, hi, chosen)
                group_ns = MINUTE_NS if minute_detail else SPARK_BUCKET_NS
            else:
                rows = store.rollups("1h", lo // HOUR_NS * HOUR_NS, hi, chosen)
                group_ns = HOUR_NS
    except StoreError:
        return {"bucket_ms": 0, "series": {}}
    return {"bucket_ms": group_ns // 1_000_000, "series": _group(rows, group_ns)}


def _group(rows: Iterable[Rollup], size_ns: int) -> dict[str, list[list[float]]]:
    """Reading-weighted mean watts per ``size_ns`` bucket, per sensor."""
    sums: dict[int, dict[int, list[float]]] = collections.defaultdict(dict)
    for row in rows:
        if row.watts_mean is None or row.n_readings <= 0:
            continue
        start = row.start_ns // size_ns * size_ns
        acc = sums[row.sensor].setdefault(start, [0.0, 0.0])
        acc[0] += row.watts_mean * row.n_readings
        acc[1] += row.n_readings
    return {
        str(sensor): [
            [start // 1_000_000, round(total / n, 2)]
            for start, (total, n) in sorted(buckets.items())
        ]
        for sensor, buckets in sums.items()
    }
