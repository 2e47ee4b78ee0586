"""``wattd fleet status``: one screen of a fleet, read from its central store.

Nodes (last seen, readings per second, clock offset, spool backlog, decode
errors), meters gone stale or never seen, meters heard by two coordinators
and each customer's data completeness today and this month. The readers are
those of fleet reports (:mod:`wattd.clients.tsdb`); the logic is in
:mod:`wattd.costing.fleetstatus`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from wattd.cli import EXIT_OK, EXIT_USAGE
from wattd.cli._args import add_config, config_path, positive_float
from wattd.cli._invocation import wattd_command
from wattd.cli._store import (
    PASSWORD_ENV,
    SOURCE_HELP,
    add_store_options,
    open_store,
    source_arg,
    store_usage,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wattd.clients.tsdb import TsdbReader
    from wattd.config import Config
    from wattd.costing.fleetstatus import FleetStatus, MeterState

__all__ = ["register"]

log = logging.getLogger(__name__)

STALE_AFTER_S: Final = 600.0
"""A meter silent for longer is stale (the alert rules use the same)."""
DOWN_AFTER_S: Final = 180.0
"""A node with no point and no probe for longer is down: a node sends points
every few seconds and a probe every minute while it delivers."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd fleet`` and its ``status`` command."""
    wattd = wattd_command()
    fleet = subparsers.add_parser(
        "fleet",
        help="the fleet as its central store sees it (status)",
        description="Commands about the whole fleet, read from its central store.",
    )
    sub = fleet.add_subparsers(dest="fleet_command", metavar="COMMAND")
    fleet.set_defaults(func=lambda _args: _help(fleet))
    p = sub.add_parser(
        "status",
        help="nodes, stale meters, double-heard meters and completeness",
        description=(
            "One screen for an operator, from the fleet's central store: every\n"
            "node (last seen, readings/s, clock offset, spool backlog, decode\n"
            "errors), meters stale or never seen (never seen: named in --config's\n"
            "sensors but absent from the store this month), meters heard by two\n"
            "nodes today, and each customer's completeness (minutes with data)\n"
            "today and this month, local to tariffs.timezone."
        ),
        epilog=(
            "examples:\n"
            f"  {wattd} fleet status --source victoriametrics=http://vm:8428\n"
            f"  {PASSWORD_ENV}=... {wattd} fleet status"
            " --source influxdb=http://influx:8086 --database wattd"
            " --username ops --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(p)
    p.add_argument("--source", type=source_arg, metavar="KIND=URL", help=SOURCE_HELP)
    p.add_argument(
        "--stale-after",
        type=positive_float,
        default=STALE_AFTER_S,
        metavar="S",
        help=f"a meter silent this long is stale (default: {STALE_AFTER_S:g})",
    )
    p.add_argument(
        "--down-after",
        type=positive_float,
        default=DOWN_AFTER_S,
        metavar="S",
        help=f"a node silent this long is down (default: {DOWN_AFTER_S:g})",
    )
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    add_store_options(p, "central store")
    p.set_defaults(func=status_command)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def status_command(args: argparse.Namespace) -> int:
    """Read the store and print the status."""
    from wattd.config import load_config

    if args.source is None:
        print("wattd fleet status: give --source KIND=URL", file=sys.stderr)
        return EXIT_USAGE
    problem = store_usage(args)
    if problem:
        print(f"wattd fleet status: {problem}", file=sys.stderr)
        return EXIT_USAGE
    config = load_config(config_path(args))
    status = read_status(
        config,
        open_store(config, args),
        now=datetime.now(UTC),
        stale_after_s=args.stale_after,
        down_after_s=args.down_after,
    )
    if args.json:
        text = json.dumps(status.to_json_dict(), indent=2, ensure_ascii=False) + "\n"
    else:
        text = render_table(status, args.stale_after)
    sys.stdout.write(text)
    return EXIT_OK


def read_status(
    config: Config,
    reader: TsdbReader,
    *,
    now: datetime,
    stale_after_s: float,
    down_after_s: float,
) -> FleetStatus:
    """Everything the screen shows, read from ``reader``."""
    from wattd.costing.clocks import node_clocks
    from wattd.costing.fleet import (
        DuplicateFinder,
        configured_identity,
        fleet_meters,
        minute_spans,
    )
    from wattd.costing.fleetstatus import build_status, whole_minutes
    from wattd.costing.report.periods import period_range
    from wattd.costing.tariff import TariffBook

    tz = TariffBook(config).timezone
    windows = [
        whole_minutes("today", *period_range("day", now, tz)),
        whole_minutes("month", *period_range("month", now, tz)),
    ]
    today = windows[0]
    # The minute under way is read too: its points say who is alive.
    end_s = math.ceil(now.timestamp() / 60) * 60 + 60
    first_s = min(w.start_s for w in windows)
    latest = reader.last_points(first_s, end_s)
    meters, _ = fleet_meters(latest)
    probes = reader.node_probes(first_s, end_s)
    nodes = {m.node for m in meters.values() if m.node} | {p.node for p in probes}
    clocks = node_clocks(reader.clock_probes(first_s, end_s), nodes)
    finder = DuplicateFinder()
    for a, b in minute_spans(today.start_s, end_s, len(meters)):
        finder.add(reader.frame_hashes(a, b))
    configured = [
        key for sensor in config.sensors if (key := configured_identity(sensor))
    ]
    return build_status(
        now_s=now.timestamp(),
        latest=latest,
        probes=probes,
        clocks=clocks,
        configured=configured,
        duplicates=finder.duplicates(meters),
        minutes={w.name: reader.minutes_with_data(w.start_s, w.end_s) for w in windows},
        windows=windows,
        stale_after_s=stale_after_s,
        down_after_s=down_after_s,
    )


def render_table(status: FleetStatus, stale_after_s: float) -> str:
    """The status as text for a terminal."""
    down = sum(1 for n in status.nodes if n.down)
    out = [f"Nodes: {len(status.nodes)}, {down} down"]
    rows = [
        (
            "node",
            "status",
            "last seen",
            "readings/s",
            "clock",
            "spool",
            "oldest pending",
            "decode errors",
        )
    ]
    rows += [
        (
            n.node,
            "DOWN" if n.down else "up",
            _ago(n.age_s),
            _num(n.readings_per_s, "{:.1f}"),
            _num(n.clock_offset_s, "{:+.3f} s"),
            _num(n.spool_depth, "{:.0f}"),
            _num(n.oldest_pending_age_s, "{:.0f} s"),
            _num(n.decode_errors_total, "{:.0f}"),
        )
        for n in status.nodes
    ]
    out += _table(rows)
    out.append("")
    out.append(f"Stale meters (silent > {stale_after_s:g} s): {len(status.stale)}")
    out += _meters(status.stale)
    out.append(f"Never seen (configured, absent this month): {len(status.never_seen)}")
    out += _meters(status.never_seen)
    out.append(f"Heard by two nodes today: {len(status.duplicates)}")
    out += [f"  {d.warning()}" for d in status.duplicates]
    out.append("")
    out.append("Completeness (minutes with data)")
    by_customer: dict[str, dict[str, str]] = {}
    for c in status.completeness:
        ratio = c.ratio
        text = "-" if ratio is None else f"{100 * ratio:.1f} %"
        by_customer.setdefault(c.customer, {})[c.window] = text
    names = [w.name for w in status.windows]
    table = [("customer", *names)]
    table += [
        (customer, *(cells.get(name, "-") for name in names))
        for customer, cells in sorted(by_customer.items())
    ]
    out += _table(table)
    return "\n".join(out) + "\n"


def _meters(meters: tuple[MeterState, ...]) -> list[str]:
    return [
        f"  {m.meter}"
        + (f" (customer {m.customer})" if m.customer else "")
        + (f", last seen {_ago(m.age_s)}" if m.age_s is not None else "")
        for m in meters
    ]


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _ago(age_s: float | None) -> str:
    if age_s is None:
        return "never"
    if age_s < 120:
        return f"{max(0.0, age_s):.0f} s ago"
    if age_s < 7200:
        return f"{age_s / 60:.0f} min ago"
    return f"{age_s / 3600:.1f} h ago"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
