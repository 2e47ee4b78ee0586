"""The store's tables, their versions and how a connection is set up.

``PRAGMA user_version`` holds the schema version. A writer upgrades an older
file in one transaction; a reader refuses one that is older or newer than this
wattd, so it never reads tables it does not understand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

from wattd.errors import StoreError
from wattd.storage.store.times import HOUR_NS, MINUTE_NS

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "PAGE_CACHE_KIB",
    "ROLLUP_TABLES",
    "SCHEMA_VERSION",
    "WRITER_HEARTBEAT_KEY",
    "Resolution",
    "configure",
    "migrate",
]

DEFAULT_BUSY_TIMEOUT_S: Final = 5.0
PAGE_CACHE_KIB: Final = 128
"""SQLite page cache per connection (its default is 2 MiB). Writes touch a few
hundred pages per batch and reads go through the OS page cache anyway, so a
bigger cache buys little and stays resident in the daemon."""
WRITER_HEARTBEAT_KEY: Final = "writer_heartbeat_ns"
"""Meta key a writing daemon refreshes (wall-clock ns) and clears when it stops."""

Resolution = Literal["1m", "1h"]
ROLLUP_TABLES: Final[dict[str, tuple[str, int]]] = {
    "1m": ("rollup_1m", MINUTE_NS),
    "1h": ("rollup_1h", HOUR_NS),
}

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
    # 2: each reading keeps its frame hash, so backfill can send it again. NULL
    # for readings written before (and for those without a frame).
    ("ALTER TABLE readings ADD COLUMN frame_hash INTEGER",),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
_OUR_TABLES: Final = frozenset(
    {"readings", "rollup_1m", "rollup_1h", "frames", "sensors", "meta"}
)


def configure(conn: sqlite3.Connection, path: Path, *, readonly: bool) -> int:
    """Set up a new connection; returns the file's schema version.

    A writer's connection is put in WAL mode. The caller then runs
    :func:`migrate` in a write transaction when the version is older.

    Raises:
        StoreError: the file is newer than this wattd, a reader found it older,
            or SQLite refused WAL mode.
    """
    conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB:d}")
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: the store has schema version {version}, newer than"
            f" this wattd understands ({SCHEMA_VERSION}); upgrade wattd"
        )
    if readonly:
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{path}: the store has schema version {version}; start the"
                f" daemon once to upgrade it to {SCHEMA_VERSION}"
            )
        return version
    mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
    if mode != "wal":
        raise StoreError(
            f"{path}: SQLite refused WAL mode (journal_mode={mode}); put the"
            " store on a local file system, not a network share"
        )
    conn.execute("PRAGMA synchronous=NORMAL")
    return version


def migrate(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Upgrade the file from ``version`` to :data:`SCHEMA_VERSION`.

    Run it inside a write transaction, so the upgrade is all or nothing.

    Raises:
        StoreError: an empty-versioned file holds tables that are not ours.
    """
    if version == 0:
        foreign = {
            str(row[0])
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%'"
            )
        } - _OUR_TABLES
        if foreign:
            raise StoreError(
                f"{path}: this SQLite file is not a wattd store (it has"
                f" tables {', '.join(sorted(foreign))}); point store.path at"
                " another file"
            )
    for step in range(version, SCHEMA_VERSION):
        for statement in _MIGRATIONS[step]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
