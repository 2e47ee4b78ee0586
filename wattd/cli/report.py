"""``wattd report``: energy, cost and CO2 per sensor, rack, customer or location.

The energy comes from this host's store, from JSON lines of readings, or, for a
fleet, from the central time-series store that every host writes to
(``--source``): :mod:`wattd.clients.tsdb` reads it and
:mod:`wattd.costing.fleet` turns it into intervals keyed by fleet identity.
A fleet report also checks each node's clock against the store's
(:mod:`wattd.costing.clocks`) and warns about any more than a second off.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from wattd.cli import EXIT_OK, EXIT_USAGE
from wattd.cli._args import add_config, config_path
from wattd.cli._invocation import wattd_command
from wattd.cli._store import (
    PASSWORD_ENV,
    SOURCE_HELP,
    add_store_options,
    open_store,
    source_arg,
    store_usage,
)
from wattd.support.clock import parse_when

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from wattd.config import Config
    from wattd.costing.clocks import NodeClock
    from wattd.costing.cost import EnergyInterval
    from wattd.costing.fleet import Duplicate
    from wattd.costing.report.engine import Report
    from wattd.costing.tariff import TariffBook

__all__ = ["parse_when", "register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd report``."""
    wattd = wattd_command()
    p = subparsers.add_parser(
        "report",
        help="energy and cost report (table, CSV, JSON or HTML)",
        description=(
            "Report energy, cost, CO2, peak-hour share and data completeness from\n"
            "the store (or a JSON-lines readings file, or the fleet's central\n"
            "VictoriaMetrics or InfluxDB with --source), priced with the tariffs in\n"
            "the config. Times are local to tariffs.timezone. Without --from/--to\n"
            "or --period the report covers the current month so far."
        ),
        epilog=(
            "examples:\n"
            f"  {wattd} report --period week --previous --by rack\n"
            f"  {wattd} report --from 2025-03-01 --to 2025-03-31 --by customer"
            " --format csv\n"
            f"  {wattd} report --period month --by customer --only acme"
            " --format html -o acme.html\n"
            f"  {wattd} report --period month --previous --customer acme"
            " --format csv -o acme-bill.csv\n"
            f"  {wattd} report --period month --by customer"
            " --source victoriametrics=http://vm:8428\n"
            f"  {PASSWORD_ENV}=... {wattd} report --by node"
            " --source influxdb=http://influx:8086 --database wattd --username report"
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
        choices=["sensor", "rack", "customer", "location", "node", "all"],
        default="sensor",
        help="grouping (default: sensor); node is the wattd host that hears a meter",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GROUP",
        help="keep only this group (repeatable); the HTML report then shows it",
    )
    p.add_argument(
        "--customer",
        metavar="NAME",
        help="a bill for one customer: only its meters, one row each, with"
        " standing charges and the comparison (--format csv: the bill as CSV)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="add what the energy would have cost at each location and shifted"
        " to cheap hours (an estimate; always on with --customer)",
    )
    p.add_argument(
        "--format", choices=["table", "csv", "json", "html"], default="table"
    )
    p.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--readings",
        type=Path,
        metavar="FILE",
        help="JSON lines of readings (as published on MQTT) instead of the store",
    )
    data.add_argument(
        "--source",
        type=source_arg,
        metavar="KIND=URL",
        help=f"read every host's meters instead from {SOURCE_HELP}",
    )
    p.add_argument("--title", help="report title (default: Energy report)")
    add_store_options(p, "central store (with --source)")
    p.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    """Build and print (or write) the report."""
    from wattd.config import load_config
    from wattd.costing.billing import customer_report
    from wattd.costing.compare import ComparisonBuilder
    from wattd.costing.report.engine import build_report, period_range
    from wattd.costing.tariff import TariffBook

    config = load_config(config_path(args))
    tz = TariffBook(config).timezone
    now = datetime.now(UTC)
    if args.period and (args.start or args.end):
        print("wattd report: give --period or --from/--to, not both", file=sys.stderr)
        return EXIT_USAGE
    problem = store_usage(args)
    if args.customer is not None and (args.only or args.by != "sensor"):
        problem = "--customer lists the customer's meters; drop --by and --only"
    if problem:
        print(f"wattd report: {problem}", file=sys.stderr)
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
    with _intervals(config, args, start, end) as (intervals, book, fleet):
        if args.customer is not None:
            report = customer_report(
                config,
                intervals,
                start,
                end,
                customer=args.customer,
                now=now,
                book=book,
                title=args.title,
            )
        else:
            builder = None
            if args.compare:
                builder = ComparisonBuilder(config, start, end, book=book)
            report = build_report(
                config,
                intervals,
                start,
                end,
                by=args.by,
                only=tuple(args.only),
                title=args.title,
                now=now,
                book=book,
                comparison=builder,
            )
    text = _render(report, args.format, args.only, fleet)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


