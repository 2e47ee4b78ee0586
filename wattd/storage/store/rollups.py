"""Rollup maths: how readings add up into minute and hour buckets.

Each reading adds to the bucket its time falls in (count, watts sum/min/max,
vrms sum, last ``wh_total``). Its ``wh_delta`` is the energy since the previous
reading of the same sensor, so it is spread linearly in time over
``(previous, this]`` and split exactly at bucket edges; the pieces always add
up to ``wh_delta``. Buckets are merged into the tables by upserts, so adding
readings in batches gives the same buckets as adding them all at once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

from wattd.storage.store.records import db_sensor
from wattd.storage.store.schema import ROLLUP_TABLES
from wattd.storage.store.times import HOUR_NS, floor_ns

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "MAX_SPREAD_NS",
    "RollupAccumulator",
    "previous_reading_ns",
    "split_energy",
    "write_rollups",
]

# energy.max_gap_s is at most an hour, so no reading's wh_delta honestly covers
# more. A longer distance to the previous stored reading means readings were
# lost in between; the energy is then spread over the last hour only instead of
# being smeared across days of buckets.
MAX_SPREAD_NS: Final = HOUR_NS

_UPSERT_ROLLUP: Final = """INSERT INTO {t} (sensor, bucket_ns, n, watts_sum, watts_min,
    watts_max, vrms_sum, wh, last_time_ns, wh_total_last)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (sensor, bucket_ns) DO UPDATE SET
    n = n + excluded.n,
    watts_sum = watts_sum + excluded.watts_sum,
    watts_min = coalesce(min(watts_min, excluded.watts_min), watts_min,
                         excluded.watts_min),
    watts_max = coalesce(max(watts_max, excluded.watts_max), watts_max,
                         excluded.watts_max),
    vrms_sum = vrms_sum + excluded.vrms_sum,
    wh = wh + excluded.wh,
    wh_total_last = CASE
        WHEN excluded.last_time_ns IS NOT NULL
             AND (last_time_ns IS NULL OR excluded.last_time_ns >= last_time_ns)
        THEN excluded.wh_total_last ELSE wh_total_last END,
    last_time_ns = coalesce(max(last_time_ns, excluded.last_time_ns), last_time_ns,
                            excluded.last_time_ns)"""


def split_energy(
    wh: float, start_ns: int, end_ns: int, size_ns: int
) -> list[tuple[int, float]]:
    """Spread ``wh`` linearly over ``(start_ns, end_ns]`` into buckets of ``size_ns``.

    Returns ``(bucket_start_ns, wh)`` pieces in time order; they sum to ``wh``
    exactly (the last piece takes the rounding). An empty or reversed interval
    puts everything in the bucket of ``end_ns``.
    """
    if end_ns <= start_ns:
        return [(floor_ns(end_ns, size_ns), wh)]
    first = floor_ns(start_ns, size_ns)
    last = floor_ns(end_ns - 1, size_ns)
    span = end_ns - start_ns
    pieces: list[tuple[int, float]] = []
    done = 0.0
    bucket = first
    while bucket < last:
        overlap = min(end_ns, bucket + size_ns) - max(start_ns, bucket)
        piece = wh * overlap / span
        pieces.append((bucket, piece))
        done += piece
        bucket += size_ns
    pieces.append((last, wh - done))
    return pieces


@dataclasses.dataclass(slots=True)
class _Bucket:
    n: int = 0
    watts_sum: float = 0.0
    watts_min: float | None = None
    watts_max: float | None = None
    vrms_sum: float = 0.0
    wh: float = 0.0
    last_time_ns: int | None = None
    wh_total_last: float | None = None


class RollupAccumulator:
    """Contributions of readings to rollup buckets, optionally clipped to a range."""

    def __init__(self, lo_ns: int | None = None, hi_ns: int | None = None) -> None:
        self.lo_ns = lo_ns
        self.hi_ns = hi_ns
        self.buckets: dict[tuple[str, int, int], _Bucket] = {}

    def _keeps(self, bucket_ns: int) -> bool:
        return (self.lo_ns is None or bucket_ns >= self.lo_ns) and (
            self.hi_ns is None or bucket_ns < self.hi_ns
        )

    def _bucket(self, table: str, sensor: int, bucket_ns: int) -> _Bucket:
        key = (table, sensor, bucket_ns)
        agg = self.buckets.get(key)
        if agg is None:
            agg = self.buckets[key] = _Bucket()
        return agg

    def add(
        self,
        sensor: int,
        time_ns: int,
        prev_ns: int | None,
        *,
        watts: float | None,
        vrms: float | None,
        wh_delta: float,
        wh_total: float | None,
    ) -> None:
        """Count one reading in its buckets and spread its energy."""
        for table, size in ROLLUP_TABLES.values():
            bucket = floor_ns(time_ns, size)
            if self._keeps(bucket):
                agg = self._bucket(table, sensor, bucket)
                agg.n += 1
                if watts is not None:
                    agg.watts_sum += watts
                    agg.watts_min = (
                        watts if agg.watts_min is None else min(agg.watts_min, watts)
                    )
                    agg.watts_max = (
                        watts if agg.watts_max is None else max(agg.watts_max, watts)
                    )
                if vrms is not None:
                    agg.vrms_sum += vrms
                if agg.last_time_ns is None or time_ns >= agg.last_time_ns:
                    agg.last_time_ns = time_ns
                    agg.wh_total_last = wh_total
        self.add_energy(sensor, time_ns, prev_ns, wh_delta)

    def add_energy(
        self, sensor: int, time_ns: int, prev_ns: int | None, wh_delta: float
    ) -> None:
        """Spread one reading's energy over the buckets since the previous one."""
        if not wh_delta:
            return
        start = time_ns if prev_ns is None else max(prev_ns, time_ns - MAX_SPREAD_NS)
        for table, size in ROLLUP_TABLES.values():
            for bucket, wh in split_energy(wh_delta, start, time_ns, size):
                if self._keeps(bucket):
                    self._bucket(table, sensor, bucket).wh += wh

    def rows(self, table: str) -> list[tuple[object, ...]]:
        """The buckets of one table as rows for the upsert."""
        return [
            (
                db_sensor(sensor),
                bucket,
                a.n,
                a.watts_sum,
                a.watts_min,
                a.watts_max,
                a.vrms_sum,
                a.wh,
                a.last_time_ns,
                a.wh_total_last,
            )
            for (t, sensor, bucket), a in self.buckets.items()
            if t == table
        ]


