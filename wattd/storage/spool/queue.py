"""The spool's queue: append, peek and ack, within bounds shared by all streams.

Each append is one transaction. When the spool is full, the oldest items of
the appending stream are dropped first, then those of the deepest other
stream; drops are counted per stream and logged at most once a minute. Freed
pages go back to the file system once the spool is empty.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from typing import TYPE_CHECKING, Final

from wattd.errors import SpoolError
from wattd.storage.spool.gaps import Gap, MeterOf, note_gaps, open_gaps
from wattd.storage.spool.model import (
    BUSY_TIMEOUT_S,
    ROW_OVERHEAD_BYTES,
    STREAM_NAME,
    SpoolItem,
    StreamStats,
)
from wattd.storage.spool.recovery import SpoolFile

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

__all__ = ["DROP_LOG_INTERVAL_S", "VACUUM_MIN_FREE_PAGES", "SpoolQueue", "runs"]

log = logging.getLogger(__package__)

DROP_LOG_INTERVAL_S: Final = 60.0
"""A full spool drops on every append; one warning per stream per minute is enough."""
VACUUM_MIN_FREE_PAGES: Final = 2_048
"""Give pages back to the file system only when an empty spool holds this many
(8 MiB at 4 KiB pages): smaller amounts would just be re-allocated."""
_RECORD_TOTAL: Final = (
    "INSERT INTO energy (sensor, wh_total) VALUES (?, ?) ON CONFLICT (sensor)"
    " DO UPDATE SET wh_total = max(wh_total, excluded.wh_total)"
)


def runs(ids: list[int]) -> Iterable[tuple[int, int]]:
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


class SpoolQueue(SpoolFile):
    """The spool's streams of queued payloads."""

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
        in the same transaction; a total no higher than one this spool has
        committed already is skipped (the MQTT and InfluxDB sinks pass the same
        readings' totals, so the second append writes no energy rows).

        Raises:
            SpoolError: the disk is full or failing; nothing was appended.
        """
        rows = [(int(t), bytes(p)) for t, p in items]
        totals = {int(k): float(v) for k, v in (wh_totals or {}).items()}
        return self._guarded(lambda: self._append(stream, rows, totals))

    def track_gaps(self, stream: str, meter_of: MeterOf) -> None:
        """Note what ``stream`` drops or dead-letters, per meter (see ``gaps``).

        ``meter_of`` tells a payload's meter; it runs inside the spool's
        transactions, so it must be quick and must not raise.
        """
        sid = self._stream_id(stream)
        has_table = self._guarded(
            lambda: self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gaps'"
            ).fetchone()
        )
        # A maintenance command on a file the daemon has not yet opened (and
        # given the table) notes nothing rather than fail.
        if has_table is not None:
            self._gap_keys[sid] = meter_of

    def open_gaps(self, stream: str | None = None) -> list[Gap]:
        """Ranges not delivered and not yet closed (of ``stream``, else all)."""
        return self._guarded(
            lambda: open_gaps(
                self._conn, None if stream is None else self._stream_id(stream)
            )
        )

    def close_gap(self, gap: Gap) -> bool:
        """Mark ``gap`` delivered; False if it grew meanwhile (it then stays open).

        A range that grew after it was read was not all sent, so only the
        range exactly as it was read is closed.
        """

        def close() -> bool:
            with self._transaction():
                done = self._conn.execute(
                    "UPDATE gaps SET closed_at_ns = ? WHERE id = ? AND first_ns = ?"
                    " AND last_ns = ? AND points = ? AND closed_at_ns IS NULL",
                    (time.time_ns(), gap.id, gap.first_ns, gap.last_ns, gap.points),
                )
                return done.rowcount == 1

        return self._guarded(close)

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

    def all_stats(self) -> dict[str, StreamStats]:
        """:meth:`stats` of every stream, read from one snapshot of the file."""

        def read() -> dict[str, StreamStats]:
            with self._transaction(immediate=False):
                rows = self._conn.execute(
                    "SELECT id, name FROM streams ORDER BY id"
                ).fetchall()
                return {name: self._stats(sid) for sid, name in rows}

        return self._guarded(read)

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

    # -- transactions ----------------------------------------------------------

    def _append(
        self,
        stream: str,
        rows: list[tuple[int, bytes]],
        totals: Mapping[int, float],
    ) -> StreamStats:
        sid = self._stream_id(stream)
        # Worked out in here, so a retry on a fresh file (see _guarded) writes
        # every total again.
        recorded = self._recorded_totals
        new_totals = {
            sensor: wh
            for sensor, wh in totals.items()
            if wh > recorded.get(sensor, -math.inf)
        }
        if not rows and not new_totals:
            return self._stats(sid)
        with self._transaction():
            # Same transaction as the items: no payload is ever on disk
            # without its total, so the floor read at start covers it.
            self._conn.executemany(
                _RECORD_TOTAL, [(str(s), wh) for s, wh in new_totals.items()]
            )
            meter_of = self._gap_keys.get(sid)
            whole = rows[:] if meter_of is not None else rows
            over = self._trim_batch(rows)
            if over and meter_of is not None:
                note_gaps(self._conn, sid, meter_of, whole[:over], "dropped")
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
        recorded.update(new_totals)
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
        meter_of = self._gap_keys.get(sid)
        lost: list[tuple[int, bytes]] = []
        # Payloads are read only for a stream whose losses are noted.
        payload = "x''" if meter_of is None else "payload"
        cursor = self._conn.execute(
            f"SELECT id, length(payload), time_ns, {payload} FROM items"  # noqa: S608
            " WHERE stream = ? ORDER BY id",
            (sid,),
        )
        for item_id, length, time_ns, body in cursor:
            if count >= excess_items and freed >= excess_bytes:
                break
            count += 1
            freed += length + ROW_OVERHEAD_BYTES
            last_id = item_id
            if meter_of is not None:
                lost.append((time_ns, body))
        cursor.close()
        if last_id is None:
            return 0, 0
        if meter_of is not None:
            note_gaps(self._conn, sid, meter_of, lost, "dropped")
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
        for first, last in runs(ids):
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
        if not STREAM_NAME.fullmatch(stream):
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
