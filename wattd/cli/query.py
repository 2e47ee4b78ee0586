"""``wattd query``: recent readings or rollups from the local store.

Also home of the time and sensor arguments that ``wattd reprocess`` shares.
"""

from __future__ import annotations

import csv
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from wattd.cli import EXIT_OK, EXIT_USAGE
from wattd.cli._args import add_config, config_path
from wattd.errors import WattdError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Mapping

    from wattd.config import Config
    from wattd.storage.store import Rollup, Store, StoredReading

DEFAULT_LAST: Final = 10
_UNITS_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RELATIVE: Final = re.compile(r"-(?:\d+(?:\.\d+)?[smhdw])+")
_RELATIVE_PART: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
# What argparse may take as an option's value although it starts with "-":
# negative numbers and relative times.
_OPTION_VALUE: Final = re.compile(r"^-\d[\d.smhdw]*$")

TIME_HELP: Final = (
    "ISO-8601 (2024-05-01, 2024-05-01T14:30, 2024-05-01T12:30Z; no zone means"
    " local time), now, today, yesterday, or relative like -2h, -30m, -7d, -1h30m"
)

READING_COLUMNS: Final[tuple[str, ...]] = (
    "time",
    "sensor",
    "name",
    "watts",
    "va",
    "vrms",
    "irms",
    "pf",
    "wh_total",
    "wh_delta",
    "rssi_dbm",
    "flags",
)
ROLLUP_COLUMNS: Final[tuple[str, ...]] = (
    "start",
    "sensor",
    "name",
    "readings",
    "watts_mean",
    "watts_min",
    "watts_max",
    "vrms_mean",
    "wh",
    "wh_total",
)


class UsageError(WattdError):
    """A command-line argument cannot be understood."""


# -- shared argument handling ----------------------------------------------------


def parse_time(text: str, *, now: datetime) -> datetime:
    """Read a user-given time; naive ISO times are local.

    Raises:
        UsageError: the text is no time wattd understands.
    """
    value = text.strip().lower()
    local_now = now.astimezone()
    if value == "now":
        return now.astimezone(UTC)
    if value in {"today", "yesterday"}:
        day = local_now.date() - timedelta(days=1 if value == "yesterday" else 0)
        # Naive local midnight, then the zone's offset on that day (DST-safe).
        midnight = datetime(day.year, day.month, day.day)
        return midnight.astimezone().astimezone(UTC)
    if _RELATIVE.fullmatch(value):
        seconds = sum(
            float(n) * _UNITS_S[unit] for n, unit in _RELATIVE_PART.findall(value)
        )
        return (now - timedelta(seconds=seconds)).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}; use {TIME_HELP}") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # the local zone, DST included
    return parsed.astimezone(UTC)


def resolve_sensors(
    tokens: Iterable[str] | None, config: Config | None, known: Mapping[int, str]
) -> list[int] | None:
    """Turn ``--sensor`` values (addresses or names) into addresses.

    Raises:
        UsageError: a name matches no configured or stored sensor.
    """
    if not tokens:
        return None
    names: dict[str, int] = {}
    for address, name in known.items():
        if name:
            names[name.lower()] = address
    if config is not None:
        for sensor in config.sensors:
            names[sensor.display_name.lower()] = sensor.address
    out: list[int] = []
    for token in tokens:
        text = token.strip()
        if re.fullmatch(r"0x[0-9a-fA-F]+", text):
            out.append(int(text, 16))
        elif text.isdigit():
            out.append(int(text))
        elif text.lower() in names:
            out.append(names[text.lower()])
        else:
            listed = ", ".join(f"{a} ({n})" for a, n in sorted(known.items())) or "none"
            raise UsageError(
                f"no sensor is named {text!r}; give an address or one of the known"
                f" sensors: {listed}"
            )
    return sorted(set(out))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--db`` and ``--sensor``, as every store command takes them.

    Also lets relative times such as ``-2h`` follow an option as its value:
    argparse otherwise reads anything starting with ``-`` that is not a plain
    negative number as an option of its own.
    """
    parser._negative_number_matcher = _OPTION_VALUE
    add_config(parser)
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="FILE",
        help="the store file (default: store.path from the config)",
    )
    parser.add_argument(
        "--sensor",
        "-s",
        action="append",
        metavar="N|NAME",
        help="only this sensor (address or name); repeat for more",
    )


def load_for_store(args: argparse.Namespace) -> tuple[Config | None, Path]:
    """The config (None if only ``--db`` was given) and the store path.

    Raises:
        ConfigError: the config is missing or invalid.
    """
    from wattd.config import load_config

    if args.db is not None and args.config is None:
        return None, args.db
    config = load_config(config_path(args))
    return config, args.db or config.store_path


# -- the command -------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd query``."""
    parser = subparsers.add_parser(
        "query",
        help="show recent readings or minute/hour rollups from the local store",
        description=(
            "Print readings or rollups per sensor from the SQLite store; works"
            " while the daemon runs. Without a range, the last 10 per sensor."
            f" Times: {TIME_HELP}. Tables show local time with its zone; CSV"
            " shows ISO-8601 UTC."
        ),
    )
    add_config_arguments(parser)
    span = parser.add_mutually_exclusive_group()
    span.add_argument(
        "--last",
        "-n",
        type=int,
        default=None,
        metavar="N",
        help=f"the last N readings or buckets per sensor (default {DEFAULT_LAST})",
    )
    span.add_argument("--from", dest="from_", metavar="T", help="range start")
    parser.add_argument("--to", metavar="T", help="range end (default: now)")
    parser.add_argument(
        "--rollup",
        choices=["none", "1m", "1h"],
        default="none",
        help="readings (none) or per-minute / per-hour rollups",
    )
    parser.add_argument(
        "--format", choices=["table", "csv"], default="table", help="output format"
    )
    parser.set_defaults(func=query_command)


