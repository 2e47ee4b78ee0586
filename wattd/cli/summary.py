"""``wattd summary``: compose the scheduled summaries now, print or post them."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from wattd.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from wattd.cli._args import add_config, config_path

if TYPE_CHECKING:
    from wattd.costing.cost import EnergyInterval

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd summary``."""
    p = subparsers.add_parser(
        "summary",
        help="print (or post) the energy summaries for the last complete period",
        description=(
            "Compose each configured summary for the last complete day, week or\n"
            "month and print it (--dry-run, the default). With --send it is posted\n"
            "to the enabled destinations, once per period: periods already posted\n"
            "(by this command or the daemon) are skipped."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(p)
    p.add_argument(
        "--name",
        action="append",
        default=[],
        help="only this summary (repeatable; default: all)",
    )
    p.add_argument(
        "--at",
        metavar="WHEN",
        help="compose as if it were this time (default: now); local unless an"
        " offset is given",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run",
        dest="send",
        action="store_false",
        help="print only (the default)",
    )
    mode.add_argument(
        "--send", dest="send", action="store_true", help="post to enabled destinations"
    )
    p.add_argument(
        "--readings",
        type=Path,
        metavar="FILE",
        help="JSON lines of readings instead of the store (dry runs and tests)",
    )
    p.set_defaults(func=summary_command, send=False)


def summary_command(args: argparse.Namespace) -> int:
    """Compose, then print or post."""
    from wattd.cli.report import parse_when
    from wattd.config import load_config
    from wattd.sinks.summaries.service import SummaryService
    from wattd.storage.intervals import intervals_from_jsonl

    config = load_config(config_path(args))
    if not config.summaries:
        print(
            "no summaries configured (see summaries: in docs/cost.md)", file=sys.stderr
        )
        return EXIT_USAGE
    names = args.name or list(config.summaries)
    unknown = [n for n in names if n not in config.summaries]
    if unknown:
        print(
            f"no summary {', '.join(unknown)};"
            f" configured: {', '.join(config.summaries)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.send:
        idle = [n for n in names if not config.summaries[n].destinations.enabled]
        if idle:
            print(
                f"summary {', '.join(idle)} has no destination enabled; enable one"
                " under summaries.<name>.destinations (printing instead)",
                file=sys.stderr,
            )
    tz = ZoneInfo(config.tariffs.timezone)
    fired = parse_when(args.at, tz) if args.at else datetime.now(UTC)
    source = None
    if args.readings is not None:
        rows = intervals_from_jsonl(args.readings)

        def source(_start: datetime, _end: datetime) -> list[EnergyInterval]:
            return rows

    service = SummaryService(config, intervals=source)
    failed = False
    for name in names:
        results = asyncio.run(service.handle(name, fired, send=args.send))
        for message, dest, status in results:
            if dest == "dry-run":
                print(f"[{message.key}] {message.text}")
            else:
                print(f"[{message.key}] {dest}: {status}")
                failed |= status in {"failed", "uncertain"}
    return EXIT_ERROR if failed else EXIT_OK
