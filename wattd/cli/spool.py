"""``wattd spool``: inspect the durable spool and repair its dead letters.

``status`` shows each stream's backlog and counters, ``dead-letters`` lists the
points a server refused for good, ``requeue`` puts them back in the queue once
the cause is fixed on the server, and ``drop-dead`` deletes them. Each works
while the daemon runs: every action is one short SQLite transaction on the
daemon's own spool file, which is never created or replaced from here.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from wattd.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from wattd.cli._args import add_config, config_path, positive_int
from wattd.cli.query import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from wattd.storage.spool import DeadLetter, Gap, Spool, StreamStats

__all__ = ["register"]

DEFAULT_LIMIT: Final = 100
GAP_COLUMNS: Final = ("stream", "meter", "first", "last", "points", "cause")
STATUS_COLUMNS: Final[tuple[str, ...]] = (
    "stream",
    "depth",
    "bytes",
    "oldest_age",
    "appended",
    "acked",
    "dropped",
    "dead_lettered",
    "dead_letters",
)
LETTER_COLUMNS: Final[tuple[str, ...]] = ("id", "stream", "time", "failed_at", "reason")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``spool`` command group."""
    p = subparsers.add_parser(
        "spool",
        help="inspect the spool of the MQTT/InfluxDB sinks; requeue dead letters",
        description=(
            "Inspect the durable spool shared by the MQTT and InfluxDB sinks, and"
            " list, requeue or delete its dead letters (points a server refused"
            " with a 4xx). Works while the daemon runs; run it as the daemon's"
            " user. The spool is found from the config (state_dir, spool.path)."
        ),
    )
    sub = p.add_subparsers(dest="spool_command", metavar="ACTION", required=True)

    status = sub.add_parser(
        "status",
        help="depth, bytes, oldest pending age and counters per stream",
        description=(
            "Per stream: items queued (depth) and their bytes, the age of the"
            " first-queued item, the lifetime counters and the dead letters kept."
        ),
    )
    add_config(status)
    status.add_argument(
        "--format", choices=["table", "json"], default="table", help="output format"
    )
    status.set_defaults(func=status_command)

    letters = sub.add_parser(
        "dead-letters",
        help="list dead letters, newest first",
        description=(
            "List dead letters, newest first: id, stream, the point's time, when it"
            " was refused, the server's reason and the payload (line protocol for"
            " InfluxDB; bytes that are not UTF-8 are shown escaped). In jsonl, a"
            " payload that is not UTF-8 also comes as payload_base64."
        ),
    )
    add_config(letters)
    _add_stream(letters)
    letters.add_argument(
        "--limit",
        "-n",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N dead letters (default {DEFAULT_LIMIT})",
    )
    letters.add_argument(
        "--format", choices=["table", "jsonl"], default="table", help="output format"
    )
    letters.set_defaults(func=dead_letters_command)

    requeue = sub.add_parser(
        "requeue",
        help="move dead letters back into the queue",
        description=(
            "Move dead letters back into their stream's queue, in one transaction,"
            " for example after fixing a field type conflict on the server. They"
            " keep their time and go after what is queued now; a running daemon"
            " sends them with its next batch. If the spool is full, the oldest"
            " queued items are dropped to make room, as for new readings."
        ),
    )
    _add_selection(requeue)
    requeue.set_defaults(func=requeue_command)

    drop = sub.add_parser(
        "drop-dead",
        help="delete dead letters",
        description="Delete dead letters for good (the lifetime counters stay).",
    )
    _add_selection(drop)
    drop.set_defaults(func=drop_dead_command)


def _add_stream(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stream",
        metavar="NAME",
        default=None,
        help="only this stream (influx or mqtt; default: every stream)",
    )


