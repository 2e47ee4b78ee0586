"""``wattd reprocess``: recompute a time range from the raw frame archive."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TextIO

from wattd.cli import EXIT_OK, EXIT_USAGE
from wattd.cli._args import positive_int
from wattd.cli._progress import (
    EXIT_STOPPED,
    ProgressLine,
    add_progress_argument,
    stop_on_signals,
)
from wattd.cli.query import (
    TIME_HELP,
    UsageError,
    add_config_arguments,
    load_for_store,
    parse_time,
    resolve_sensors,
)
from wattd.errors import ConfigError

if TYPE_CHECKING:
    import argparse

    from wattd.ops.reprocess import ReprocessSummary


_NOTICEABLE_WH: Final = 0.0005


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd reprocess``."""
    parser = subparsers.add_parser(
        "reprocess",
        help="recompute readings, rollups and energy of a range from archived frames",
        description=(
            "After a calibration change: replay the archived frames of a range"
            " through the current config and replace the stored readings, rollups"
            " and energy (later totals shift by the difference). The range is"
            " widened to whole UTC hours. Stop the daemon first; --dry-run only"
            f" reports and may run beside it. Times: {TIME_HELP}."
        ),
    )
    add_config_arguments(parser)
    parser.add_argument("--from", dest="from_", required=True, metavar="T")
    parser.add_argument("--to", required=True, metavar="T")
    parser.add_argument(
        "--dry-run",
        "-n",
        action="store_true",
        help="compute and report, change nothing",
    )
    parser.add_argument(
        "--batch-frames",
        type=positive_int,
        default=None,
        metavar="N",
        help="archived frames decoded at a time (default 20000)",
    )
    add_progress_argument(parser)
    parser.set_defaults(func=reprocess_command)


def reprocess_command(args: argparse.Namespace) -> int:
    """Run ``wattd reprocess``."""
    # Imported here so `wattd --help` stays fast.
    from wattd.ops.reprocess import FRAME_BATCH, ReprocessStopped, reprocess
    from wattd.storage.store import Store, to_ns

    config, path = load_for_store(args)
    if config is None:
        # --db alone: the calibration must still come from somewhere.
        raise ConfigError(
            "reprocess needs the config with the corrected calibration; pass"
            " --config FILE (with --db if the store lives elsewhere)"
        )
    now = datetime.now(UTC)
    try:
        start = parse_time(args.from_, now=now)
        end = parse_time(args.to, now=now)
        if end <= start:
            raise UsageError("--to must be later than --from")
        line = ProgressLine(sys.stderr, "wattd reprocess", force=args.progress)
        started = time.monotonic()

        def progress(frames: int, share: float) -> None:
            rate = frames / max(time.monotonic() - started, 1e-9)
            line.show(share, f"{frames:,} frames  {rate:,.0f} frames/s")

        with Store.open(path) as store, stop_on_signals() as stop:
            sensors = resolve_sensors(args.sensor, config, store.known_sensors())
            try:
                summary = reprocess(
                    store,
                    config,
                    to_ns(start),
                    to_ns(end),
                    now_ns=to_ns(now),
                    sensors=sensors,
                    dry_run=args.dry_run,
                    batch_frames=args.batch_frames or FRAME_BATCH,
                    stop=lambda: bool(stop),
                    on_progress=progress,
                )
            finally:
                line.clear()
    except UsageError as exc:
        print(f"wattd reprocess: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReprocessStopped as exc:
        print(f"wattd reprocess: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    print_summary(summary, sys.stdout)
    return EXIT_OK


def print_summary(summary: ReprocessSummary, out: TextIO) -> None:
    """The human report: range, frames, and per sensor before/after."""
    from wattd.storage.store import from_ns

    def local(time_ns: int) -> str:
        return from_ns(time_ns).astimezone().strftime("%Y-%m-%d %H:%M %Z")

    verb = "would reprocess" if summary.dry_run else "reprocessed"
    out.write(
        f"{verb} {local(summary.from_ns)} to {local(summary.to_ns)}"
        " (widened to whole UTC hours)\n"
    )
    out.write(
        f"frames replayed: {summary.frames}"
        f" (+{summary.warmup_frames} before the range to warm up)"
    )
    if summary.frames_skipped:
        out.write(f"; {summary.frames_skipped} undecodable frames skipped")
    out.write("\n")
    if not summary.sensors:
        out.write("no sensor has readings or frames in that range\n")
        return
    header = (
        "sensor",
        "name",
        "readings_before",
        "readings_after",
        "wh_before",
        "wh_after",
        "wh_change",
        "later_shifted",
    )
    rows = [
        (
            str(c.sensor),
            c.name,
            str(c.readings_before),
            str(c.readings_after),
            f"{c.wh_before:.3f}",
            f"{c.wh_after:.3f}",
            _signed(c.wh_after - c.wh_before),
            str(c.later_readings),
        )
        for c in summary.sensors
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, *rows):
        cells = [
            text.ljust(w) if i == 1 else text.rjust(w)
            for i, (text, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")
    # Below the printed precision a shift is clock rounding, not a change.
    lowered = [c.sensor for c in summary.sensors if c.shift_wh < -_NOTICEABLE_WH]
    raised = [c.sensor for c in summary.sensors if c.shift_wh > _NOTICEABLE_WH]
    if lowered:
        out.write(
            f"note: the stored totals of sensor(s) {_join(lowered)} went down. The"
            " daemon's own counters never go down: on its next start it continues"
            " from the larger of its saved state and the store, so the difference"
            " shows up as one step at that restart\n"
        )
    if raised:
        out.write(
            f"note: the stored totals of sensor(s) {_join(raised)} went up; the"
            " daemon continues from them on its next start\n"
        )
    if summary.dry_run:
        out.write("dry run: nothing was changed\n")


def _signed(wh: float) -> str:
    # Rounding noise should not print as "-0.000".
    return "0.000" if abs(wh) < _NOTICEABLE_WH else f"{wh:+.3f}"


def _join(sensors: list[int]) -> str:
    return ", ".join(str(s) for s in sensors)