class FleetNotes(NamedTuple):
    """What a fleet report found besides the energy."""

    duplicates: list[Duplicate]
    clocks: list[NodeClock]


def _render(report: Report, fmt: str, only: list[str], fleet: FleetNotes | None) -> str:
    """The report in ``fmt``; a fleet report's JSON also lists duplicates, clocks."""
    import json

    from wattd.costing.report.bill import render_bill_csv
    from wattd.costing.report.html import render_html
    from wattd.costing.report.text import (
        render_csv,
        render_json,
        render_table,
        report_to_dict,
    )

    if fmt == "csv":
        return render_bill_csv(report) if report.customer else render_csv(report)
    if fmt == "json":
        if fleet is None:
            return render_json(report)
        data = report_to_dict(report)
        data["duplicates"] = [d.to_json_dict() for d in fleet.duplicates]
        data["clocks"] = [c.to_json_dict() for c in fleet.clocks]
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "html":
        return render_html(report, group=only[0] if len(only) == 1 else None)
    return render_table(report)


@contextlib.contextmanager
def _intervals(
    config: Config, args: argparse.Namespace, start: datetime, end: datetime
) -> Iterator[tuple[Iterable[EnergyInterval], TariffBook | None, FleetNotes | None]]:
    """The energy source, streamed: the store stays open while the report reads.

    A central store comes with the book that knows its meters' groups, the
    meters it found reported twice (by two coordinators) and the nodes' clocks.
    """
    from wattd.storage.intervals import intervals_from_jsonl, intervals_from_store

    if args.source is not None:
        yield _fleet_intervals(config, args, start, end)
        return
    if args.readings is not None:
        yield intervals_from_jsonl(args.readings), None, None
        return
    from wattd.storage.store import Store

    store = Store.open(config.store_path, readonly=True)
    try:
        yield intervals_from_store(store, start, end), None, None
    finally:
        store.close()


def _fleet_intervals(
    config: Config, args: argparse.Namespace, start: datetime, end: datetime
) -> tuple[Iterable[EnergyInterval], TariffBook, FleetNotes]:
    """Every host's meters from the central store, read a day at a time.

    The meters (and the tags of each one's latest point), the frame hashes
    (to find meters heard by two coordinators), the nodes' clock probes and
    the points just before the range are read first; the minutes follow as
    the report asks.
    """
    from wattd.costing.clocks import clock_warning, node_clocks
    from wattd.costing.fleet import (
        BASELINE_S,
        DuplicateFinder,
        FleetBook,
        fleet_meters,
        intervals_from_minutes,
        minute_bounds,
        minute_spans,
        without_duplicates,
    )

    source = args.source
    reader = open_store(config, args)
    first_s, last_s = minute_bounds(start, end)
    meters, notes = fleet_meters(reader.last_points(first_s, last_s))
    for note in notes:
        log.warning("%s", note)
    if not meters:
        log.warning(
            "%s=%s holds no energy points of measurement %r in the range",
            source.kind,
            source.url,
            config.influxdb.measurement,
        )
    nodes = {meter.node for meter in meters.values() if meter.node}
    clocks = node_clocks(reader.clock_probes(first_s, last_s), nodes)
    if (warning := clock_warning(clocks)) is not None:
        log.warning("%s", warning)
    spans = minute_spans(first_s, last_s, len(meters))
    finder = DuplicateFinder()
    for a, b in spans:
        finder.add(reader.frame_hashes(a, b))
    duplicates = finder.duplicates(meters)
    for duplicate in duplicates:
        log.warning("%s", duplicate.warning())
        meters.pop(duplicate.duplicate, None)
    baseline = reader.last_points(first_s - BASELINE_S, first_s)
    minutes = (reader.minutes(a, b) for a, b in spans)
    intervals = without_duplicates(
        intervals_from_minutes(baseline, minutes), duplicates
    )
    return intervals, FleetBook(config, meters), FleetNotes(duplicates, clocks)
