"""Rewriting stored history, as ``wattd reprocess`` does after decoding again.

Readings of a range are deleted and written anew; then the rollups of the
range are recomputed from the readings (:meth:`StoreRepair.rebuild_rollups`
gives the same buckets as the incremental upserts did when readings arrived in
time order), the energy the first reading after the range spreads back into it
is corrected, and later totals are shifted to stay continuous.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wattd.storage.store.base import StoreBase
from wattd.storage.store.records import db_sensor, py_sensor
from wattd.storage.store.rollups import (
    MAX_SPREAD_NS,
    RollupAccumulator,
    previous_reading_ns,
    write_rollups,
)
from wattd.storage.store.schema import ROLLUP_TABLES
from wattd.storage.store.times import HOUR_NS, ceil_ns, floor_ns

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["StoreRepair"]


class StoreRepair(StoreBase):
    """The store's operations for rewriting a range of history."""

    def rebuild_rollups(
        self, from_ns: int, to_ns: int, sensors: Iterable[int] | None = None
    ) -> tuple[int, int]:
        """Recompute every minute and hour bucket overlapping ``[from_ns, to_ns)``.

        The range is widened to whole UTC hours. Only meaningful where readings
        are still stored (see ``readings_retention_days``). Returns the widened
        range.
        """
        start = floor_ns(from_ns, HOUR_NS)
        end = ceil_ns(to_ns, HOUR_NS)
        with self._guard("rebuilding rollups"), self.transaction():
            chosen = (
                sorted(set(sensors))
                if sensors is not None
                else self._sensors_between(start, end + MAX_SPREAD_NS)
            )
            for sensor in chosen:
                self._rebuild_sensor(sensor, start, end)
            self._last_ns.clear()
        return start, end

    def _rebuild_sensor(self, sensor: int, start: int, end: int) -> None:
        db = db_sensor(sensor)
        for table, _size in ROLLUP_TABLES.values():
            self._conn.execute(
                f"DELETE FROM {table} WHERE sensor = ? AND bucket_ns >= ?"  # noqa: S608
                " AND bucket_ns < ?",
                (db, start, end),
            )
        acc = RollupAccumulator(start, end)
        prev = previous_reading_ns(self._conn, sensor, start)
        cursor = self._conn.execute(
            "SELECT time_ns, watts, vrms, wh_delta, wh_total FROM readings"
            " WHERE sensor = ? AND time_ns >= ? ORDER BY time_ns, id",
            (db, start),
        )
        for time_ns, watts, vrms, wh_delta, wh_total in cursor:
            acc.add(
                sensor,
                time_ns,
                prev,
                watts=watts,
                vrms=vrms,
                wh_delta=wh_delta,
                wh_total=wh_total,
            )
            prev = time_ns
            if time_ns >= end:
                # Later readings start their interval at or after this one.
                break
        cursor.close()
        write_rollups(self._conn, acc)

    def _sensors_between(self, start: int, end: int) -> list[int]:
        found: set[int] = set()
        for table, column in (
            ("readings", "time_ns"),
            ("rollup_1m", "bucket_ns"),
            ("rollup_1h", "bucket_ns"),
        ):
            found.update(
                py_sensor(int(row[0]))
                for row in self._conn.execute(
                    f"SELECT DISTINCT sensor FROM {table}"  # noqa: S608
                    f" WHERE {column} >= ? AND {column} < ?",
                    (start, end),
                )
            )
        return sorted(found)

    def shift_edge_energy(
        self,
        sensor: int,
        edge_ns: int,
        *,
        old: tuple[int, float] | None,
        new: tuple[int, float] | None,
    ) -> None:
        """Correct the buckets before ``edge_ns`` for a rewritten first reading.

        A reading spreads its ``wh_delta`` back to the previous reading, so the
        first reading at or after the edge also fed buckets before it. ``old``
        and ``new`` are that reading's ``(time_ns, wh_delta)`` before and after
        a rewrite; the difference moves into those buckets.
        """
        with self._guard("correcting rollups at a range edge"), self.transaction():
            prev = previous_reading_ns(self._conn, sensor, edge_ns)
            acc = RollupAccumulator(hi_ns=edge_ns)
            if old is not None:
                acc.add_energy(sensor, old[0], prev, -old[1])
            if new is not None:
                acc.add_energy(sensor, new[0], prev, new[1])
            write_rollups(self._conn, acc)

    def delete_readings(self, from_ns: int, to_ns: int, sensor: int) -> int:
        """Delete one sensor's readings in ``[from_ns, to_ns)``, not its rollups."""
        with self._guard("deleting readings"), self.transaction():
            cur = self._conn.execute(
                "DELETE FROM readings"
                " WHERE sensor = ? AND time_ns >= ? AND time_ns < ?",
                (db_sensor(sensor), from_ns, to_ns),
            )
            self._last_ns.clear()
            return cur.rowcount

    def shift_totals(self, sensor: int, from_ns: int, wh: float) -> int:
        """Add ``wh`` to the sensor's stored ``wh_total`` from ``from_ns`` on.

        Readings at or after ``from_ns``, rollup buckets starting at or after it,
        and the sensor's last known total move together. Returns the number of
        readings changed.
        """
        db = db_sensor(sensor)
        with self._guard("shifting energy totals"), self.transaction():
            cur = self._conn.execute(
                "UPDATE readings SET wh_total = wh_total + ?"
                " WHERE sensor = ? AND time_ns >= ?",
                (wh, db, from_ns),
            )
            changed = cur.rowcount
            for table, _size in ROLLUP_TABLES.values():
                self._conn.execute(
                    f"UPDATE {table} SET wh_total_last = wh_total_last + ?"  # noqa: S608
                    " WHERE sensor = ? AND bucket_ns >= ?",
                    (wh, db, from_ns),
                )
            self._conn.execute(
                "UPDATE sensors SET wh_total = wh_total + ?"
                " WHERE sensor = ? AND last_time_ns >= ?",
                (wh, db, from_ns),
            )
            return changed

    def replace_latest(
        self, sensor: int, *, name: str, time_ns: int, wh_total: float | None
    ) -> None:
        """Overwrite the sensor's latest known reading time and total."""
        with self._guard("recording a total"), self.transaction():
            self._conn.execute(
                "INSERT INTO sensors (sensor, name, last_time_ns, wh_total)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (sensor) DO UPDATE SET"
                " name = excluded.name, last_time_ns = excluded.last_time_ns,"
                " wh_total = excluded.wh_total",
                (db_sensor(sensor), name, time_ns, wh_total),
            )
