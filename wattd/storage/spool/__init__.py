"""The durable spool: a bounded on-disk FIFO of payloads waiting for a server.

Sinks that talk to servers (InfluxDB, MQTT) append each encoded point here and
remove it only after the server confirmed it, so an outage or a crash loses
nothing. One file holds several named streams, one per consumer.

Why SQLite in WAL mode rather than an append-only segment log:

* a batch append, an ack and a move to the dead-letter table are each one
  atomic transaction, so a kill -9 leaves either the whole batch or none of it;
* crash recovery is SQLite's job (WAL replay), so there is no recovery code of
  our own to get wrong, and ``PRAGMA quick_check`` detects a damaged file;
* one file, with its counters and dead letters next to the data, no segment
  rotation or compaction, and freed pages are reused (incremental vacuum gives
  them back to the file system once the spool is empty);
* batches of a few thousand rows make the per-transaction fsync cheap, which
  keeps the drain rate far above what the radios produce.

Strategy: :class:`Spool` is synchronous and owns one connection; it must stay on
one thread. :class:`AsyncSpool` runs it on a dedicated thread so coroutines
never block on fsync. Sinks share one :class:`AsyncSpool` per file through
:meth:`AsyncSpool.shared`. A corrupt or unreadable file is reported as a
:class:`~wattd.errors.SpoolError`, renamed aside, and a fresh spool is started;
if not even that works, the spool falls back to memory (not durable, loudly
reported) rather than stopping the daemon.

Maintenance commands (``wattd spool``) open the same file with
``must_exist=True``: then nothing is created, set aside or replaced, and any
problem is raised instead. They can run next to the daemon; SQLite's busy
timeout serialises their short transactions with the daemon's.

The package, by job: :mod:`~wattd.storage.spool.model` (tables and values),
:mod:`~wattd.storage.spool.recovery` (opening the file, setting a damaged one
aside), :mod:`~wattd.storage.spool.queue`,
:mod:`~wattd.storage.spool.deadletters`, :mod:`~wattd.storage.spool.gaps`
(what was lost, for backfill), :mod:`~wattd.storage.spool.handle`
(:class:`Spool`) and :mod:`~wattd.storage.spool.asyncspool` (:class:`AsyncSpool`).
"""

from __future__ import annotations

from wattd.storage.spool.asyncspool import AsyncSpool
from wattd.storage.spool.deadletters import MAX_DEAD_LETTERS, MAX_REASON_CHARS
from wattd.storage.spool.gaps import Gap, MeterOf
from wattd.storage.spool.handle import Spool
from wattd.storage.spool.model import (
    BUSY_TIMEOUT_S,
    PAGE_CACHE_KIB,
    ROW_OVERHEAD_BYTES,
    SCHEMA_VERSION,
    DeadLetter,
    DeadLetterOutcome,
    SpoolItem,
    StreamStats,
)
from wattd.storage.spool.queue import DROP_LOG_INTERVAL_S, VACUUM_MIN_FREE_PAGES

__all__ = [
    "BUSY_TIMEOUT_S",
    "DROP_LOG_INTERVAL_S",
    "MAX_DEAD_LETTERS",
    "MAX_REASON_CHARS",
    "PAGE_CACHE_KIB",
    "ROW_OVERHEAD_BYTES",
    "SCHEMA_VERSION",
    "VACUUM_MIN_FREE_PAGES",
    "AsyncSpool",
    "DeadLetter",
    "DeadLetterOutcome",
    "Gap",
    "MeterOf",
    "Spool",
    "SpoolItem",
    "StreamStats",
]