def _add_selection(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    _add_stream(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id",
        dest="ids",
        type=positive_int,
        nargs="+",
        action="extend",
        metavar="N",
        help="these dead letters (ids as `wattd spool dead-letters` shows them)",
    )
    which.add_argument(
        "--all",
        action="store_true",
        help="every dead letter (of --stream, else of every stream)",
    )


# -- the commands -------------------------------------------------------------------


def status_command(args: argparse.Namespace) -> int:
    """Run ``wattd spool status``."""
    return _with_spool(args, _status)


def dead_letters_command(args: argparse.Namespace) -> int:
    """Run ``wattd spool dead-letters``."""
    return _with_spool(args, _dead_letters)


def requeue_command(args: argparse.Namespace) -> int:
    """Run ``wattd spool requeue``."""
    return _with_spool(args, _requeue)


def drop_dead_command(args: argparse.Namespace) -> int:
    """Run ``wattd spool drop-dead``."""
    return _with_spool(args, _drop_dead)


def _with_spool(
    args: argparse.Namespace, action: Callable[[argparse.Namespace, Spool], int]
) -> int:
    """Open the configured spool (it must exist), run ``action``, close it.

    Raises:
        ConfigError: the config is missing or invalid.
        SpoolError: the spool file is missing, unreadable, damaged or locked.
    """
    from wattd.config import load_config
    from wattd.sinks.influx.sink import STREAM, sensor_of_line
    from wattd.storage.spool import Spool

    config = load_config(config_path(args))
    try:
        with Spool.for_config(config, must_exist=True) as spool:
            if STREAM in spool.streams():
                # A requeue may drop InfluxDB points to make room: note them too.
                spool.track_gaps(STREAM, sensor_of_line)
            stream: str | None = getattr(args, "stream", None)
            if stream is not None and stream not in spool.streams():
                known = ", ".join(spool.streams()) or "none yet"
                msg = f"the spool {spool.path} has no stream {stream!r} ({known})"
                raise UsageError(msg)
            return action(args, spool)
    except UsageError as exc:
        print(f"wattd spool {args.spool_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _status(args: argparse.Namespace, spool: Spool) -> int:
    stats = spool.all_stats()
    gaps = spool.open_gaps()
    now_ns = time.time_ns()
    if args.format == "json":
        doc = {
            "path": str(spool.path),
            "max_items": spool.max_items,
            "max_bytes": spool.max_bytes,
            "streams": {name: _stats_json(s, now_ns) for name, s in stats.items()},
            "open_gaps": [_gap_json(g) for g in gaps],
        }
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    depth = sum(s.depth for s in stats.values())
    size = sum(s.bytes for s in stats.values())
    print(
        f"spool {spool.path}: {depth:,} of {spool.max_items:,} items,"
        f" {size:,} of {spool.max_bytes:,} bytes"
    )
    if not stats:
        print("no streams yet (no sink has used the spool)")
        return EXIT_OK
    rows = [
        [
            name,
            str(s.depth),
            str(s.bytes),
            _age(s.oldest_time_ns, now_ns),
            str(s.appended),
            str(s.acked),
            str(s.dropped),
            str(s.dead_lettered),
            str(s.dead_letters),
        ]
        for name, s in stats.items()
    ]
    print()
    _write_table(STATUS_COLUMNS, rows, sys.stdout, left={0})
    if gaps:
        print(
            f"\n{len(gaps)} open gap(s): points that never reached the server;"
            " wattd backfill --to influxdb --gaps re-sends them from the store"
        )
        gap_rows = [
            [
                g.stream,
                "all" if g.meter is None else str(g.meter),
                _local(g.first_ns),
                _local(g.last_ns),
                str(g.points),
                g.cause,
            ]
            for g in gaps
        ]
        _write_table(GAP_COLUMNS, gap_rows, sys.stdout, left={0, 2, 3, 5})
    return EXIT_OK


def _gap_json(g: Gap) -> dict[str, Any]:
    return {
        "id": g.id,
        "stream": g.stream,
        "meter": g.meter,
        "first_time": _iso(g.first_ns),
        "last_time": _iso(g.last_ns),
        "points": g.points,
        "cause": g.cause,
    }


def _stats_json(s: StreamStats, now_ns: int) -> dict[str, Any]:
    oldest = s.oldest_time_ns
    return {
        "depth": s.depth,
        "bytes": s.bytes,
        "oldest_time": None if oldest is None else _iso(oldest),
        "oldest_pending_age_s": (
            None if oldest is None else max(0.0, (now_ns - oldest) / 1e9)
        ),
        "appended": s.appended,
        "acked": s.acked,
        "dropped": s.dropped,
        "dead_lettered": s.dead_lettered,
        "dead_letters": s.dead_letters,
    }


def _dead_letters(args: argparse.Namespace, spool: Spool) -> int:
    letters = spool.list_dead_letters(stream=args.stream, limit=args.limit)
    if args.format == "jsonl":
        for letter in letters:
            print(json.dumps(_letter_json(letter), separators=(",", ":")))
    elif letters:
        _letter_table(letters, sys.stdout)
    kept = sum(
        s.dead_letters
        for name, s in spool.all_stats().items()
        if args.stream in {None, name}
    )
    if not letters:
        print("no dead letters", file=sys.stderr)
    elif kept > len(letters):
        print(
            f"showing the newest {len(letters)} of {kept} dead letters; use --limit",
            file=sys.stderr,
        )
    return EXIT_OK


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": letter.id,
        "stream": letter.stream,
        "time": _iso(letter.time_ns),
        "time_ns": letter.time_ns,
        "failed_at": _iso(letter.failed_at_ns),
        "reason": letter.reason,
        "payload": letter.payload.decode("utf-8", "backslashreplace"),
    }
    try:
        letter.payload.decode("utf-8")
    except UnicodeDecodeError:
        # The escaped text above is ambiguous next to line protocol's own
        # backslashes; these are the exact bytes.
        doc["payload_base64"] = base64.b64encode(letter.payload).decode("ascii")
    return doc


def _letter_table(letters: Sequence[DeadLetter], out: TextIO) -> None:
    """One row per dead letter, its payload indented on the line below."""
    rows = [
        [
            str(letter.id),
            letter.stream,
            _local(letter.time_ns),
            _local(letter.failed_at_ns),
            _printable(letter.reason),
        ]
        for letter in letters
    ]
    payloads = [
        _printable(letter.payload.decode("utf-8", "backslashreplace"))
        for letter in letters
    ]
    _write_table(LETTER_COLUMNS, rows, out, left={1, 2, 3, 4}, after=payloads)


def _requeue(args: argparse.Namespace, spool: Spool) -> int:
    outcome = spool.requeue_dead_letters(
        None if args.all else args.ids, stream=args.stream
    )
    print(f"requeued {outcome.done} dead letter(s)")
    if outcome.dropped:
        print(
            f"dropped the {outcome.dropped} oldest queued item(s) to make room:"
            f" the spool holds at most {spool.max_items:,} items and"
            f" {spool.max_bytes:,} bytes (spool.max_items, spool.max_bytes)"
        )
    if outcome.left:
        print(
            f"{outcome.left} dead letter(s) stay: together they are more than the"
            " whole spool holds (spool.max_items, spool.max_bytes); requeue fewer"
        )
    return _report_missing(args, outcome.missing)


def _drop_dead(args: argparse.Namespace, spool: Spool) -> int:
    outcome = spool.drop_dead_letters(
        None if args.all else args.ids, stream=args.stream
    )
    print(f"deleted {outcome.done} dead letter(s)")
    return _report_missing(args, outcome.missing)


def _report_missing(args: argparse.Namespace, missing: Sequence[int]) -> int:
    """Like rm: the others were handled, the exit code tells of the rest."""
    if not missing:
        return EXIT_OK
    where = f" in stream {args.stream}" if args.stream else ""
    ids = ", ".join(str(i) for i in missing)
    print(
        f"wattd spool {args.spool_command}: no dead letter {ids}{where}",
        file=sys.stderr,
    )
    return EXIT_ERROR


# -- formatting ----------------------------------------------------------------------


def _write_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    out: TextIO,
    *,
    left: set[int],
    after: Sequence[str] | None = None,
) -> None:
    """An aligned table; ``left`` columns are left-aligned, the rest right.

    ``after`` gives each row an extra, indented line (long text such as a
    payload, which would make the table too wide).
    """
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def fmt(line: Sequence[str]) -> str:
        parts = [
            text.ljust(w) if i in left else text.rjust(w)
            for i, (text, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out.write(fmt(columns) + "\n")
    for k, row in enumerate(rows):
        out.write(fmt(row) + "\n")
        if after is not None:
            out.write(f"    {after[k]}\n")


def _printable(text: str) -> str:
    """Control characters escaped, so a payload cannot drive the terminal."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def _local(ns: int) -> str:
    when = datetime.fromtimestamp(ns / 1e9, UTC).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:23] + when.strftime(" %Z")


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest:09d}Z"


def _age(oldest_ns: int | None, now_ns: int) -> str:
    if oldest_ns is None:
        return "-"
    seconds = max(0, (now_ns - oldest_ns) // 1_000_000_000)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
