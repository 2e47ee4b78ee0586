"""The spool's data: its tables, the values it hands out and its fixed limits.

One file holds several named streams, one per consumer. Each stream keeps its
depth and lifetime counters in the ``streams`` table, updated in the same
transaction as the items, so ``appended = depth + acked + dropped +
dead_lettered`` holds after any crash. The ``energy`` table keeps the highest
energy total per sensor whose payload was ever spooled. The ``gaps`` table
(:mod:`~wattd.storage.spool.gaps`) notes what was dropped or dead-lettered; it
is created in older files when the daemon opens them, and is not required
(``TABLES``), so an older file stays a spool.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

__all__ = [
    "BUSY_TIMEOUT_S",
    "PAGE_CACHE_KIB",
    "ROW_OVERHEAD_BYTES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STREAM_NAME",
    "TABLES",
    "DeadLetter",
    "DeadLetterOutcome",
    "SpoolItem",
    "StreamStats",
]

SCHEMA_VERSION: Final = 1
ROW_OVERHEAD_BYTES: Final = 32
"""Counted per item on top of its payload: rowid, stream, time, record header and
index entry, so that a flood of tiny payloads still hits ``max_bytes``."""
BUSY_TIMEOUT_S: Final = 10.0
"""Another process (an inspection command) may hold the write lock briefly."""
PAGE_CACHE_KIB: Final = 128
"""SQLite page cache (its default is 2 MiB): the spool's working set is the
head and tail of one table and the OS page cache holds the rest; more cache
would only stay resident."""
STREAM_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TABLES: Final = frozenset({"streams", "items", "dead_letters"})
"""The tables a file must have to be taken for a spool."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    depth INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    appended INTEGER NOT NULL DEFAULT 0,
    acked INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_stream ON items(stream);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    failed_at_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_stream ON dead_letters(stream);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream INTEGER NOT NULL,
    meter INTEGER,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    points INTEGER NOT NULL,
    cause TEXT NOT NULL,
    noted_at_ns INTEGER NOT NULL,
    closed_at_ns INTEGER
);
CREATE INDEX IF NOT EXISTS gaps_open ON gaps(stream, closed_at_ns);
CREATE TABLE IF NOT EXISTS energy (
    sensor TEXT PRIMARY KEY,
    wh_total REAL NOT NULL
);
"""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SpoolItem:
    """One queued payload. ``id`` grows with every append and is never reused."""

    id: int
    time_ns: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A payload the server refused, with the server's reason."""

    id: int
    stream: str
    time_ns: int
    payload: bytes
    reason: str
    failed_at_ns: int
    """Wall-clock time the payload was given up on (ns since the epoch)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StreamStats:
    """Depth and lifetime counters of one stream (counters survive restarts)."""

    depth: int = 0
    bytes: int = 0
    oldest_time_ns: int | None = None
    appended: int = 0
    acked: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    dead_letters: int = 0
    """Dead letters currently kept (at most
    :data:`~wattd.storage.spool.deadletters.MAX_DEAD_LETTERS`)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterOutcome:
    """What a requeue or a drop of dead letters did (see :class:`Spool`)."""

    done: int
    """Dead letters requeued or deleted."""
    missing: tuple[int, ...] = ()
    """Ids asked for that are no dead letter (of the stream, if one was given)."""
    left: int = 0
    """Dead letters not requeued because the spool bounds cannot hold them at all."""
    dropped: int = 0
    """Queued items dropped to make room, as :meth:`Spool.append` drops them."""
