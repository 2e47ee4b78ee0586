"""``wattd report``: energy, cost and CO2 per sensor, rack, customer or location."""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from wattd.cli import EXIT_OK, EXIT_USAGE
from wattd.cli._args import add_config, config_path
from wattd.cli._invocation import wattd_command
from wattd.errors import TariffError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from zoneinfo import ZoneInfo

    from wattd.config import Config
    from wattd.costing.cost import EnergyInterval
    from wattd.costing.report.engine import Report

__all__ = ["parse_when", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd report``."""
    wattd = wattd_command()
    p = subparsers.add_parser(
        "report",
        help="energy and cost report (table, CSV, JSON or HTML)",
        description=(
            "Report energy, cost, CO2, peak-hour share and data completeness from\n"
            "the store (or a JSON-lines readings file), priced with the tariffs in\n"
            "the config. Times are local to tariffs.timezone. Without --from/--to\n"
            "or --period the report covers the current month so far."
        ),
        epilog=(
            "examples:\n"
            f"  {wattd} report --period week --previous --by rack\n"
            f"  {wattd} report --from 2025-03-01 --to 2025-03-31 --by customer"
            " --format csv\n"
            f"  {wattd} report --period month --by customer --only acme"
            " --format html -o acme.html"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(p)
    p.add_argument(
        "--from",
        dest="start",
        metavar="WHEN",
        help="start: a date (local midnight), a local time like 2025-03-01T08:00,"
        " or ISO 8601 with an offset",
    )
    p.add_argument(
        "--to",
        dest="end",
        metavar="WHEN",
        help="end (exclusive); a bare date includes that whole day",
    )
    p.add_argument(
        "--period",
        choices=["day", "week", "month"],
        help="the current local day, ISO week or month so far",
    )
    p.add_argument(
        "--previous", action="store_true", help="with --period: the whole period before"
    )
    p.add_argument(
        "--by",
        choices=["sensor", "rack", "customer", "location", "all"],
        default="sensor",
        help="grouping (default: sensor)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GROUP",
        help="keep only this group (repeatable); the HTML report then shows it",
    )
    p.add_argument(
        "--format", choices=["table", "csv", "json", "html"], default="table"
    )
    p.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    p.add_argument(
        "--readings",
        type=Path,
        metavar="FILE",
        help="JSON lines of readings (as published on MQTT) instead of the store",
    )
    p.add_argument("--title", help="report title (default: Energy report)")
    p.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    """Build and print (or write) the report."""
    from wattd.config import load_config
    from wattd.costing.report.engine import build_report, period_range
    from wattd.costing.tariff import TariffBook

    config = load_config(config_path(args))
    tz = TariffBook(config).timezone
    now = datetime.now(UTC)
    if args.period and (args.start or args.end):
        print("wattd report: give --period or --from/--to, not both", file=sys.stderr)
        return EXIT_USAGE
    if args.start or args.end:
        if not (args.start and args.end):
            print("wattd report: --from and --to go together", file=sys.stderr)
            return EXIT_USAGE
        start = parse_when(args.start, tz)
        end = parse_when(args.end, tz, end_of_day=True)
    else:
        start, end = period_range(
            args.period or "month", now, tz, previous=args.previous
        )
    with _intervals(config, args.readings, start, end) as intervals:
        report = build_report(
            config,
            intervals,
            start,
            end,
            by=args.by,
            only=tuple(args.only),
            title=args.title,
            now=now,
        )
    text = _render(report, args.format, args.only)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _render(report: Report, fmt: str, only: list[str]) -> str:
    from wattd.costing.report.html import render_html
    from wattd.costing.report.text import render_csv, render_json, render_table

    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "html":
        return render_html(report, group=only[0] if len(only) == 1 else None)
    return render_table(report)


@contextlib.contextmanager
def _intervals(
    config: Config, readings: Path | None, start: datetime, end: datetime
) -> Iterator[Iterable[EnergyInterval]]:
    """The energy source, streamed: the store stays open while the report reads."""
    from wattd.storage.intervals import intervals_from_jsonl, intervals_from_store

    if readings is not None:
        yield intervals_from_jsonl(readings)
        return
    from wattd.storage.store import Store

    store = Store.open(config.store_path, readonly=True)
    try:
        yield intervals_from_store(store, start, end)
    finally:
        store.close()


def parse_when(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> datetime:
    """A date or time from the command line as an aware UTC datetime.

    A bare date is local midnight (the next midnight with ``end_of_day``, so
    ``--to 2025-03-31`` includes the 31st); a time without offset is local.

    Raises:
        TariffError: the text is not a date or time.
    """
    from wattd.support.clock import wall_to_utc

    value = text.strip()
    try:
        if len(value) == len("2025-03-01"):
            day = date.fromisoformat(value)
            if end_of_day:
                day += timedelta(days=1)
            return wall_to_utc(datetime(day.year, day.month, day.day), tz)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TariffError(
            f"{text!r} is not a date (2025-03-01) or time (2025-03-01T08:00)"
        ) from None
    if moment.tzinfo is None:
        return wall_to_utc(moment, tz)
    return moment.astimezone(UTC)
