"""Dead letters: payloads a server refused, kept for a person to inspect.

A refused item leaves its stream's queue and enters the dead-letter table in
one transaction, so it is never retried and never lost by a crash in between.
``wattd spool`` lists them, requeues them (after a fix on the server side) or
drops them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from wattd.storage.spool.gaps import note_gaps
from wattd.storage.spool.model import (
    ROW_OVERHEAD_BYTES,
    DeadLetter,
    DeadLetterOutcome,
    SpoolItem,
    StreamStats,
)
from wattd.storage.spool.queue import SpoolQueue, runs

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["MAX_DEAD_LETTERS", "MAX_REASON_CHARS", "SpoolDeadLetters"]

MAX_DEAD_LETTERS: Final = 10_000
"""Dead letters kept per stream for a person to inspect; older ones are pruned so
an endless run of rejected points cannot fill the disk."""
MAX_REASON_CHARS: Final = 2_000
"""A server message longer than this is cut; the start says what was wrong."""


def _missing(
    ids: list[int] | None, found: Sequence[tuple[int, int, int, bytes]]
) -> tuple[int, ...]:
    """Ids asked for (sorted) that are not among the found rows."""
    if ids is None:
        return ()
    have = {r[0] for r in found}
    return tuple(i for i in ids if i not in have)


class SpoolDeadLetters(SpoolQueue):
    """The spool's queue with its dead letters."""

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

    def dead_letter_count(self, stream: str) -> int:
        """Dead letters currently kept for ``stream``."""
        return self.stats(stream).dead_letters

    # -- transactions ----------------------------------------------------------

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
            meter_of = self._gap_keys.get(sid)
            if meter_of is not None:
                rows = [(i.time_ns, i.payload) for i in items]
                note_gaps(self._conn, sid, meter_of, rows, "dead_letter")
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
        for first, last in runs(ids):
            rows += self._conn.execute(
                sql, {"first": first, "last": last, "sid": sid}
            ).fetchall()
        return rows

    def _delete_dead(self, ids: list[int]) -> None:
        """Delete dead letters by id (sorted) inside a transaction."""
        for first, last in runs(ids):
            self._conn.execute(
                "DELETE FROM dead_letters WHERE id BETWEEN ? AND ?", (first, last)
            )
