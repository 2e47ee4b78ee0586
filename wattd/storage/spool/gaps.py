"""Gaps: ranges of points a stream could not deliver, kept until backfill closes them.

A point leaves the spool undelivered in two ways: it is dropped to keep the
spool within its bounds, or the server refused it (a dead letter). Either way
the ``gaps`` table notes, per meter, the first and last time of what was lost,
in the same transaction as the drop or the dead-lettering, so a crash never
loses a point without its note. ``wattd backfill --gaps`` re-sends those
ranges from the local store and closes them.

Only streams with a meter key (:meth:`~wattd.storage.spool.Spool.track_gaps`)
are noted: the spool cannot read payloads itself, the sink that wrote them
says which meter a payload is for. A payload whose meter it cannot tell is
noted for every meter (``meter`` NULL).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterable

__all__ = ["GAP_MERGE_NS", "Gap", "MeterOf", "note_gaps", "open_gaps"]

MeterOf: TypeAlias = "Callable[[bytes], int | None]"
"""A payload's meter (sensor address), or None when the payload does not say."""

GAP_MERGE_NS: Final = 600 * 1_000_000_000
"""A new range this close to an open gap of the same meter extends it: a long
outage drops a little on every append, and one row per meter is enough.
Re-sending the few delivered points in between is harmless."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Gap:
    """A range of one meter's points that never reached the server."""

    id: int
    stream: str
    meter: int | None
    """The sensor address; None: every meter."""
    first_ns: int
    last_ns: int
    points: int
    cause: str
    """``dropped`` (spool full) or ``dead_letter`` (refused by the server)."""
    noted_at_ns: int
    closed_at_ns: int | None = None


def note_gaps(
    conn: sqlite3.Connection,
    sid: int,
    meter_of: MeterOf,
    rows: Iterable[tuple[int, bytes]],
    cause: str,
) -> None:
    """Note ``(time_ns, payload)`` rows as lost, inside the caller's transaction."""
    ranges: dict[int | None, list[int]] = {}
    for time_ns, payload in rows:
        meter = meter_of(payload)
        entry = ranges.get(meter)
        if entry is None:
            ranges[meter] = [time_ns, time_ns, 1]
        else:
            entry[0] = min(entry[0], time_ns)
            entry[1] = max(entry[1], time_ns)
            entry[2] += 1
    now_ns = time.time_ns()
    for meter, (first, last, count) in ranges.items():
        near = conn.execute(
            "SELECT id FROM gaps WHERE stream = ? AND meter IS ? AND cause = ?"
            " AND closed_at_ns IS NULL AND first_ns <= ? AND last_ns >= ?"
            " ORDER BY id DESC LIMIT 1",
            (sid, meter, cause, last + GAP_MERGE_NS, first - GAP_MERGE_NS),
        ).fetchone()
        if near is None:
            conn.execute(
                "INSERT INTO gaps (stream, meter, first_ns, last_ns, points, cause,"
                " noted_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sid, meter, first, last, count, cause, now_ns),
            )
        else:
            conn.execute(
                "UPDATE gaps SET first_ns = min(first_ns, ?), last_ns = max(last_ns,"
                " ?), points = points + ?, noted_at_ns = ? WHERE id = ?",
                (first, last, count, now_ns, near[0]),
            )


def open_gaps(conn: sqlite3.Connection, sid: int | None) -> list[Gap]:
    """Open gaps of stream ``sid`` (all streams: None), oldest first."""
    tables = {
        str(r[0])
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if "gaps" not in tables:
        # A file written before gaps were noted, opened by a maintenance command.
        return []
    sql = (
        "SELECT g.id, s.name, g.meter, g.first_ns, g.last_ns, g.points, g.cause,"
        " g.noted_at_ns FROM gaps AS g JOIN streams AS s ON s.id = g.stream"
        " WHERE g.closed_at_ns IS NULL AND (:sid IS NULL OR g.stream = :sid)"
        " ORDER BY g.first_ns, g.id"
    )
    return [
        Gap(
            id=r[0],
            stream=r[1],
            meter=r[2],
            first_ns=r[3],
            last_ns=r[4],
            points=r[5],
            cause=r[6],
            noted_at_ns=r[7],
        )
        for r in conn.execute(sql, {"sid": sid})
    ]
