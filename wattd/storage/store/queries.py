"""Reading the store: readings, rollups, archived frames and per-sensor totals.

Every result is ordered by sensor then time (frames by arrival). The ``iter_``
methods stream rows from the cursor; the others return lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from wattd.storage.store.base import StoreBase
from wattd.storage.store.records import (
    READING_COLUMNS,
    Rollup,
    StoredFrame,
    StoredReading,
    db_sensor,
    py_sensor,
    rollup_from_row,
    stored_frame,
    stored_reading,
)
from wattd.storage.store.schema import ROLLUP_TABLES, Resolution

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["StoreQueries"]


class StoreQueries(StoreBase):
    """The store's reads."""

    def known_sensors(self) -> dict[int, str]:
        """Every sensor ever stored, with the name of its latest reading."""
        with self._guard("listing sensors"):
            return {
                py_sensor(int(s)): str(n)
                for s, n in self._conn.execute(
                    "SELECT sensor, name FROM sensors ORDER BY sensor"
                )
            }

    def last_wh_totals(self) -> dict[int, float]:
        """Each sensor's ``wh_total`` at its latest stored reading.

        Kept in its own table, so it survives readings retention; the daemon
        raises its energy floor to these at startup.
        """
        with self._guard("reading the last energy totals"):
            return {
                py_sensor(int(s)): float(wh)
                for s, wh in self._conn.execute(
                    "SELECT sensor, wh_total FROM sensors WHERE wh_total IS NOT NULL"
                )
            }

    def latest_known(self, sensor: int) -> tuple[int, float | None] | None:
        """``(time_ns, wh_total)`` of the sensor's latest reading ever stored.

        Comes from the sensors table, so it outlives readings retention.
        """
        with self._guard("reading the latest total"):
            row = self._conn.execute(
                "SELECT last_time_ns, wh_total FROM sensors WHERE sensor = ?",
                (db_sensor(sensor),),
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), None if row[1] is None else float(row[1])

    def last_before(self, sensor: int, time_ns: int) -> tuple[int, float] | None:
        """``(time_ns, wh_total)`` of the sensor's last reading before ``time_ns``.

        Uses the rollups' last totals when the readings are gone.
        """
        db = db_sensor(sensor)
        with self._guard("finding the previous reading"):
            row = self._conn.execute(
                "SELECT time_ns, wh_total FROM readings"
                " WHERE sensor = ? AND time_ns < ?"
                " AND wh_total IS NOT NULL ORDER BY time_ns DESC, id DESC LIMIT 1",
                (db, time_ns),
            ).fetchone()
            if row is not None:
                return int(row[0]), float(row[1])
            best: tuple[int, float] | None = None
            for table, _size in ROLLUP_TABLES.values():
                found = self._conn.execute(
                    f"SELECT last_time_ns, wh_total_last FROM {table}"  # noqa: S608
                    " WHERE sensor = ? AND bucket_ns <= ? AND last_time_ns < ?"
                    " AND wh_total_last IS NOT NULL ORDER BY bucket_ns DESC LIMIT 1",
                    (db, time_ns, time_ns),
                ).fetchone()
                if found is not None and (best is None or int(found[0]) > best[0]):
                    best = (int(found[0]), float(found[1]))
            return best

    def recent_readings(
        self, sensors: Iterable[int] | None = None, *, limit_per_sensor: int = 10
    ) -> list[StoredReading]:
        """The latest readings of each sensor, by sensor then time."""
        chosen = (
            sorted(set(sensors))
            if sensors is not None
            else sorted(self.known_sensors())
        )
        out: list[StoredReading] = []
        with self._guard("reading recent readings"):
            for sensor in chosen:
                rows = self._conn.execute(
                    f"SELECT {READING_COLUMNS} FROM readings WHERE sensor = ?"  # noqa: S608
                    " ORDER BY time_ns DESC, id DESC LIMIT ?",
                    (db_sensor(sensor), limit_per_sensor),
                ).fetchall()
                out.extend(stored_reading(row) for row in reversed(rows))
        return out

    def iter_readings(
        self, from_ns: int, to_ns: int, sensors: Iterable[int] | None = None
    ) -> Iterator[StoredReading]:
        """Readings in ``[from_ns, to_ns)``, by sensor then time, streamed."""
        chosen = sorted(set(sensors)) if sensors is not None else None
        with self._guard("reading readings"):
            if chosen is None:
                cursor = self._conn.execute(
                    f"SELECT {READING_COLUMNS} FROM readings"  # noqa: S608
                    " WHERE time_ns >= ? AND time_ns < ? ORDER BY sensor, time_ns, id",
                    (from_ns, to_ns),
                )
                for row in cursor:
                    yield stored_reading(row)
                return
            for sensor in chosen:
                cursor = self._conn.execute(
                    f"SELECT {READING_COLUMNS} FROM readings WHERE sensor = ?"  # noqa: S608
                    " AND time_ns >= ? AND time_ns < ? ORDER BY time_ns, id",
                    (db_sensor(sensor), from_ns, to_ns),
                )
                for row in cursor:
                    yield stored_reading(row)

    def readings(
        self, from_ns: int, to_ns: int, sensors: Iterable[int] | None = None
    ) -> list[StoredReading]:
        """Readings in ``[from_ns, to_ns)``, by sensor then time."""
        return list(self.iter_readings(from_ns, to_ns, sensors))

    def rollups(
        self,
        resolution: Resolution,
        from_ns: int,
        to_ns: int,
        sensors: Iterable[int] | None = None,
    ) -> list[Rollup]:
        """Buckets starting in ``[from_ns, to_ns)``, by sensor then time."""
        table, _size = ROLLUP_TABLES[resolution]
        where = "bucket_ns >= ? AND bucket_ns < ?"
        params: list[object] = [from_ns, to_ns]
        if sensors is not None:
            chosen = sorted({db_sensor(s) for s in sensors})
            where += f" AND sensor IN ({', '.join('?' * len(chosen))})"
            params.extend(chosen)
        with self._guard(f"reading {resolution} rollups"):
            rows = self._conn.execute(
                f"SELECT sensor, bucket_ns, n, watts_sum, watts_min, watts_max,"  # noqa: S608
                f" vrms_sum, wh, wh_total_last FROM {table} WHERE {where}"
                " ORDER BY sensor, bucket_ns",
                params,
            ).fetchall()
        return [rollup_from_row(resolution, row) for row in rows]

    def minute_rollups(
        self, from_ns: int, to_ns: int, sensors: Iterable[int] | None = None
    ) -> list[Rollup]:
        """Minute buckets in ``[from_ns, to_ns)``: energy per minute, for pricing."""
        return self.rollups("1m", from_ns, to_ns, sensors)

    def recent_rollups(
        self,
        resolution: Resolution,
        sensors: Iterable[int] | None = None,
        *,
        limit_per_sensor: int = 10,
    ) -> list[Rollup]:
        """The latest buckets of each sensor, by sensor then time."""
        table, _size = ROLLUP_TABLES[resolution]
        chosen = (
            sorted(set(sensors))
            if sensors is not None
            else sorted(self.known_sensors())
        )
        out: list[Rollup] = []
        with self._guard(f"reading {resolution} rollups"):
            for sensor in chosen:
                rows = self._conn.execute(
                    "SELECT sensor, bucket_ns, n, watts_sum, watts_min, watts_max,"  # noqa: S608
                    f" vrms_sum, wh, wh_total_last FROM {table} WHERE sensor = ?"
                    " ORDER BY bucket_ns DESC LIMIT ?",
                    (db_sensor(sensor), limit_per_sensor),
                ).fetchall()
                out.extend(rollup_from_row(resolution, row) for row in reversed(rows))
        return out

    def iter_frames(
        self,
        from_ns: int,
        to_ns: int,
        *,
        sensors: Iterable[int] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> Iterator[StoredFrame]:
        """Archived frames in ``[from_ns, to_ns)`` in arrival order, streamed."""
        where = "time_ns >= ? AND time_ns < ?"
        params: list[object] = [from_ns, to_ns]
        if sensors is not None:
            chosen = sorted({db_sensor(s) for s in sensors})
            where += f" AND sensor IN ({', '.join('?' * len(chosen))})"
            params.extend(chosen)
        if kinds is not None:
            wanted = sorted(set(kinds))
            where += f" AND kind IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        with self._guard("reading archived frames"):
            cursor = self._conn.execute(
                "SELECT id, time_ns, port, api_mode, kind, sensor, raw FROM frames"  # noqa: S608
                f" WHERE {where} ORDER BY time_ns, id",
                params,
            )
            for row in cursor:
                yield stored_frame(row)

    def frames(
        self,
        from_ns: int,
        to_ns: int,
        *,
        sensors: Iterable[int] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> list[StoredFrame]:
        """Archived frames in ``[from_ns, to_ns)`` in arrival order."""
        return list(self.iter_frames(from_ns, to_ns, sensors=sensors, kinds=kinds))

    def first_reading(
        self, sensor: int, from_ns: int, to_ns: int
    ) -> StoredReading | None:
        """The sensor's first reading in ``[from_ns, to_ns)``."""
        with self._guard("reading the first reading of a range"):
            row = self._conn.execute(
                f"SELECT {READING_COLUMNS} FROM readings WHERE sensor = ?"  # noqa: S608
                " AND time_ns >= ? AND time_ns < ? ORDER BY time_ns, id LIMIT 1",
                (db_sensor(sensor), from_ns, to_ns),
            ).fetchone()
        return None if row is None else stored_reading(row)

    def latest_reading(self, sensor: int) -> StoredReading | None:
        """The sensor's newest stored reading."""
        with self._guard("reading the latest reading"):
            row = self._conn.execute(
                f"SELECT {READING_COLUMNS} FROM readings WHERE sensor = ?"  # noqa: S608
                " ORDER BY time_ns DESC, id DESC LIMIT 1",
                (db_sensor(sensor),),
            ).fetchone()
        return None if row is None else stored_reading(row)

    def sensors_in_range(self, from_ns: int, to_ns: int) -> list[int]:
        """Sensors with readings or archived IO frames in ``[from_ns, to_ns)``."""
        with self._guard("listing sensors in a range"):
            rows = self._conn.execute(
                "SELECT DISTINCT sensor FROM readings"
                " WHERE time_ns >= ? AND time_ns < ?"
                " UNION SELECT DISTINCT sensor FROM frames WHERE time_ns >= ?"
                " AND time_ns < ? AND kind = 'io' AND sensor IS NOT NULL",
                (from_ns, to_ns, from_ns, to_ns),
            ).fetchall()
        return sorted(py_sensor(int(r[0])) for r in rows)

    def reading_summary(
        self, from_ns: int, to_ns: int, sensor: int
    ) -> tuple[int, float, float | None]:
        """Count, summed ``wh_delta`` and last ``wh_total`` of one sensor in range."""
        db = db_sensor(sensor)
        with self._guard("summarising readings"):
            count, wh = self._conn.execute(
                "SELECT count(*), coalesce(sum(wh_delta), 0) FROM readings"
                " WHERE sensor = ? AND time_ns >= ? AND time_ns < ?",
                (db, from_ns, to_ns),
            ).fetchone()
            last = self._conn.execute(
                "SELECT wh_total FROM readings WHERE sensor = ? AND time_ns >= ?"
                " AND time_ns < ? ORDER BY time_ns DESC, id DESC LIMIT 1",
                (db, from_ns, to_ns),
            ).fetchone()
        return (
            int(count),
            float(wh),
            None if last is None or last[0] is None else float(last[0]),
        )

    def count(
        self, table: Literal["readings", "frames", "rollup_1m", "rollup_1h"]
    ) -> int:
        """Rows in one table (a full scan: for tests and tools, not hot paths)."""
        if table not in {"readings", "frames", "rollup_1m", "rollup_1h"}:
            msg = f"unknown table {table!r}"
            raise ValueError(msg)
        with self._guard(f"counting {table}"):
            sql = f"SELECT count(*) FROM {table}"  # noqa: S608
            return int(self._conn.execute(sql).fetchone()[0])
