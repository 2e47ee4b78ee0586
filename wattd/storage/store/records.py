"""What the store hands out, and how readings and frames map to table rows.

Sensor addresses are unsigned 64-bit radio addresses, SQLite integers are
signed: :func:`db_sensor` and :func:`py_sensor` convert between the two. Non
finite numbers are stored as NULL.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Final

from wattd.storage.store.schema import ROLLUP_TABLES, Resolution
from wattd.storage.store.times import from_ns

if TYPE_CHECKING:
    from datetime import datetime

    from wattd.core.readings import FrameRecord, Reading

__all__ = [
    "READING_COLUMNS",
    "RetentionResult",
    "Rollup",
    "StoredFrame",
    "StoredReading",
    "db_sensor",
    "finite",
    "frame_row",
    "py_sensor",
    "reading_row",
    "rollup_from_row",
    "stored_frame",
    "stored_reading",
]

_U64: Final = 1 << 64
_I64_MAX: Final = (1 << 63) - 1

READING_COLUMNS: Final = (
    "sensor, time_ns, name, watts, va, vrms, irms, pf, wh_total, wh_delta,"
    " rssi_dbm, flags, sample_interval_ms, cycles, gap_s, zero_drift_counts, port,"
    " frame_hash"
)
"""Readings columns, in the order of :func:`reading_row` and :func:`stored_reading`."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StoredReading:
    """A reading as the store keeps it (no monotonic time, labels or prices)."""

    sensor: int
    name: str
    time_ns: int
    watts: float | None
    va: float | None
    vrms: float | None
    irms: float | None
    power_factor: float | None
    wh_total: float | None
    wh_delta: float
    rssi_dbm: int | None
    flags: frozenset[str]
    sample_interval_ms: float | None
    cycles: float | None
    gap_s: float | None
    zero_drift_counts: float | None
    port: str
    frame_hash: int | None = None
    """The frame's hash (:attr:`wattd.core.readings.Reading.frame_hash`); None
    for readings stored before the store kept it."""

    @property
    def time(self) -> datetime:
        """Arrival time (UTC)."""
        return from_ns(self.time_ns)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rollup:
    """One sensor's figures over one minute or hour bucket.

    ``wh`` is the energy consumed inside the bucket, including the share of
    readings that straddle its edges; ``n_readings`` counts readings whose time
    falls in it. The means are ``None`` for buckets that only received energy.
    """

    sensor: int
    resolution: Resolution
    start_ns: int
    n_readings: int
    watts_mean: float | None
    watts_min: float | None
    watts_max: float | None
    vrms_mean: float | None
    wh: float
    wh_total_last: float | None

    @property
    def start(self) -> datetime:
        """Bucket start (UTC)."""
        return from_ns(self.start_ns)

    @property
    def end_ns(self) -> int:
        """Bucket end (exclusive)."""
        return self.start_ns + ROLLUP_TABLES[self.resolution][1]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StoredFrame:
    """One archived frame: the exact wire bytes and how they arrived."""

    id: int
    time_ns: int
    port: str
    api_mode: int
    kind: str
    sensor: int | None
    raw: bytes

    @property
    def time(self) -> datetime:
        """Arrival time (UTC)."""
        return from_ns(self.time_ns)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetentionResult:
    """What one retention pass deleted; ``complete`` is False if rows remain due."""

    deleted: dict[str, int]
    complete: bool


def db_sensor(sensor: int) -> int:
    """A sensor address as SQLite stores it (signed 64-bit)."""
    return sensor - _U64 if sensor > _I64_MAX else sensor


def py_sensor(value: int) -> int:
    """A stored sensor column back as the radio's unsigned address."""
    return value + _U64 if value < 0 else value


def finite(value: float | None) -> float | None:
    """``value`` as a float, or None when it is missing, infinite or NaN."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def reading_row(r: Reading, time_ns: int | None = None) -> tuple[object, ...]:
    """The values of :data:`READING_COLUMNS` for one reading (``time_ns``: its own)."""
    return (
        db_sensor(r.sensor),
        r.time_ns if time_ns is None else time_ns,
        r.name,
        finite(r.watts),
        finite(r.va),
        finite(r.vrms),
        finite(r.irms),
        finite(r.power_factor),
        finite(r.wh_total),
        finite(r.wh_delta) or 0.0,
        r.rssi_dbm,
        ",".join(sorted(str(f) for f in r.flags)),
        finite(r.sample_interval_ms),
        finite(r.cycles),
        finite(r.gap_s),
        finite(r.current_zero_drift_counts),
        r.port,
        r.frame_hash,
    )


def stored_reading(row: tuple[Any, ...]) -> StoredReading:
    """A row of :data:`READING_COLUMNS` as a :class:`StoredReading`."""
    (sensor, time_ns, name, watts, va, vrms, irms, pf, wh_total, wh_delta, rssi,
     flags, interval, cycles, gap, drift, port, frame_hash) = row  # fmt: skip
    return StoredReading(
        sensor=py_sensor(int(sensor)),
        name=str(name),
        time_ns=int(time_ns),
        watts=watts,
        va=va,
        vrms=vrms,
        irms=irms,
        power_factor=pf,
        wh_total=wh_total,
        wh_delta=float(wh_delta),
        rssi_dbm=rssi,
        flags=frozenset(str(flags).split(",")) - {""},
        sample_interval_ms=interval,
        cycles=cycles,
        gap_s=gap,
        zero_drift_counts=drift,
        port=str(port),
        frame_hash=None if frame_hash is None else int(frame_hash),
    )


def frame_row(f: FrameRecord) -> tuple[object, ...]:
    """The values of a frames row (without its id) for one frame."""
    return (
        f.time_ns,
        f.port,
        int(f.api_mode),
        str(f.kind),
        None if f.sensor is None else db_sensor(f.sensor),
        bytes(f.raw),
    )


def stored_frame(row: tuple[Any, ...]) -> StoredFrame:
    """A frames row (id, time_ns, port, api_mode, kind, sensor, raw)."""
    fid, time_ns, port, api_mode, kind, sensor, raw = row
    return StoredFrame(
        id=int(fid),
        time_ns=int(time_ns),
        port=str(port),
        api_mode=int(api_mode),
        kind=str(kind),
        sensor=None if sensor is None else py_sensor(int(sensor)),
        raw=bytes(raw),
    )


def rollup_from_row(resolution: Resolution, row: tuple[Any, ...]) -> Rollup:
    """A rollup row (sensor, bucket_ns, n, sums, min, max, wh, last total)."""
    sensor, bucket, n, watts_sum, wmin, wmax, vrms_sum, wh, total = row
    count = int(n)
    return Rollup(
        sensor=py_sensor(int(sensor)),
        resolution=resolution,
        start_ns=int(bucket),
        n_readings=count,
        watts_mean=float(watts_sum) / count if count else None,
        watts_min=wmin,
        watts_max=wmax,
        vrms_mean=float(vrms_sum) / count if count else None,
        wh=float(wh),
        wh_total_last=total,
    )