def query_command(args: argparse.Namespace) -> int:
    """Run ``wattd query``."""
    from wattd.storage.store import Store

    if args.to is not None and args.from_ is None:
        print("wattd query: --to needs --from", file=sys.stderr)
        return EXIT_USAGE
    if args.last is not None and args.last < 1:
        print("wattd query: --last must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    config, path = load_for_store(args)
    now = datetime.now(UTC)
    try:
        with Store.open(path, readonly=True) as store:
            known = store.known_sensors()
            sensors = resolve_sensors(args.sensor, config, known)
            names = _names(config, known)
            count = _emit(args, store, sensors, names, now, sys.stdout)
    except UsageError as exc:
        print(f"wattd query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if count == 0:
        print("no data for that selection", file=sys.stderr)
    return EXIT_OK


def _names(config: Config | None, known: Mapping[int, str]) -> dict[int, str]:
    names = dict(known)
    if config is not None:
        names.update({s.address: s.display_name for s in config.sensors})
    return names


def _emit(
    args: argparse.Namespace,
    store: Store,
    sensors: list[int] | None,
    names: Mapping[int, str],
    now: datetime,
    out: TextIO,
) -> int:
    """Write the selection to ``out``; returns the number of rows."""
    ranged = args.from_ is not None
    if ranged:
        from wattd.storage.store import to_ns

        start = to_ns(parse_time(args.from_, now=now))
        end = to_ns(parse_time(args.to, now=now)) if args.to else to_ns(now)
        if end <= start:
            raise UsageError("--to must be later than --from")
    last = args.last or DEFAULT_LAST
    if args.rollup == "none":
        readings: Iterable[StoredReading] = (
            store.iter_readings(start, end, sensors)
            if ranged
            else store.recent_readings(sensors, limit_per_sensor=last)
        )
        rows = (_reading_row(r) for r in readings)
        columns = READING_COLUMNS
    else:
        rollups: Iterable[Rollup] = (
            store.rollups(args.rollup, start, end, sensors)
            if ranged
            else store.recent_rollups(args.rollup, sensors, limit_per_sensor=last)
        )
        rows = (_rollup_row(r, names) for r in rollups)
        columns = ROLLUP_COLUMNS
    if args.format == "csv":
        return write_csv(rows, columns, out)
    return write_table(rows, columns, out)


Row = tuple[datetime, int, str, tuple[float | int | str | None, ...]]


def _reading_row(r: StoredReading) -> Row:
    values = (
        r.watts,
        r.va,
        r.vrms,
        r.irms,
        r.power_factor,
        r.wh_total,
        r.wh_delta,
        r.rssi_dbm,
        " ".join(sorted(r.flags)),
    )
    return (r.time, r.sensor, r.name, values)


def _rollup_row(r: Rollup, names: Mapping[int, str]) -> Row:
    values = (
        r.n_readings,
        r.watts_mean,
        r.watts_min,
        r.watts_max,
        r.vrms_mean,
        r.wh,
        r.wh_total_last,
    )
    return (r.start, r.sensor, names.get(r.sensor, ""), values)


def write_csv(rows: Iterable[Row], columns: tuple[str, ...], out: TextIO) -> int:
    """CSV with a header; times in ISO-8601 UTC, numbers at full precision."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for when, sensor, name, values in rows:
        stamp = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
        cells = ["" if v is None else v for v in values]
        writer.writerow([stamp, sensor, name, *cells])
        n += 1
    return n


# Display precision per column (table only).
_DIGITS: Final = {
    "watts": 1,
    "va": 1,
    "vrms": 1,
    "irms": 3,
    "pf": 3,
    "wh_total": 3,
    "wh_delta": 4,
    "watts_mean": 1,
    "watts_min": 1,
    "watts_max": 1,
    "vrms_mean": 1,
    "wh": 4,
}


def write_table(rows: Iterable[Row], columns: tuple[str, ...], out: TextIO) -> int:
    """An aligned table in local time, one block per sensor."""
    cells: list[list[str]] = []
    for when, sensor, name, values in rows:
        local = when.astimezone()
        line = [local.strftime("%Y-%m-%d %H:%M:%S %Z"), str(sensor), name]
        for column, value in zip(columns[3:], values, strict=True):
            line.append(_cell(column, value))
        cells.append(line)
    if not cells:
        return 0
    widths = [
        max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)
    ]
    numeric = [
        i not in {0, 2, len(columns) - 1} or columns[i] == "wh_total"
        for i in range(len(columns))
    ]

    def fmt(line: list[str]) -> str:
        parts = [
            text.rjust(w) if right else text.ljust(w)
            for text, w, right in zip(line, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out.write(fmt(list(columns)) + "\n")
    previous: str | None = None
    for line in cells:
        if previous is not None and line[1] != previous:
            out.write("\n")
        previous = line[1]
        out.write(fmt(line) + "\n")
    return len(cells)


def _cell(column: str, value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value or "-"
    digits = _DIGITS.get(column)
    if digits is None or isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"
