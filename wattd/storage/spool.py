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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import re
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from wattd.errors import SpoolError
from wattd.storage.files import private_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from wattd.config import Config
    from wattd.core.readings import Reading

__all__ = [
    "AsyncSpool",
    "DeadLetter",
    "DeadLetterOutcome",
    "Spool",
    "SpoolItem",
    "StreamStats",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
ROW_OVERHEAD_BYTES: Final = 32
"""Counted per item on top of its payload: rowid, stream, time, record header and
index entry, so that a flood of tiny payloads still hits ``max_bytes``."""
MAX_DEAD_LETTERS: Final = 10_000
"""Dead letters kept per stream for a person to inspect; older ones are pruned so
an endless run of rejected points cannot fill the disk."""
MAX_REASON_CHARS: Final = 2_000
"""A server message longer than this is cut; the start says what was wrong."""
DROP_LOG_INTERVAL_S: Final = 60.0
"""A full spool drops on every append; one warning per stream per minute is enough."""
VACUUM_MIN_FREE_PAGES: Final = 2_048
"""Give pages back to the file system only when an empty spool holds this many
(8 MiB at 4 KiB pages): smaller amounts would just be re-allocated."""
BUSY_TIMEOUT_S: Final = 10.0
"""Another process (an inspection command) may hold the write lock briefly."""
PAGE_CACHE_KIB: Final = 128
"""SQLite page cache (its default is 2 MiB): the spool's working set is the
head and tail of one table and the OS page cache holds the rest; more cache
would only stay resident."""
_STREAM_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26
_SQLITE_CANTOPEN: Final = 14
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_TABLES: Final = frozenset({"streams", "items", "dead_letters"})

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS energy (
    sensor TEXT PRIMARY KEY,
    wh_total REAL NOT NULL
);
"""
_RECORD_TOTAL: Final = (
    "INSERT INTO energy (sensor, wh_total) VALUES (?, ?) ON CONFLICT (sensor)"
    " DO UPDATE SET wh_total = max(wh_total, excluded.wh_total)"
)


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
    """Dead letters currently kept (at most :data:`MAX_DEAD_LETTERS`)."""


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


class Spool:
    """The synchronous spool. Use it from one thread only (see :class:`AsyncSpool`).

    Args:
        path: the SQLite file; ``None`` keeps the spool in memory (tests, fallback).
        max_items: most items over all streams.
        max_bytes: most payload bytes (plus :data:`ROW_OVERHEAD_BYTES` per item).
        must_exist: for maintenance commands: the file and every stream named
            must already exist, and a missing, locked or damaged file raises
            :class:`~wattd.errors.SpoolError` instead of being created, set aside
            or replaced by memory.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        max_items: int = 2_000_000,
        max_bytes: int = 512 << 20,
        must_exist: bool = False,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            msg = (
                "spool bounds must be positive"
                f" (max_items={max_items}, max_bytes={max_bytes})"
            )
            raise SpoolError(msg)
        if must_exist and path is None:
            msg = "must_exist needs a spool file, not an in-memory spool"
            raise SpoolError(msg)
        self.path = path
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.must_exist = must_exist
        self.problems: list[SpoolError] = []
        """Every corrupt/unreadable file met since start, oldest first."""
        self.durable = path is not None
        self._stream_ids: dict[str, int] = {}
        self._last_drop_log: dict[str, float] = {}
        self._conn = self._open_or_recover()

    @classmethod
    def for_config(cls, config: Config, *, must_exist: bool = False) -> Spool:
        """The spool described by ``config.spool`` (its path and bounds)."""
        return cls(
            config.spool_path,
            max_items=config.spool.max_items,
            max_bytes=config.spool.max_bytes,
            must_exist=must_exist,
        )

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ------------------------------------------------------------

    def append(
        self,
        stream: str,
        items: Iterable[tuple[int, bytes]],
        *,
        wh_totals: Mapping[int, float] | None = None,
    ) -> StreamStats:
        """Queue ``(time_ns, payload)`` items in one transaction.

        When the spool is full the oldest items of ``stream`` are dropped (then
        those of the deepest other stream), counted and logged. ``wh_totals``
        (sensor: energy total) raise the per-sensor totals of :meth:`wh_totals`
        in the same transaction.

        Raises:
            SpoolError: the disk is full or failing; nothing was appended.
        """
        rows = [(int(t), bytes(p)) for t, p in items]
        totals = [(str(int(k)), float(v)) for k, v in (wh_totals or {}).items()]
        return self._guarded(lambda: self._append(stream, rows, totals))

    def wh_totals(self) -> dict[int, float]:
        """The highest energy total recorded per sensor by :meth:`append`.

        Kept apart from the items, so acks and drops never lower it.
        """
        rows = self._guarded(
            lambda: self._conn.execute("SELECT sensor, wh_total FROM energy").fetchall()
        )
        return {int(sensor): float(wh) for sensor, wh in rows}

    @staticmethod
    def read_wh_totals(path: Path) -> dict[int, float]:
        """:meth:`wh_totals` of the spool file at ``path``, read-only and quick.

        Nothing is created, checked or set aside; a missing file has none.

        Raises:
            SpoolError: the file exists but cannot be read.
        """
        if not path.exists():
            return {}
        target = f"{path.absolute().as_uri()}?mode=ro"
        try:
            with contextlib.closing(
                sqlite3.connect(target, uri=True, timeout=BUSY_TIMEOUT_S)
            ) as conn:
                tables = {
                    str(r[0])
                    for r in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                    )
                }
                if "energy" not in tables:
                    return {}
                rows = conn.execute("SELECT sensor, wh_total FROM energy").fetchall()
        except sqlite3.Error as exc:
            msg = f"cannot read the energy totals of spool {path}: {exc}"
            raise SpoolError(msg) from None
        return {int(sensor): float(wh) for sensor, wh in rows}

    def peek(self, stream: str, limit: int, *, after_id: int = 0) -> list[SpoolItem]:
        """The oldest ``limit`` items of ``stream`` with an id above ``after_id``.

        Nothing is removed: call :meth:`ack` once the server confirmed them.
        ``after_id`` lets a consumer with several batches in flight read past them.
        """
        sql = (
            "SELECT id, time_ns, payload FROM items"
            " WHERE stream = ? AND id > ? ORDER BY id LIMIT ?"
        )
        rows = self._guarded(
            lambda: self._conn.execute(
                sql, (self._stream_id(stream), after_id, limit)
            ).fetchall()
        )
        return [SpoolItem(id=r[0], time_ns=r[1], payload=r[2]) for r in rows]

    def ack(self, stream: str, ids: Iterable[int]) -> StreamStats:
        """Remove delivered items. Ids no longer queued (dropped) are ignored."""
        id_list = sorted(set(ids))
        return self._guarded(lambda: self._remove(stream, id_list, "acked"))

    def dead_letter(
        self, stream: str, items: Sequence[SpoolItem], reason: str
    ) -> StreamStats:
        """Move refused items to the dead-letter table with the server's reason.

        They leave the queue in the same transaction, so they are never retried.
        """
        return self._guarded(lambda: self._dead_letter(stream, items, reason))

    def dead_letters(self, stream: str, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of ``stream``, newest first."""
        sql = (
            "SELECT id, time_ns, payload, reason, failed_at_ns FROM dead_letters"
            " WHERE stream = ? ORDER BY id DESC LIMIT ?"
        )
        rows = self._guarded(
            lambda: self._conn.execute(sql, (self._stream_id(stream), limit)).fetchall()
        )
        return [
            DeadLetter(
                id=r[0],
                stream=stream,
                time_ns=r[1],
                payload=r[2],
                reason=r[3],
                failed_at_ns=r[4],
            )
            for r in rows
        ]

    def list_dead_letters(
        self, *, stream: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of ``stream``, or of every stream.

        Newest first, like :meth:`dead_letters`.
        """
        select = (
            "SELECT d.id, s.name, d.time_ns, d.payload, d.reason, d.failed_at_ns"
            " FROM dead_letters AS d JOIN streams AS s ON s.id = d.stream"
        )

        def read() -> list[tuple[int, str, int, bytes, str, int]]:
            if stream is None:
                sql = f"{select} ORDER BY d.id DESC LIMIT ?"
                return self._conn.execute(sql, (limit,)).fetchall()
            sql = f"{select} WHERE d.stream = ? ORDER BY d.id DESC LIMIT ?"
            return self._conn.execute(sql, (self._stream_id(stream), limit)).fetchall()

        return [
            DeadLetter(
                id=r[0],
                stream=r[1],
                time_ns=r[2],
                payload=r[3],
                reason=r[4],
                failed_at_ns=r[5],
            )
            for r in self._guarded(read)
        ]

    def requeue_dead_letters(
        self, ids: Iterable[int] | None = None, *, stream: str | None = None
    ) -> DeadLetterOutcome:
        """Move dead letters back into the queue of their stream, in one transaction.

        ``ids`` None means all of them (of ``stream``, else of every stream). Each
        keeps its ``time_ns`` and payload and gets a new id, so it is sent after
        what is queued now; it counts as appended again, which keeps
        ``appended = depth + acked + dropped + dead_lettered``. The bounds apply
        as in :meth:`append`: the oldest queued items are dropped (and counted)
        to make room; dead letters that the bounds cannot hold even in an empty
        spool stay dead letters (the oldest ones).
        """
        id_list = None if ids is None else sorted(set(ids))
        return self._guarded(lambda: self._requeue(id_list, stream))

    def drop_dead_letters(
        self, ids: Iterable[int] | None = None, *, stream: str | None = None
    ) -> DeadLetterOutcome:
        """Delete dead letters: ``ids``, or all of them (of ``stream``, else all).

        The lifetime ``dead_lettered`` counters stay as they are.
        """
        id_list = None if ids is None else sorted(set(ids))
        return self._guarded(lambda: self._drop_dead(id_list, stream))

    def all_stats(self) -> dict[str, StreamStats]:
        """:meth:`stats` of every stream, read from one snapshot of the file."""

        def read() -> dict[str, StreamStats]:
            with self._transaction(immediate=False):
                rows = self._conn.execute(
                    "SELECT id, name FROM streams ORDER BY id"
                ).fetchall()
                return {name: self._stats(sid) for sid, name in rows}

        return self._guarded(read)

    def dead_letter_count(self, stream: str) -> int:
        """Dead letters currently kept for ``stream``."""
        return self.stats(stream).dead_letters

    def depth(self, stream: str) -> int:
        """Items queued in ``stream``."""
        return self.stats(stream).depth

    def oldest_time_ns(self, stream: str) -> int | None:
        """``time_ns`` of the first-queued item of ``stream``, or None when empty."""
        return self.stats(stream).oldest_time_ns

    def stats(self, stream: str) -> StreamStats:
        """Depth, bytes, oldest item time and counters of ``stream``."""
        return self._guarded(lambda: self._stats(self._stream_id(stream)))

    def streams(self) -> list[str]:
        """Names of every stream ever used in this file."""
        rows = self._guarded(
            lambda: self._conn.execute(
                "SELECT name FROM streams ORDER BY id"
            ).fetchall()
        )
        return [r[0] for r in rows]

    def close(self) -> None:
        """Close the file; the spool cannot be used afterwards."""
        self._conn.close()

    # -- transactions ----------------------------------------------------------

    def _append(
        self,
        stream: str,
        rows: list[tuple[int, bytes]],
        totals: list[tuple[str, float]],
    ) -> StreamStats:
        sid = self._stream_id(stream)
        if not rows and not totals:
            return self._stats(sid)
        with self._transaction():
            # Same transaction as the items: no payload is ever on disk
            # without its total, so the floor read at start covers it.
            self._conn.executemany(_RECORD_TOTAL, totals)
            over = self._trim_batch(rows)
            dropped = {sid: over} if over else {}
            need_items = len(rows)
            need_bytes = sum(len(p) for _, p in rows) + ROW_OVERHEAD_BYTES * need_items
            for victim, count in self._make_room(sid, need_items, need_bytes).items():
                dropped[victim] = dropped.get(victim, 0) + count
            self._conn.executemany(
                "INSERT INTO items (stream, time_ns, payload) VALUES (?, ?, ?)",
                [(sid, t, p) for t, p in rows],
            )
            self._conn.execute(
                "UPDATE streams SET depth = depth + ?, bytes = bytes + ?,"
                " appended = appended + ? WHERE id = ?",
                (need_items, need_bytes, need_items + over, sid),
            )
            for victim, count in dropped.items():
                self._conn.execute(
                    "UPDATE streams SET dropped = dropped + ? WHERE id = ?",
                    (count, victim),
                )
        for victim, count in dropped.items():
            self._log_drop(victim, count)
        return self._stats(sid)

    def _trim_batch(self, rows: list[tuple[int, bytes]]) -> int:
        """Cut the oldest rows of a batch too big on its own; returns how many."""
        cut = max(0, len(rows) - self.max_items)
        size = sum(len(p) + ROW_OVERHEAD_BYTES for _, p in rows[cut:])
        while size > self.max_bytes and cut < len(rows):
            size -= len(rows[cut][1]) + ROW_OVERHEAD_BYTES
            cut += 1
        del rows[:cut]
        return cut

    def _make_room(self, sid: int, need_items: int, need_bytes: int) -> dict[int, int]:
        depth, size = self._conn.execute(
            "SELECT COALESCE(SUM(depth), 0), COALESCE(SUM(bytes), 0) FROM streams"
        ).fetchone()
        excess_items = depth + need_items - self.max_items
        excess_bytes = size + need_bytes - self.max_bytes
        dropped: dict[int, int] = {}
        if excess_items <= 0 and excess_bytes <= 0:
            return dropped
        victims = [sid] + [
            r[0]
            for r in self._conn.execute(
                "SELECT id FROM streams WHERE id != ? AND depth > 0"
                " ORDER BY depth DESC",
                (sid,),
            )
        ]
        for victim in victims:
            count, freed = self._drop_oldest(victim, excess_items, excess_bytes)
            if count:
                dropped[victim] = count
            excess_items -= count
            excess_bytes -= freed
            if excess_items <= 0 and excess_bytes <= 0:
                break
        return dropped

    def _drop_oldest(
        self, sid: int, excess_items: int, excess_bytes: int
    ) -> tuple[int, int]:
        count = 0
        freed = 0
        last_id = None
        cursor = self._conn.execute(
            "SELECT id, length(payload) FROM items WHERE stream = ? ORDER BY id", (sid,)
        )
        for item_id, length in cursor:
            if count >= excess_items and freed >= excess_bytes:
                break
            count += 1
            freed += length + ROW_OVERHEAD_BYTES
            last_id = item_id
        cursor.close()
        if last_id is None:
            return 0, 0
        self._conn.execute(
            "DELETE FROM items WHERE stream = ? AND id <= ?", (sid, last_id)
        )
        self._conn.execute(
            "UPDATE streams SET depth = depth - ?, bytes = bytes - ? WHERE id = ?",
            (count, freed, sid),
        )
        return count, freed

    def _remove(self, stream: str, ids: list[int], counter: str) -> StreamStats:
        sid = self._stream_id(stream)
        if not ids:
            return self._stats(sid)
        with self._transaction():
            removed = self._delete_items(sid, ids)
            self._count(sid, counter, removed)
        self._maybe_vacuum()
        return self._stats(sid)

    def _delete_items(self, sid: int, ids: list[int]) -> int:
        """Delete queued ids (sorted) inside a transaction; returns how many."""
        count = 0
        size = 0
        for first, last in _runs(ids):
            n, b = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM items"
                " WHERE stream = ? AND id BETWEEN ? AND ?",
                (sid, first, last),
            ).fetchone()
            if n:
                self._conn.execute(
                    "DELETE FROM items WHERE stream = ? AND id BETWEEN ? AND ?",
                    (sid, first, last),
                )
                count += n
                size += b + ROW_OVERHEAD_BYTES * n
        self._conn.execute(
            "UPDATE streams SET depth = depth - ?, bytes = bytes - ? WHERE id = ?",
            (count, size, sid),
        )
        return count

    def _count(self, sid: int, counter: str, amount: int) -> None:
        # ``counter`` is one of the fixed column names below, never user input.
        assert counter in {"acked", "dead_lettered"}  # noqa: S101
        self._conn.execute(
            f"UPDATE streams SET {counter} = {counter} + ? WHERE id = ?",  # noqa: S608
            (amount, sid),
        )

    def _dead_letter(
        self, stream: str, items: Sequence[SpoolItem], reason: str
    ) -> StreamStats:
        sid = self._stream_id(stream)
        if not items:
            return self._stats(sid)
        text = (
            reason
            if len(reason) <= MAX_REASON_CHARS
            else reason[: MAX_REASON_CHARS - 1] + "…"
        )
        now_ns = time.time_ns()
        # One transaction: a crash never leaves an item both queued and dead.
        with self._transaction():
            self._conn.executemany(
                "INSERT INTO dead_letters"
                " (stream, time_ns, payload, reason, failed_at_ns)"
                " VALUES (?, ?, ?, ?, ?)",
                [(sid, i.time_ns, i.payload, text, now_ns) for i in items],
            )
            self._conn.execute(
                "DELETE FROM dead_letters WHERE stream = ? AND id <= (SELECT id FROM"
                " dead_letters WHERE stream = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (sid, sid, MAX_DEAD_LETTERS),
            )
            self._delete_items(sid, sorted({i.id for i in items}))
            self._count(sid, "dead_lettered", len(items))
        self._maybe_vacuum()
        return self._stats(sid)

    def _requeue(self, ids: list[int] | None, stream: str | None) -> DeadLetterOutcome:
        sid = None if stream is None else self._stream_id(stream)
        with self._transaction():
            letters = self._select_dead(ids, sid)
            missing = _missing(ids, letters)
            rows = [(t, p) for _, _, t, p in letters]
            left = self._trim_batch(rows)
            moving = letters[left:]
            if not moving:
                return DeadLetterOutcome(done=0, missing=missing, left=left)
            per_stream: dict[int, list[int]] = {}
            for _, target, _, payload in moving:
                entry = per_stream.setdefault(target, [0, 0])
                entry[0] += 1
                entry[1] += len(payload) + ROW_OVERHEAD_BYTES
            need_items = len(moving)
            need_bytes = sum(size for _, size in per_stream.values())
            # Room is made once for the whole set, so one stream's requeued
            # items are never dropped to fit another's. Only influx dead-letters
            # today, so this is exactly append's order of victims.
            first = max(per_stream, key=lambda s: per_stream[s][0])
            dropped = self._make_room(first, need_items, need_bytes)
            self._conn.executemany(
                "INSERT INTO items (stream, time_ns, payload) VALUES (?, ?, ?)",
                [(s, t, p) for _, s, t, p in moving],
            )
            for target, (count, size) in per_stream.items():
                self._conn.execute(
                    "UPDATE streams SET depth = depth + ?, bytes = bytes + ?,"
                    " appended = appended + ? WHERE id = ?",
                    (count, size, count, target),
                )
            for victim, count in dropped.items():
                self._conn.execute(
                    "UPDATE streams SET dropped = dropped + ? WHERE id = ?",
                    (count, victim),
                )
            self._delete_dead([r[0] for r in moving])
        for victim, count in dropped.items():
            self._log_drop(victim, count)
        return DeadLetterOutcome(
            done=len(moving),
            missing=missing,
            left=left,
            dropped=sum(dropped.values()),
        )

    def _drop_dead(
        self, ids: list[int] | None, stream: str | None
    ) -> DeadLetterOutcome:
        sid = None if stream is None else self._stream_id(stream)
        with self._transaction():
            letters = self._select_dead(ids, sid, payloads=False)
            self._delete_dead([r[0] for r in letters])
        self._maybe_vacuum()
        return DeadLetterOutcome(done=len(letters), missing=_missing(ids, letters))

    def _select_dead(
        self, ids: list[int] | None, sid: int | None, *, payloads: bool = True
    ) -> list[tuple[int, int, int, bytes]]:
        """``(id, stream, time_ns, payload)`` of the chosen dead letters, by id.

        Without ``payloads`` the payload is left empty (it is not read).
        """
        payload = "payload" if payloads else "x''"
        select = f"SELECT id, stream, time_ns, {payload} FROM dead_letters"  # noqa: S608
        where_stream = "" if sid is None else " AND stream = :sid"
        if ids is None:
            sql = f"{select} WHERE 1{where_stream} ORDER BY id"
            return self._conn.execute(sql, {"sid": sid}).fetchall()
        rows: list[tuple[int, int, int, bytes]] = []
        sql = f"{select} WHERE id BETWEEN :first AND :last{where_stream} ORDER BY id"
        for first, last in _runs(ids):
            rows += self._conn.execute(
                sql, {"first": first, "last": last, "sid": sid}
            ).fetchall()
        return rows

    def _delete_dead(self, ids: list[int]) -> None:
        """Delete dead letters by id (sorted) inside a transaction."""
        for first, last in _runs(ids):
            self._conn.execute(
                "DELETE FROM dead_letters WHERE id BETWEEN ? AND ?", (first, last)
            )

    def _stats(self, sid: int) -> StreamStats:
        row = self._conn.execute(
            "SELECT depth, bytes, appended, acked, dropped, dead_lettered FROM streams"
            " WHERE id = ?",
            (sid,),
        ).fetchone()
        oldest = self._conn.execute(
            "SELECT time_ns FROM items WHERE stream = ? ORDER BY id LIMIT 1", (sid,)
        ).fetchone()
        dead = self._conn.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE stream = ?", (sid,)
        ).fetchone()[0]
        return StreamStats(
            depth=row[0],
            bytes=row[1],
            oldest_time_ns=oldest[0] if oldest else None,
            appended=row[2],
            acked=row[3],
            dropped=row[4],
            dead_lettered=row[5],
            dead_letters=dead,
        )

    def _stream_id(self, stream: str) -> int:
        sid = self._stream_ids.get(stream)
        if sid is not None:
            return sid
        if not _STREAM_NAME.fullmatch(stream):
            msg = (
                f"stream name {stream!r} must be 1-32 of a-z, 0-9, _ and -,"
                " starting with a letter"
            )
            raise SpoolError(msg)
        if self.must_exist:
            sid = self._existing_stream_id(stream)
            self._stream_ids[stream] = sid
            return sid

        def create() -> int:
            with self._transaction():
                self._conn.execute(
                    "INSERT OR IGNORE INTO streams (name) VALUES (?)", (stream,)
                )
            row = self._conn.execute(
                "SELECT id FROM streams WHERE name = ?", (stream,)
            ).fetchone()
            return int(row[0])

        sid = self._guarded(create)
        self._stream_ids[stream] = sid
        return sid

    def _existing_stream_id(self, stream: str) -> int:
        row = self._guarded(
            lambda: self._conn.execute(
                "SELECT id FROM streams WHERE name = ?", (stream,)
            ).fetchone()
        )
        if row is None:
            known = ", ".join(self.streams()) or "none yet"
            msg = f"spool {self._where()} has no stream {stream!r} (streams: {known})"
            raise SpoolError(msg)
        return int(row[0])

    def _transaction(self, *, immediate: bool = True) -> _Transaction:
        return _Transaction(self._conn, immediate=immediate)

    def _maybe_vacuum(self) -> None:
        if not self.durable:
            return
        busy = self._conn.execute("SELECT 1 FROM items LIMIT 1").fetchone()
        if busy is not None:
            return
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free >= VACUUM_MIN_FREE_PAGES:
            # execute() would free one page per step; a script runs it to the end.
            self._conn.executescript("PRAGMA incremental_vacuum;")

    def _log_drop(self, sid: int, count: int) -> None:
        name = next((n for n, i in self._stream_ids.items() if i == sid), None)
        if name is None:
            # A maintenance command may drop from a stream it never used itself.
            row = self._conn.execute(
                "SELECT name FROM streams WHERE id = ?", (sid,)
            ).fetchone()
            name = str(row[0]) if row else str(sid)
        now = time.monotonic()
        last = self._last_drop_log.get(name)
        if last is not None and now - last < DROP_LOG_INTERVAL_S:
            return
        self._last_drop_log[name] = now
        total = self._conn.execute(
            "SELECT dropped FROM streams WHERE id = ?", (sid,)
        ).fetchone()[0]
        log.warning(
            "spool %s is full (max_items=%d, max_bytes=%d): dropped the %d oldest %s"
            " item(s), %d dropped in total; the server has been unreachable too long"
            " or spool.max_items/max_bytes are too small",
            self._where(),
            self.max_items,
            self.max_bytes,
            count,
            name,
            total,
        )

    # -- opening and recovery --------------------------------------------------

    def _guarded(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; on a corrupt file set it aside and start fresh.

        The operation then runs once more on the fresh spool, so an append is not
        lost; reads and acks just see the new, empty spool.
        """
        try:
            return operation()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise self._io_error(exc) from None
            if self.must_exist:
                msg = (
                    f"spool {self._where()} is damaged ({exc}); the daemon sets it"
                    " aside and starts a fresh spool when it next reads it"
                )
                raise SpoolError(msg) from None
            self._recover(f"it became unreadable ({exc})")
            return operation()

    def _io_error(self, exc: sqlite3.DatabaseError) -> SpoolError:
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code in {_SQLITE_BUSY, _SQLITE_LOCKED}:
            return SpoolError(
                f"spool {self._where()}: {exc}; another process kept it locked for"
                f" more than {BUSY_TIMEOUT_S:g} s, try again"
            )
        return SpoolError(
            f"spool {self._where()}: {exc}; check free disk space and that the"
            " directory is writable by wattd"
        )

    def _open_or_recover(self) -> sqlite3.Connection:
        if self.path is None:
            return self._connect(None)
        if self.must_exist:
            return self._connect_existing(self.path)
        try:
            return self._connect(self.path)
        except _UnusableFile as exc:
            self._report_and_move_aside(str(exc))
        except (sqlite3.DatabaseError, SpoolError, OSError) as exc:
            # Locked by another process, or the disk fails: the file may be fine,
            # so leave it where it is.
            return self._fall_back_to_memory(exc)
        try:
            return self._connect(self.path)
        except (sqlite3.DatabaseError, SpoolError, OSError) as exc:
            return self._fall_back_to_memory(exc)

    def _recover(self, why: str) -> None:
        self._stream_ids.clear()
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        if self.path is None:
            self._conn = self._connect(None)
            return
        self._report_and_move_aside(why)
        try:
            self._conn = self._connect(self.path)
        except (sqlite3.DatabaseError, SpoolError, OSError) as exc:
            self._conn = self._fall_back_to_memory(exc)

    def _report_and_move_aside(self, why: str) -> None:
        assert self.path is not None  # noqa: S101 - only called for file spools
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        moved = True
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                try:
                    src.replace(Path(f"{aside}{suffix}"))
                except OSError:
                    moved = False
        where = f"moved to {aside}" if moved else "could not be moved aside"
        error = SpoolError(
            f"spool {self.path}: {why}; the file was {where} and a fresh spool was"
            " started. Items in the old file are not sent; inspect or delete it"
        )
        self.problems.append(error)
        log.error("%s", error)

    def _fall_back_to_memory(self, exc: BaseException) -> sqlite3.Connection:
        error = SpoolError(
            f"spool {self.path}: cannot create a spool file ({exc}); keeping the spool"
            " in memory, so pending items are lost on restart. Make the directory"
            " writable by wattd or set spool.path"
        )
        self.problems.append(error)
        log.error("%s", error)
        self.durable = False
        return self._connect(None)

    def _connect(self, path: Path | None) -> sqlite3.Connection:
        existed = path is not None and path.exists()
        if path is not None:
            try:
                private_file(path)
            except OSError as exc:
                msg = f"cannot create {path}: {exc.strerror}"
                raise SpoolError(msg) from None
        try:
            conn = sqlite3.connect(
                ":memory:" if path is None else str(path),
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_S,
            )
            try:
                self._prepare(conn, durable=path is not None)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
            if _is_corruption(exc) or (existed and code == _SQLITE_CANTOPEN):
                msg = f"it cannot be opened ({exc})"
                raise _UnusableFile(msg) from None
            raise
        return conn

    def _connect_existing(self, path: Path) -> sqlite3.Connection:
        """Open a spool file that must exist; never create, move or replace it."""
        if not path.is_file():
            what = "is not a file" if path.exists() else "no spool here yet"
            msg = (
                f"{path}: {what}; the daemon creates the spool when the InfluxDB or"
                " MQTT sink first starts. Check --config, state_dir or spool.path"
            )
            raise SpoolError(msg)
        # mode=rw: SQLite must not create the file if it vanished meanwhile.
        target = f"{path.absolute().as_uri()}?mode=rw"
        try:
            conn = sqlite3.connect(
                target,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_S,
            )
        except sqlite3.Error as exc:
            raise self._cannot_open(path, exc) from None
        try:
            self._prepare(conn, durable=True, create=False)
        except _UnusableFile as exc:
            conn.close()
            msg = (
                f"spool {path}: {exc}; the daemon sets such a file aside and starts"
                " a fresh spool when it next opens it"
            )
            raise SpoolError(msg) from None
        except SpoolError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_corruption(exc):
                msg = (
                    f"spool {path} is damaged ({exc}); the daemon sets it aside and"
                    " starts a fresh spool when it next opens it"
                )
                raise SpoolError(msg) from None
            raise self._cannot_open(path, exc) from None
        return conn

    @staticmethod
    def _cannot_open(path: Path, exc: sqlite3.Error) -> SpoolError:
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code in {_SQLITE_BUSY, _SQLITE_LOCKED}:
            return SpoolError(
                f"cannot open spool {path}: {exc}; another process kept it locked"
                f" for more than {BUSY_TIMEOUT_S:g} s, try again"
            )
        return SpoolError(
            f"cannot open spool {path}: {exc}; run this as the user wattd runs as"
            " (it needs to write the file, its directory and the -wal/-shm files)"
        )

    @staticmethod
    def _prepare(
        conn: sqlite3.Connection, *, durable: bool, create: bool = True
    ) -> None:
        if create:
            # auto_vacuum only takes effect before the first table is created.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB:d}")
        if durable:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                msg = f"the file system does not support SQLite WAL mode (got {mode})"
                raise SpoolError(msg)
            # FULL: a commit survives power loss, not only a process crash; the
            # cost is one fsync per batch.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                detail = "; ".join(str(r[0]) for r in check[:3])
                msg = f"its integrity check failed ({detail})"
                raise _UnusableFile(msg)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            msg = (
                f"it was written by a newer wattd (schema {version}, this one"
                f" knows {SCHEMA_VERSION})"
            )
            raise _UnusableFile(msg)
        if not create:
            tables = {
                str(r[0])
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            if not tables >= _TABLES:
                msg = (
                    "it is not a wattd spool (it lacks the tables"
                    f" {', '.join(sorted(_TABLES - tables))}); check spool.path"
                )
                raise SpoolError(msg)
            return
        with _Transaction(conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _where(self) -> str:
        return (
            str(self.path) if self.durable and self.path is not None else "(in memory)"
        )


class _UnusableFile(SpoolError):
    """The file exists but is corrupt, unreadable or from a newer schema."""


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.

    With ``immediate=False`` a plain ``BEGIN``: a read-only snapshot that takes
    no write lock.
    """

    def __init__(self, conn: sqlite3.Connection, *, immediate: bool = True) -> None:
        self._conn = conn
        self._immediate = immediate

    def __enter__(self) -> None:
        # IMMEDIATE takes the write lock up front, so the bounds read inside the
        # transaction cannot go stale under another writer.
        self._conn.execute("BEGIN IMMEDIATE" if self._immediate else "BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.debug("rollback failed after %s", exc_type)


def _runs(ids: list[int]) -> Iterable[tuple[int, int]]:
    """Sorted ids as (first, last) runs of consecutive values."""
    if not ids:
        return
    first = prev = ids[0]
    for i in ids[1:]:
        if i != prev + 1:
            yield first, prev
            first = i
        prev = i
    yield first, prev


def _missing(
    ids: list[int] | None, found: Sequence[tuple[int, int, int, bytes]]
) -> tuple[int, ...]:
    """Ids asked for (sorted) that are not among the found rows."""
    if ids is None:
        return ()
    have = {r[0] for r in found}
    return tuple(i for i in ids if i not in have)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in {_SQLITE_CORRUPT, _SQLITE_NOTADB}
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


class AsyncSpool:
    """A :class:`Spool` on its own thread, so coroutines never wait on fsync.

    Every call is queued to one worker thread in order. :meth:`stats_now` answers
    from figures cached after each call, without waiting.
    """

    _shared: dict[Path, AsyncSpool] = {}  # noqa: RUF012 - process-wide registry by design
    _shared_lock = threading.Lock()

    def __init__(
        self,
        path: Path | None,
        *,
        max_items: int = 2_000_000,
        max_bytes: int = 512 << 20,
    ) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="wattd-spool"
        )
        self._opened = self._executor.submit(
            Spool, path, max_items=max_items, max_bytes=max_bytes
        )
        self._cache: dict[str, StreamStats] = {}
        self._unrecorded: dict[int, float] = {}
        self._refs = 1
        self._closed = False

    @classmethod
    def shared(cls, path: Path, *, max_items: int, max_bytes: int) -> AsyncSpool:
        """The process-wide spool for ``path``; every caller must :meth:`close` it."""
        key = path.absolute()
        with cls._shared_lock:
            spool = cls._shared.get(key)
            if spool is not None and not spool._closed:
                spool._refs += 1
                return spool
            spool = cls(key, max_items=max_items, max_bytes=max_bytes)
            cls._shared[key] = spool
            return spool

    @classmethod
    def for_config(cls, config: Config) -> AsyncSpool:
        """The shared spool described by ``config.spool``."""
        return cls.shared(
            config.spool_path,
            max_items=config.spool.max_items,
            max_bytes=config.spool.max_bytes,
        )

    def note_wh_totals(self, readings: Iterable[Reading]) -> None:
        """Remember the readings' energy totals; the next append records them.

        A sink calls this with every reading it takes, before it appends any
        payload made from them: whatever stream's append comes next then
        records the totals in its transaction, so every payload on disk is
        covered. Recording a total early is harmless (it is one the daemon has
        reached); recording it late is what would let a restart go below it.
        """
        pending = self._unrecorded
        for reading in readings:
            wh = reading.wh_total
            if wh > pending.get(reading.sensor, -math.inf) and math.isfinite(wh):
                pending[reading.sensor] = wh

    async def append(
        self, stream: str, items: Iterable[tuple[int, bytes]]
    ) -> StreamStats:
        """See :meth:`Spool.append`; also records the noted energy totals."""
        rows = list(items)
        totals, self._unrecorded = self._unrecorded, {}
        try:
            stats = await self._run(lambda s: s.append(stream, rows, wh_totals=totals))
        except BaseException:
            for sensor, wh in totals.items():
                if wh > self._unrecorded.get(sensor, -math.inf):
                    self._unrecorded[sensor] = wh
            raise
        self._cache[stream] = stats
        return stats

    async def peek(
        self, stream: str, limit: int, *, after_id: int = 0
    ) -> list[SpoolItem]:
        """See :meth:`Spool.peek`."""
        return await self._run(lambda s: s.peek(stream, limit, after_id=after_id))

    async def ack(self, stream: str, ids: Iterable[int]) -> StreamStats:
        """See :meth:`Spool.ack`."""
        id_list = list(ids)
        stats = await self._run(lambda s: s.ack(stream, id_list))
        self._cache[stream] = stats
        return stats

    async def dead_letter(
        self, stream: str, items: Sequence[SpoolItem], reason: str
    ) -> StreamStats:
        """See :meth:`Spool.dead_letter`."""
        stats = await self._run(lambda s: s.dead_letter(stream, items, reason))
        self._cache[stream] = stats
        return stats

    async def dead_letters(self, stream: str, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`Spool.dead_letters`."""
        return await self._run(lambda s: s.dead_letters(stream, limit))

    async def stats(self, stream: str) -> StreamStats:
        """See :meth:`Spool.stats`; also refreshes :meth:`stats_now`."""
        stats = await self._run(lambda s: s.stats(stream))
        self._cache[stream] = stats
        return stats

    async def depth(self, stream: str) -> int:
        """See :meth:`Spool.depth`."""
        return (await self.stats(stream)).depth

    async def oldest_time_ns(self, stream: str) -> int | None:
        """See :meth:`Spool.oldest_time_ns`."""
        return (await self.stats(stream)).oldest_time_ns

    def stats_now(self, stream: str) -> StreamStats:
        """Figures as of the last call on ``stream`` (no waiting, may lag slightly)."""
        return self._cache.get(stream, StreamStats())

    @property
    def durable(self) -> bool:
        """False once the spool had to fall back to memory."""
        return not self._opened.done() or self._opened.result().durable

    @property
    def problems(self) -> list[SpoolError]:
        """Corrupt or unreadable files met so far (see :attr:`Spool.problems`)."""
        return list(self._opened.result().problems) if self._opened.done() else []

    async def close(self) -> None:
        """Release this reference; the last one closes the file and the thread."""
        with self._shared_lock:
            self._refs -= 1
            if self._refs > 0 or self._closed:
                return
            self._closed = True
            if self.path is not None and self._shared.get(self.path) is self:
                del self._shared[self.path]
        try:
            await self._run(lambda s: s.close(), closing=True)
        finally:
            self._executor.shutdown(wait=False)

    async def _run(self, call: Callable[[Spool], T], *, closing: bool = False) -> T:
        if self._closed and not closing:
            msg = f"spool {self.path or '(in memory)'} is closed"
            raise SpoolError(msg)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: call(self._opened.result())
        )
