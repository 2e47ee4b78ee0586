"""``wattd backfill``: re-send readings from the local store to the central store.

The points are the InfluxDB sink's own (same measurement, tags, fields and
timestamps), so sending one again is harmless. The store is only read, so this
runs beside the daemon; the checkpoint goes in the state directory. With
``--gaps`` it sends only the ranges the daemon noted as undelivered in the
spool, and closes them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from wattd.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from wattd.cli._args import config_path, positive_int
from wattd.cli._progress import (
    EXIT_STOPPED,
    ProgressLine,
    add_progress_argument,
)
from wattd.cli._signals import on_stop_signals
from wattd.cli.query import (
    TIME_HELP,
    UsageError,
    add_config_arguments,
    load_for_store,
    parse_time,
    resolve_sensors,
)

if TYPE_CHECKING:
    from wattd.config import Config
    from wattd.ops.backfill import BackfillProgress, BackfillResult

__all__ = ["register"]

CHECKPOINT_NAME: Final = "backfill.json"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd backfill``."""
    parser = subparsers.add_parser(
        "backfill",
        help="re-send stored readings to InfluxDB/VictoriaMetrics",
        description=(
            "Send readings from the local store to the server of the influxdb"
            " section, as the same points the InfluxDB sink writes, so a server"
            " that already has them keeps one of each. Resumable: progress is"
            " saved after every batch, and the same command again continues."
            f" Works while the daemon runs. Times: {TIME_HELP}."
        ),
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--to",
        dest="destination",
        required=True,
        choices=["influxdb"],
        help="where to send: the influxdb section's server",
    )
    parser.add_argument(
        "--from", dest="from_", metavar="T", help="range start (default: the first)"
    )
    parser.add_argument("--until", metavar="T", help="range end (default: now)")
    parser.add_argument(
        "--gaps",
        action="store_true",
        help=(
            "send only the ranges the daemon could not deliver (points dropped"
            " from a full spool or refused by the server, noted per meter in the"
            " spool) and mark them closed once the server took them;"
            " see wattd spool status"
        ),
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="forget the saved progress of this range and send it all again",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="points per write (default 10000)",
    )
    parser.add_argument(
        "--max-batches",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N batches; the same command again continues",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"progress file (default: {CHECKPOINT_NAME} in state_dir)",
    )
    add_progress_argument(parser)
    parser.set_defaults(func=backfill_command)


