"""Writing readings and frames: one transaction per batch, rollups kept in step.

Inserts update the rollup buckets incrementally (upserts), so the minute and
hour figures are current as soon as a batch commits. Each reading's energy is
spread back to the sensor's previous stored reading; the latest time per sensor
is cached so a batch in time order needs no lookups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from wattd.storage.store.base import StoreBase
from wattd.storage.store.records import (
    READING_COLUMNS,
    db_sensor,
    finite,
    frame_row,
    reading_row,
)
from wattd.storage.store.rollups import (
    RollupAccumulator,
    previous_reading_ns,
    write_rollups,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wattd.core.readings import FrameRecord, Reading

__all__ = ["StoreWrites"]

_INSERT_READING: Final = (
    f"INSERT INTO readings ({READING_COLUMNS})"  # noqa: S608 - constant columns
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_FRAME: Final = (
    "INSERT INTO frames (time_ns, port, api_mode, kind, sensor, raw)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_SENSOR: Final = """INSERT INTO sensors (sensor, name, last_time_ns, wh_total)
VALUES (?, ?, ?, ?)
ON CONFLICT (sensor) DO UPDATE SET
    name = CASE WHEN excluded.last_time_ns >= last_time_ns
                THEN excluded.name ELSE name END,
    wh_total = CASE WHEN excluded.last_time_ns >= last_time_ns
                    THEN excluded.wh_total ELSE wh_total END,
    last_time_ns = max(last_time_ns, excluded.last_time_ns)"""


class StoreWrites(StoreBase):
    """The store's writes of new readings and frames."""

    def add(
        self, readings: Sequence[Reading] = (), frames: Sequence[FrameRecord] = ()
    ) -> None:
        """Write readings and frames in one transaction, updating the rollups."""
        if not readings and not frames:
            return
        with self._guard("writing readings and frames"), self.transaction():
            self.insert_readings(readings)
            self.insert_frames(frames)

    def insert_readings(
        self, readings: Sequence[Reading], *, update_rollups: bool = True
    ) -> None:
        """Insert readings (arrival order); rollups follow unless told not to."""
        if not readings:
            return
        with self._guard("writing readings"), self.transaction():
            conn = self._conn
            # Worked out once: each reading's time is needed four times below.
            times = [r.time_ns for r in readings]
            conn.executemany(
                _INSERT_READING,
                [reading_row(r, t) for r, t in zip(readings, times, strict=True)],
            )
            latest: dict[int, tuple[Reading, int]] = {}
            for r, t in zip(readings, times, strict=True):
                best = latest.get(r.sensor)
                if best is None or t >= best[1]:
                    latest[r.sensor] = (r, t)
            conn.executemany(
                _UPSERT_SENSOR,
                [
                    (db_sensor(s), r.name, t, finite(r.wh_total))
                    for s, (r, t) in latest.items()
                ],
            )
            if not update_rollups:
                self._last_ns.clear()
                return
            acc = RollupAccumulator()
            for r, t in zip(readings, times, strict=True):
                cached = self._last_ns.get(r.sensor)
                prev = (
                    cached
                    if cached is not None and t >= cached
                    else previous_reading_ns(conn, r.sensor, t)
                )
                acc.add(
                    r.sensor,
                    t,
                    prev,
                    watts=finite(r.watts),
                    vrms=finite(r.vrms),
                    wh_delta=finite(r.wh_delta) or 0.0,
                    wh_total=finite(r.wh_total),
                )
                self._last_ns[r.sensor] = max(t, cached if cached is not None else t)
            write_rollups(conn, acc)

    def insert_frames(self, frames: Sequence[FrameRecord]) -> None:
        """Append raw frames to the archive."""
        if not frames:
            return
        with self._guard("archiving frames"), self.transaction():
            self._conn.executemany(_INSERT_FRAME, [frame_row(f) for f in frames])

    def set_last_total(self, sensor: int, time_ns: int, wh_total: float) -> None:
        """Record a sensor's latest known total when it is newer than the stored one."""
        with self._guard("recording a total"), self.transaction():
            self._conn.execute(
                _UPSERT_SENSOR, (db_sensor(sensor), "", time_ns, wh_total)
            )
