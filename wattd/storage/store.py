"""The embedded SQLite store: readings, minute/hour rollups and the raw frame archive.

One file in WAL mode, so ``wattd query`` and reports read while the daemon writes.
A :class:`Store` wraps one connection and must stay on the thread that opened
it; the SQLite sink gives it a dedicated thread.

Rollup strategy. Each reading adds to the bucket its time falls in (count,
watts sum/min/max, vrms sum, last ``wh_total``). Its ``wh_delta`` is the energy
since the previous reading of the same sensor, so it is spread linearly in time
over ``(previous, this]`` and split exactly at bucket edges; the pieces always
add up to ``wh_delta``. Inserts update the buckets incrementally (upserts);
:meth:`Store.rebuild_rollups` recomputes whole hours from the readings and gives
the same result when readings arrived in time order.

All times are integer nanoseconds since the Unix epoch (UTC); ranges are
half-open ``[from, to)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote

from wattd.errors import StoreCorrupt, StoreError, StoreLocked
from wattd.storage.files import private_file

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from wattd.config import StoreConfig
    from wattd.core.readings import FrameRecord, Reading

__all__ = [
    "HOUR_NS",
    "MINUTE_NS",
    "SCHEMA_VERSION",
    "WRITER_HEARTBEAT_KEY",
    "Resolution",
    "RetentionResult",
    "Rollup",
    "Store",
    "StoredFrame",
    "StoredReading",
    "from_ns",
    "split_energy",
    "to_ns",
]

NS_PER_S: Final = 1_000_000_000
MINUTE_NS: Final = 60 * NS_PER_S
HOUR_NS: Final = 3600 * NS_PER_S
DAY_NS: Final = 86_400 * NS_PER_S

# energy.max_gap_s is at most an hour, so no reading's wh_delta honestly covers
# more. A longer distance to the previous stored reading means readings were
# lost in between; the energy is then spread over the last hour only instead of
# being smeared across days of buckets.
MAX_SPREAD_NS: Final = HOUR_NS

DEFAULT_BUSY_TIMEOUT_S: Final = 5.0
PAGE_CACHE_KIB: Final = 128
"""SQLite page cache per connection (its default is 2 MiB). Writes touch a few
hundred pages per batch and reads go through the OS page cache anyway, so a
bigger cache buys little and stays resident in the daemon."""
WRITER_HEARTBEAT_KEY: Final = "writer_heartbeat_ns"
"""Meta key a writing daemon refreshes (wall-clock ns) and clears when it stops."""
# Small delete batches keep the write lock short, so the daemon's flushes and
# readers never wait long behind a retention pass.
RETENTION_BATCH_ROWS: Final = 5000

Resolution = Literal["1m", "1h"]
ROLLUP_TABLES: Final[dict[str, tuple[str, int]]] = {
    "1m": ("rollup_1m", MINUTE_NS),
    "1h": ("rollup_1h", HOUR_NS),
}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_U64: Final = 1 << 64
_I64_MAX: Final = (1 << 63) - 1

_ROLLUP_DDL: Final = """CREATE TABLE {t} (
    sensor INTEGER NOT NULL,
    bucket_ns INTEGER NOT NULL,
    n INTEGER NOT NULL DEFAULT 0,
    watts_sum REAL NOT NULL DEFAULT 0,
    watts_min REAL,
    watts_max REAL,
    vrms_sum REAL NOT NULL DEFAULT 0,
    wh REAL NOT NULL DEFAULT 0,
    last_time_ns INTEGER,
    wh_total_last REAL,
    PRIMARY KEY (sensor, bucket_ns)
)"""

# One tuple of statements per schema version; entry i upgrades user_version i to
# i + 1. Never edit a released entry: append a new one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE readings (
            id INTEGER PRIMARY KEY,
            sensor INTEGER NOT NULL,
            time_ns INTEGER NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            watts REAL,
            va REAL,
            vrms REAL,
            irms REAL,
            pf REAL,
            wh_total REAL,
            wh_delta REAL NOT NULL DEFAULT 0,
            rssi_dbm INTEGER,
            flags TEXT NOT NULL DEFAULT '',
            sample_interval_ms REAL,
            cycles REAL,
            gap_s REAL,
            zero_drift_counts REAL,
            port TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX readings_sensor_time ON readings (sensor, time_ns)",
        "CREATE INDEX readings_time ON readings (time_ns)",
        _ROLLUP_DDL.format(t="rollup_1m"),
        "CREATE INDEX rollup_1m_bucket ON rollup_1m (bucket_ns)",
        _ROLLUP_DDL.format(t="rollup_1h"),
        "CREATE INDEX rollup_1h_bucket ON rollup_1h (bucket_ns)",
        """CREATE TABLE frames (
            id INTEGER PRIMARY KEY,
            time_ns INTEGER NOT NULL,
            port TEXT NOT NULL DEFAULT '',
            api_mode INTEGER NOT NULL,
            kind TEXT NOT NULL,
            sensor INTEGER,
            raw BLOB NOT NULL
        )""",
        "CREATE INDEX frames_time ON frames (time_ns)",
        """CREATE TABLE sensors (
            sensor INTEGER PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            last_time_ns INTEGER NOT NULL,
            wh_total REAL
        )""",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER)",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
_OUR_TABLES: Final = frozenset(
    {"readings", "rollup_1m", "rollup_1h", "frames", "sensors", "meta"}
)

_READING_COLUMNS: Final = (
    "sensor, time_ns, name, watts, va, vrms, irms, pf, wh_total, wh_delta,"
    " rssi_dbm, flags, sample_interval_ms, cycles, gap_s, zero_drift_counts, port"
)
_INSERT_READING: Final = (
    f"INSERT INTO readings ({_READING_COLUMNS})"  # noqa: S608 - constant columns
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_FRAME: Final = (
    "INSERT INTO frames (time_ns, port, api_mode, kind, sensor, raw)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
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
_UPSERT_SENSOR: Final = """INSERT INTO sensors (sensor, name, last_time_ns, wh_total)
VALUES (?, ?, ?, ?)
ON CONFLICT (sensor) DO UPDATE SET
    name = CASE WHEN excluded.last_time_ns >= last_time_ns
                THEN excluded.name ELSE name END,
    wh_total = CASE WHEN excluded.last_time_ns >= last_time_ns
                    THEN excluded.wh_total ELSE wh_total END,
    last_time_ns = max(last_time_ns, excluded.last_time_ns)"""

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_PERM: Final = 3
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_READONLY: Final = 8
_SQLITE_IOERR: Final = 10
_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_CANTOPEN: Final = 14
_SQLITE_NOTADB: Final = 26


# -- values ------------------------------------------------------------------


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


# -- helpers -----------------------------------------------------------------


def to_ns(moment: datetime) -> int:
    """An aware datetime as integer nanoseconds since the Unix epoch."""
    if moment.tzinfo is None:
        msg = f"naive datetime {moment.isoformat()} has no time zone; pass an aware one"
        raise ValueError(msg)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


def from_ns(time_ns: int) -> datetime:
    """Nanoseconds since the Unix epoch as a UTC datetime (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=time_ns // 1000)


def floor_ns(time_ns: int, size_ns: int) -> int:
    """Start of the bucket of ``size_ns`` that holds ``time_ns``."""
    return time_ns - time_ns % size_ns


def ceil_ns(time_ns: int, size_ns: int) -> int:
    """Smallest bucket boundary at or after ``time_ns``."""
    return -floor_ns(-time_ns, size_ns)


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


def _db_sensor(sensor: int) -> int:
    # SQLite integers are signed 64-bit; 64-bit radio addresses are not.
    return sensor - _U64 if sensor > _I64_MAX else sensor


def _py_sensor(value: int) -> int:
    return value + _U64 if value < 0 else value


def _num(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _reading_row(r: Reading) -> tuple[object, ...]:
    return (
        _db_sensor(r.sensor),
        r.time_ns,
        r.name,
        _num(r.watts),
        _num(r.va),
        _num(r.vrms),
        _num(r.irms),
        _num(r.power_factor),
        _num(r.wh_total),
        _num(r.wh_delta) or 0.0,
        r.rssi_dbm,
        ",".join(sorted(str(f) for f in r.flags)),
        _num(r.sample_interval_ms),
        _num(r.cycles),
        _num(r.gap_s),
        _num(r.current_zero_drift_counts),
        r.port,
    )


def _stored_reading(row: tuple[Any, ...]) -> StoredReading:
    (sensor, time_ns, name, watts, va, vrms, irms, pf, wh_total, wh_delta, rssi,
     flags, interval, cycles, gap, drift, port) = row  # fmt: skip
    return StoredReading(
        sensor=_py_sensor(int(sensor)),
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
    )


def _translate(
    exc: sqlite3.Error, path: Path, action: str, busy_timeout_s: float
) -> StoreError:
    """Turn an sqlite3 exception into a StoreError that says what to do."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary in {_SQLITE_BUSY, _SQLITE_LOCKED} or "locked" in text:
        return StoreLocked(
            f"{path}: the store stayed locked for {busy_timeout_s:g} s while"
            f" {action}; another process (a second wattd, a reprocess run, or a"
            " sqlite3 shell inside a transaction) is writing to it. Stop that"
            " process or wait, then retry"
        )
    damaged = "malformed" in text or "not a database" in text
    if primary in {_SQLITE_CORRUPT, _SQLITE_NOTADB} or damaged:
        return StoreCorrupt(
            f"{path}: the store file is corrupt ({text}) while {action}. Move it"
            f" aside (the daemon does this itself when it starts) or salvage it"
            f" with `sqlite3 {path} .recover`"
        )
    if primary in {_SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_READONLY}:
        return StoreError(
            f"{path}: cannot open or write the store ({text}) while {action};"
            " check that the file and its directory exist and belong to the"
            " wattd user, or set store.path"
        )
    if primary in {_SQLITE_FULL, _SQLITE_IOERR}:
        return StoreError(
            f"{path}: disk error ({text}) while {action}; free space on the"
            " state directory's file system or lower the store retention"
        )
    return StoreError(f"{path}: SQLite failed while {action}: {text}")


# -- rollup accumulation -----------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Agg:
    n: int = 0
    watts_sum: float = 0.0
    watts_min: float | None = None
    watts_max: float | None = None
    vrms_sum: float = 0.0
    wh: float = 0.0
    last_time_ns: int | None = None
    wh_total_last: float | None = None


class _Rollups:
    """Contributions of readings to rollup buckets, optionally clipped to a range."""

    def __init__(self, lo_ns: int | None = None, hi_ns: int | None = None) -> None:
        self.lo_ns = lo_ns
        self.hi_ns = hi_ns
        self.buckets: dict[tuple[str, int, int], _Agg] = {}

    def _keeps(self, bucket_ns: int) -> bool:
        return (self.lo_ns is None or bucket_ns >= self.lo_ns) and (
            self.hi_ns is None or bucket_ns < self.hi_ns
        )

    def _agg(self, table: str, sensor: int, bucket_ns: int) -> _Agg:
        key = (table, sensor, bucket_ns)
        agg = self.buckets.get(key)
        if agg is None:
            agg = self.buckets[key] = _Agg()
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
        for table, size in ROLLUP_TABLES.values():
            bucket = floor_ns(time_ns, size)
            if self._keeps(bucket):
                agg = self._agg(table, sensor, bucket)
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
                    self._agg(table, sensor, bucket).wh += wh

    def rows(self, table: str) -> list[tuple[object, ...]]:
        return [
            (
                _db_sensor(sensor),
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


# -- the store ---------------------------------------------------------------


class Store:
    """One connection to the SQLite store. Not thread-safe: one thread per Store."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        readonly: bool,
        busy_timeout_s: float,
    ) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self.busy_timeout_s = busy_timeout_s
        self._depth = 0
        self._last_ns: dict[int, int] = {}

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        readonly: bool = False,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> Store:
        """Open (and create or upgrade, unless ``readonly``) the store at ``path``.

        Raises:
            StoreError: the file cannot be opened, is corrupt (:class:`StoreCorrupt`),
                is locked (:class:`StoreLocked`) or is not a wattd store.
        """
        p = Path(path)
        if readonly:
            if not p.exists():
                raise StoreError(
                    f"{p}: no store here yet; the daemon creates it on its first run"
                    " (store.enabled: true). Check --config or store.path"
                )
            target = f"file:{quote(str(p.resolve()))}?mode=ro"
        else:
            try:
                # Private from the start: SQLite gives -wal and -shm this mode.
                private_file(p)
            except OSError as exc:
                raise StoreError(
                    f"{exc.filename or p}: cannot create it ({exc.strerror}); create"
                    " the state directory for the wattd user or set store.path"
                ) from None
            target = str(p)
        try:
            conn = sqlite3.connect(
                target, timeout=busy_timeout_s, isolation_level=None, uri=readonly
            )
        except sqlite3.Error as exc:
            raise _translate(exc, p, "opening the store", busy_timeout_s) from None
        store = cls(conn, p, readonly=readonly, busy_timeout_s=busy_timeout_s)
        try:
            with store._guard("opening the store"):
                store._setup()
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        """Close the connection (uncommitted work is rolled back)."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB:d}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: the store has schema version {version}, newer than"
                f" this wattd understands ({SCHEMA_VERSION}); upgrade wattd"
            )
        if self.readonly:
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: the store has schema version {version}; start the"
                    f" daemon once to upgrade it to {SCHEMA_VERSION}"
                )
            return
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        if mode != "wal":
            raise StoreError(
                f"{self.path}: SQLite refused WAL mode (journal_mode={mode}); put the"
                " store on a local file system, not a network share"
            )
        conn.execute("PRAGMA synchronous=NORMAL")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        with self.transaction():
            if version == 0:
                foreign = {
                    str(row[0])
                    for row in self._conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                        " AND name NOT LIKE 'sqlite_%'"
                    )
                } - _OUR_TABLES
                if foreign:
                    raise StoreError(
                        f"{self.path}: this SQLite file is not a wattd store (it has"
                        f" tables {', '.join(sorted(foreign))}); point store.path at"
                        " another file"
                    )
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode for this file (``wal`` once opened read-write)."""
        with self._guard("reading the journal mode"):
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def checkpoint(self) -> None:
        """Fold the WAL back into the main file and truncate it (best at shutdown)."""
        with self._guard("checkpointing the WAL"):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- transactions ----------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, dry_run: bool = False) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``); nested use joins the outer one.

        With ``dry_run`` everything done inside is rolled back at the end.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._guard("starting a write transaction"):
            self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            if dry_run:
                self._rollback()
            else:
                with self._guard("committing"):
                    self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        # Anything cached about stored readings may describe rolled-back rows.
        self._last_ns.clear()

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, action, self.busy_timeout_s) from exc

    # -- writing ---------------------------------------------------------------

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
            conn.executemany(_INSERT_READING, [_reading_row(r) for r in readings])
            latest: dict[int, Reading] = {}
            for r in readings:
                best = latest.get(r.sensor)
                if best is None or r.time_ns >= best.time_ns:
                    latest[r.sensor] = r
            conn.executemany(
                _UPSERT_SENSOR,
                [
                    (_db_sensor(s), r.name, r.time_ns, _num(r.wh_total))
                    for s, r in latest.items()
                ],
            )
            if not update_rollups:
                self._last_ns.clear()
                return
            acc = _Rollups()
            for r in readings:
                t = r.time_ns
                cached = self._last_ns.get(r.sensor)
                prev = (
                    cached
                    if cached is not None and t >= cached
                    else self._previous_ns(r.sensor, t)
                )
                acc.add(
                    r.sensor,
                    t,
                    prev,
                    watts=_num(r.watts),
                    vrms=_num(r.vrms),
                    wh_delta=_num(r.wh_delta) or 0.0,
                    wh_total=_num(r.wh_total),
                )
                self._last_ns[r.sensor] = max(t, cached if cached is not None else t)
            self._write_rollups(acc)

    def insert_frames(self, frames: Sequence[FrameRecord]) -> None:
        """Append raw frames to the archive."""
        if not frames:
            return
        with self._guard("archiving frames"), self.transaction():
            self._conn.executemany(
                _INSERT_FRAME,
                [
                    (
                        f.time_ns,
                        f.port,
                        int(f.api_mode),
                        str(f.kind),
                        None if f.sensor is None else _db_sensor(f.sensor),
                        bytes(f.raw),
                    )
                    for f in frames
                ],
            )

    def _write_rollups(self, acc: _Rollups) -> None:
        for table, _size in ROLLUP_TABLES.values():
            rows = acc.rows(table)
            if rows:
                self._conn.executemany(_UPSERT_ROLLUP.format(t=table), rows)

    def _previous_ns(self, sensor: int, time_ns: int) -> int | None:
        """Time of the sensor's last stored reading before ``time_ns``.

        Falls back to the rollups' last reading times when the readings have
        already been deleted by retention.
        """
        db = _db_sensor(sensor)
        row = self._conn.execute(
            "SELECT max(time_ns) FROM readings WHERE sensor = ? AND time_ns < ?",
            (db, time_ns),
        ).fetchone()
        if row[0] is not None:
            return int(row[0])
        best: int | None = None
        for table, _size in ROLLUP_TABLES.values():
            found = self._conn.execute(
                f"SELECT last_time_ns FROM {table} WHERE sensor = ? AND bucket_ns <= ?"  # noqa: S608
                " AND last_time_ns < ? ORDER BY bucket_ns DESC LIMIT 1",
                (db, time_ns, time_ns),
            ).fetchone()
            if found is not None and (best is None or int(found[0]) > best):
                best = int(found[0])
        return best

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
        db = _db_sensor(sensor)
        for table, _size in ROLLUP_TABLES.values():
            self._conn.execute(
                f"DELETE FROM {table} WHERE sensor = ? AND bucket_ns >= ?"  # noqa: S608
                " AND bucket_ns < ?",
                (db, start, end),
            )
        acc = _Rollups(start, end)
        prev = self._previous_ns(sensor, start)
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
        self._write_rollups(acc)

    def _sensors_between(self, start: int, end: int) -> list[int]:
        found: set[int] = set()
        for table, column in (
            ("readings", "time_ns"),
            ("rollup_1m", "bucket_ns"),
            ("rollup_1h", "bucket_ns"),
        ):
            found.update(
                _py_sensor(int(row[0]))
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
            prev = self._previous_ns(sensor, edge_ns)
            acc = _Rollups(hi_ns=edge_ns)
            if old is not None:
                acc.add_energy(sensor, old[0], prev, -old[1])
            if new is not None:
                acc.add_energy(sensor, new[0], prev, new[1])
            self._write_rollups(acc)

    def first_reading(
        self, sensor: int, from_ns: int, to_ns: int
    ) -> StoredReading | None:
        """The sensor's first reading in ``[from_ns, to_ns)``."""
        with self._guard("reading the first reading of a range"):
            row = self._conn.execute(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE sensor = ?"  # noqa: S608
                " AND time_ns >= ? AND time_ns < ? ORDER BY time_ns, id LIMIT 1",
                (_db_sensor(sensor), from_ns, to_ns),
            ).fetchone()
        return None if row is None else _stored_reading(row)

    def delete_readings(self, from_ns: int, to_ns: int, sensor: int) -> int:
        """Delete one sensor's readings in ``[from_ns, to_ns)``, not its rollups."""
        with self._guard("deleting readings"), self.transaction():
            cur = self._conn.execute(
                "DELETE FROM readings"
                " WHERE sensor = ? AND time_ns >= ? AND time_ns < ?",
                (_db_sensor(sensor), from_ns, to_ns),
            )
            self._last_ns.clear()
            return cur.rowcount

    def shift_totals(self, sensor: int, from_ns: int, wh: float) -> int:
        """Add ``wh`` to the sensor's stored ``wh_total`` from ``from_ns`` on.

        Readings at or after ``from_ns``, rollup buckets starting at or after it,
        and the sensor's last known total move together. Returns the number of
        readings changed.
        """
        db = _db_sensor(sensor)
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
                (_db_sensor(sensor), name, time_ns, wh_total),
            )

    def set_last_total(self, sensor: int, time_ns: int, wh_total: float) -> None:
        """Record a sensor's latest known total when it is newer than the stored one."""
        with self._guard("recording a total"), self.transaction():
            self._conn.execute(
                _UPSERT_SENSOR, (_db_sensor(sensor), "", time_ns, wh_total)
            )

    # -- retention -------------------------------------------------------------

    def apply_retention(
        self,
        config: StoreConfig,
        *,
        now_ns: int,
        batch_rows: int = RETENTION_BATCH_ROWS,
        max_batches: int | None = None,
    ) -> RetentionResult:
        """Delete rows older than each table's retention, in small transactions.

        ``max_batches`` bounds the work of one call; ``complete`` tells whether
        anything due is left for the next call. A retention of 0 days keeps all.
        """
        plan = (
            ("readings", config.readings_retention_days, "time_ns", 0),
            ("frames", config.frames_retention_days, "time_ns", 0),
            ("rollup_1m", config.rollup_1m_retention_days, "bucket_ns", MINUTE_NS),
            ("rollup_1h", config.rollup_1h_retention_days, "bucket_ns", HOUR_NS),
        )
        deleted: dict[str, int] = {}
        budget = max_batches
        complete = True
        for table, days, column, size in plan:
            if days <= 0:
                continue
            cutoff = now_ns - round(days * DAY_NS)
            if size:
                # A bucket goes only once all of it is older than the cutoff.
                cutoff = cutoff - size + 1
            deleted[table] = 0
            while True:
                if budget is not None and budget <= 0:
                    complete = False
                    break
                n = self._retention_batch(table, column, cutoff, batch_rows)
                deleted[table] += n
                if budget is not None:
                    budget -= 1
                if n < batch_rows:
                    break
        return RetentionResult(deleted=deleted, complete=complete)

    def _retention_batch(self, table: str, column: str, cutoff: int, rows: int) -> int:
        with self._guard(f"applying retention to {table}"), self.transaction():
            cur = self._conn.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"  # noqa: S608
                f" WHERE {column} < ? ORDER BY {column} LIMIT ?) RETURNING {column}",
                (cutoff, rows),
            )
            times = [int(row[0]) for row in cur.fetchall()]
            done = len(times) < rows
            if table in {"readings", "frames"} and (times or done):
                mark = cutoff if done else max(times) + 1
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = max(value, excluded.value)",
                    (f"purged_before_ns.{table}", mark),
                )
            if table == "readings" and times:
                self._last_ns.clear()
            return len(times)

    def purged_before_ns(self, table: Literal["readings", "frames"]) -> int | None:
        """Rows of ``table`` before this time have been deleted by retention."""
        return self.meta(f"purged_before_ns.{table}")

    # -- metadata --------------------------------------------------------------

    def meta(self, key: str) -> int | None:
        """An integer from the store's key/value table."""
        with self._guard("reading metadata"):
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def set_meta(self, key: str, value: int | None) -> None:
        """Set (or with ``None`` remove) an integer in the key/value table."""
        with self._guard("writing metadata"), self.transaction():
            if value is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    # -- reading ---------------------------------------------------------------

    def known_sensors(self) -> dict[int, str]:
        """Every sensor ever stored, with the name of its latest reading."""
        with self._guard("listing sensors"):
            return {
                _py_sensor(int(s)): str(n)
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
                _py_sensor(int(s)): float(wh)
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
                (_db_sensor(sensor),),
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), None if row[1] is None else float(row[1])

    def last_before(self, sensor: int, time_ns: int) -> tuple[int, float] | None:
        """``(time_ns, wh_total)`` of the sensor's last reading before ``time_ns``.

        Uses the rollups' last totals when the readings are gone.
        """
        db = _db_sensor(sensor)
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
                    f"SELECT {_READING_COLUMNS} FROM readings WHERE sensor = ?"  # noqa: S608
                    " ORDER BY time_ns DESC, id DESC LIMIT ?",
                    (_db_sensor(sensor), limit_per_sensor),
                ).fetchall()
                out.extend(_stored_reading(row) for row in reversed(rows))
        return out

    def iter_readings(
        self, from_ns: int, to_ns: int, sensors: Iterable[int] | None = None
    ) -> Iterator[StoredReading]:
        """Readings in ``[from_ns, to_ns)``, by sensor then time, streamed."""
        chosen = sorted(set(sensors)) if sensors is not None else None
        with self._guard("reading readings"):
            if chosen is None:
                cursor = self._conn.execute(
                    f"SELECT {_READING_COLUMNS} FROM readings"  # noqa: S608
                    " WHERE time_ns >= ? AND time_ns < ? ORDER BY sensor, time_ns, id",
                    (from_ns, to_ns),
                )
                for row in cursor:
                    yield _stored_reading(row)
                return
            for sensor in chosen:
                cursor = self._conn.execute(
                    f"SELECT {_READING_COLUMNS} FROM readings WHERE sensor = ?"  # noqa: S608
                    " AND time_ns >= ? AND time_ns < ? ORDER BY time_ns, id",
                    (_db_sensor(sensor), from_ns, to_ns),
                )
                for row in cursor:
                    yield _stored_reading(row)

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
            chosen = sorted({_db_sensor(s) for s in sensors})
            where += f" AND sensor IN ({', '.join('?' * len(chosen))})"
            params.extend(chosen)
        with self._guard(f"reading {resolution} rollups"):
            rows = self._conn.execute(
                f"SELECT sensor, bucket_ns, n, watts_sum, watts_min, watts_max,"  # noqa: S608
                f" vrms_sum, wh, wh_total_last FROM {table} WHERE {where}"
                " ORDER BY sensor, bucket_ns",
                params,
            ).fetchall()
        return [_rollup(resolution, row) for row in rows]

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
                    (_db_sensor(sensor), limit_per_sensor),
                ).fetchall()
                out.extend(_rollup(resolution, row) for row in reversed(rows))
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
            chosen = sorted({_db_sensor(s) for s in sensors})
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
            for fid, time_ns, port, api_mode, kind, sensor, raw in cursor:
                yield StoredFrame(
                    id=int(fid),
                    time_ns=int(time_ns),
                    port=str(port),
                    api_mode=int(api_mode),
                    kind=str(kind),
                    sensor=None if sensor is None else _py_sensor(int(sensor)),
                    raw=bytes(raw),
                )

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

    def latest_reading(self, sensor: int) -> StoredReading | None:
        """The sensor's newest stored reading."""
        with self._guard("reading the latest reading"):
            row = self._conn.execute(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE sensor = ?"  # noqa: S608
                " ORDER BY time_ns DESC, id DESC LIMIT 1",
                (_db_sensor(sensor),),
            ).fetchone()
        return None if row is None else _stored_reading(row)

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
        return sorted(_py_sensor(int(r[0])) for r in rows)

    def reading_summary(
        self, from_ns: int, to_ns: int, sensor: int
    ) -> tuple[int, float, float | None]:
        """Count, summed ``wh_delta`` and last ``wh_total`` of one sensor in range."""
        db = _db_sensor(sensor)
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


def _rollup(resolution: Resolution, row: tuple[Any, ...]) -> Rollup:
    sensor, bucket, n, watts_sum, wmin, wmax, vrms_sum, wh, total = row
    count = int(n)
    return Rollup(
        sensor=_py_sensor(int(sensor)),
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