def backfill_command(args: argparse.Namespace) -> int:
    """Run ``wattd backfill``."""
    from wattd.storage.store import Store, to_ns

    try:
        config, store_path = load_for_store(args)
        if config is None:
            msg = "--db needs --config too: the server comes from its influxdb section"
            raise UsageError(msg)
        influx = config.influxdb
        if influx.bucket is None and influx.database is None:
            msg = (
                f"{config_path(args)}: influxdb has neither bucket nor database;"
                " set the one the daemon writes to"
            )
            raise UsageError(msg)
        if args.gaps and (args.from_ or args.until or args.sensor or args.restart):
            msg = "--gaps sends the noted ranges; it takes no --from, --until,"
            msg += " --sensor or --restart"
            raise UsageError(msg)
        if args.gaps:
            return asyncio.run(_backfill_gaps(args, config, store_path))
        now = datetime.now(UTC)
        from_ns = to_ns(parse_time(args.from_, now=now)) if args.from_ else 0
        until_ns = to_ns(parse_time(args.until, now=now) if args.until else now)
        if from_ns >= until_ns:
            raise UsageError("--from must be before --until")
        sensors = None
        if args.sensor:
            with Store.open(store_path, readonly=True) as store:
                known = store.known_sensors()
            sensors = resolve_sensors(args.sensor, config, known)
    except UsageError as exc:
        print(f"wattd backfill: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_backfill(args, config, store_path, from_ns, until_ns, sensors))


async def _backfill(
    args: argparse.Namespace,
    config: Config,
    store_path: Path,
    from_ns: int,
    until_ns: int,
    sensors: list[int] | None,
) -> int:
    from wattd.clients.influx import InfluxTarget, InfluxWriter
    from wattd.ops.backfill import DEFAULT_BATCH_POINTS, BackfillJob, Checkpoint
    from wattd.ops.backfill import run_backfill as run
    from wattd.sinks.influx.lineprotocol import PointEncoder

    target = InfluxTarget.from_config(config.influxdb)
    job = BackfillJob(
        destination=target.describe(),
        from_ns=from_ns,
        until_ns=until_ns,
        open_end=args.until is None,
        sensors=sensors,
        aggregate_s=config.influxdb.aggregate_s,
        batch_points=args.batch_size or DEFAULT_BATCH_POINTS,
        max_batches=args.max_batches,
    )
    path = args.checkpoint or config.state_dir / CHECKPOINT_NAME
    checkpoint = Checkpoint.load(path, job.key, restart=args.restart)
    progress = _Progress(sys.stderr, force=args.progress)
    stop = asyncio.Event()
    writer = InfluxWriter(target)
    try:
        with on_stop_signals(stop.set):
            result = await run(
                job,
                store_path=store_path,
                encoder=PointEncoder.from_config(config),
                writer=writer,
                checkpoint=checkpoint,
                stop=stop,
                on_progress=progress.show,
            )
    finally:
        progress.clear()
        await writer.close()
    _summary(result, target.describe(), sys.stderr)
    return EXIT_STOPPED if stop.is_set() and not result.complete else EXIT_OK


async def _backfill_gaps(
    args: argparse.Namespace, config: Config, store_path: Path
) -> int:
    from wattd.clients.influx import InfluxTarget, InfluxWriter
    from wattd.ops.backfill import DEFAULT_BATCH_POINTS, run_gap_backfill
    from wattd.sinks.influx.lineprotocol import PointEncoder
    from wattd.sinks.influx.sink import STREAM
    from wattd.storage.spool import Spool

    if not config.spool_path.exists():
        print(f"backfill: no spool at {config.spool_path}, so no gaps to close")
        return EXIT_OK
    target = InfluxTarget.from_config(config.influxdb)
    stop = asyncio.Event()
    writer = InfluxWriter(target)
    with Spool.for_config(config, must_exist=True) as spool:
        gaps = spool.open_gaps(STREAM) if STREAM in spool.streams() else []
        if not gaps:
            print("backfill: no open gaps: every point was delivered or re-sent")
            return EXIT_OK
        try:
            with on_stop_signals(stop.set):
                result = await run_gap_backfill(
                    gaps,
                    destination=target.describe(),
                    store_path=store_path,
                    encoder=PointEncoder.from_config(config),
                    writer=writer,
                    checkpoint_path=args.checkpoint
                    or config.state_dir / CHECKPOINT_NAME,
                    close_gap=spool.close_gap,
                    aggregate_s=config.influxdb.aggregate_s,
                    batch_points=args.batch_size or DEFAULT_BATCH_POINTS,
                    stop=stop,
                )
        finally:
            await writer.close()
    rate = result.points_sent / result.elapsed_s if result.elapsed_s > 0 else 0.0
    print(
        f"backfill: closed {result.closed} of {len(gaps)} gap(s), sent"
        f" {result.points_sent:,} points to {target.describe()} in"
        f" {result.elapsed_s:.1f} s ({rate:,.0f} points/s)",
        file=sys.stderr,
    )
    for error in result.errors:
        print(f"backfill: {error}", file=sys.stderr)
    if stop.is_set():
        return EXIT_STOPPED
    if result.still_open:
        print(
            f"backfill: {result.still_open} gap(s) stay open (refused again, or"
            " they grew while being sent); run wattd backfill --gaps again",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


class _Progress:
    """The backfill's progress line (on a terminal, or with ``--progress``)."""

    def __init__(self, out: TextIO, *, force: bool = False) -> None:
        self._line = ProgressLine(out, "backfill", force=force)

    def show(self, p: BackfillProgress) -> None:
        self._line.show(
            p.fraction,
            f"{p.points_sent:,} points  {p.points_per_s:,.0f} points/s",
        )

    def clear(self) -> None:
        self._line.clear()


def _summary(result: BackfillResult, where: str, out: TextIO) -> None:
    rate = f"{result.points_per_s:,.0f} points/s" if result.points_sent else "-"
    line = (
        f"backfill: sent {result.points_sent:,} points in {result.batches_sent:,}"
        f" batches to {where} in {result.elapsed_s:.1f} s ({rate})"
    )
    if result.resumed:
        line += ", continuing from the saved progress"
    print(line, file=out)
    if not result.complete:
        print(
            "backfill: stopped before the end of the range; run the same command"
            " again to continue",
            file=out,
        )
    elif not result.points_sent:
        print("backfill: nothing left to send in that range", file=out)