def write_rollups(conn: sqlite3.Connection, acc: RollupAccumulator) -> None:
    """Merge the accumulated buckets into the rollup tables."""
    for table, _size in ROLLUP_TABLES.values():
        rows = acc.rows(table)
        if rows:
            conn.executemany(_UPSERT_ROLLUP.format(t=table), rows)


def previous_reading_ns(
    conn: sqlite3.Connection, sensor: int, time_ns: int
) -> int | None:
    """Time of the sensor's last stored reading before ``time_ns``.

    Falls back to the rollups' last reading times when the readings have
    already been deleted by retention.
    """
    db = db_sensor(sensor)
    row = conn.execute(
        "SELECT max(time_ns) FROM readings WHERE sensor = ? AND time_ns < ?",
        (db, time_ns),
    ).fetchone()
    if row[0] is not None:
        return int(row[0])
    best: int | None = None
    for table, _size in ROLLUP_TABLES.values():
        found = conn.execute(
            f"SELECT last_time_ns FROM {table} WHERE sensor = ? AND bucket_ns <= ?"  # noqa: S608
            " AND last_time_ns < ? ORDER BY bucket_ns DESC LIMIT 1",
            (db, time_ns, time_ns),
        ).fetchone()
        if found is not None and (best is None or int(found[0]) > best):
            best = int(found[0])
    return best
