"""The embedded SQLite store: readings, minute/hour rollups and the raw frame archive.

One file in WAL mode, so ``wattd query`` and reports read while the daemon writes.
A :class:`Store` wraps one connection and must stay on the thread that opened
it; the SQLite sink gives it a dedicated thread.

The package, by job: :mod:`~wattd.storage.store.schema` (tables, versions,
upgrades), :mod:`~wattd.storage.store.records` (the values handed out and their
rows), :mod:`~wattd.storage.store.rollups` (how readings add up into buckets),
:mod:`~wattd.storage.store.writes`, :mod:`~wattd.storage.store.queries`,
:mod:`~wattd.storage.store.repair` (rewriting history for ``wattd reprocess``),
:mod:`~wattd.storage.store.retention`, and :mod:`~wattd.storage.store.handle`,
whose :class:`Store` joins them.

All times are integer nanoseconds since the Unix epoch (UTC); ranges are
half-open ``[from, to)`` (:mod:`~wattd.storage.store.times`).
"""

from __future__ import annotations

from wattd.storage.store.handle import Store
from wattd.storage.store.records import (
    RetentionResult,
    Rollup,
    StoredFrame,
    StoredReading,
)
from wattd.storage.store.retention import RETENTION_BATCH_ROWS
from wattd.storage.store.rollups import MAX_SPREAD_NS, split_energy
from wattd.storage.store.schema import (
    DEFAULT_BUSY_TIMEOUT_S,
    PAGE_CACHE_KIB,
    ROLLUP_TABLES,
    SCHEMA_VERSION,
    WRITER_HEARTBEAT_KEY,
    Resolution,
)
from wattd.storage.store.times import (
    DAY_NS,
    HOUR_NS,
    MINUTE_NS,
    NS_PER_S,
    ceil_ns,
    floor_ns,
    from_ns,
    to_ns,
)

__all__ = [
    "DAY_NS",
    "DEFAULT_BUSY_TIMEOUT_S",
    "HOUR_NS",
    "MAX_SPREAD_NS",
    "MINUTE_NS",
    "NS_PER_S",
    "PAGE_CACHE_KIB",
    "RETENTION_BATCH_ROWS",
    "ROLLUP_TABLES",
    "SCHEMA_VERSION",
    "WRITER_HEARTBEAT_KEY",
    "Resolution",
    "RetentionResult",
    "Rollup",
    "Store",
    "StoredFrame",
    "StoredReading",
    "ceil_ns",
    "floor_ns",
    "from_ns",
    "split_energy",
    "to_ns",
]
