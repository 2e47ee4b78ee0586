"""``wattd simulate``: simulated Tweet-a-Watt traffic on a pty, a file or stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from wattd.cli import EXIT_OK, EXIT_USAGE
from wattd.cli._signals import on_stop_signals
from wattd.errors import ConfigError
from wattd.sources.recording import RecordingWriter, wall_to_ns
from wattd.sources.simulate import (
    METER_SPEC_HELP,
    MeterModel,
    MeterSpec,
    SimFrame,
    SimRunStats,
    Simulator,
    open_pty,
    pace_frames,
    parse_meter_spec,
    run_on_pty,
    varied_meters,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("wattd.sources.simulate")

DEFAULT_METERS = 3
_RAW_SUFFIXES = (".bin", ".raw")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` command."""
    p = subparsers.add_parser(
        "simulate",
        help="generate simulated Tweet-a-Watt frames (pty, file or stdout)",
        description=(
            "Simulate Kill-A-Watt + XBee meters and write their 0x83 frames to a\n"
            "pseudo-terminal (which wattd reads like a USB XBee), a file or stdout.\n"
            "Everything is reproducible from --seed."
        ),
        epilog=METER_SPEC_HELP
        + "\n\nFile output is a wattd recording (JSON lines with arrival times)"
        "\nunless the name ends in .bin/.raw or --format raw is given; stdout"
        "\ngets raw bytes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--meter",
        action="append",
        default=[],
        metavar="SPEC",
        type=_spec_arg,
        help="add one meter (repeatable); syntax below",
    )
    p.add_argument(
        "--meters",
        type=_int_range(1, 65_000),
        metavar="N",
        help=f"add N meters with a varied mix of loads (default {DEFAULT_METERS}"
        " when no --meter is given)",
    )
    p.add_argument("--api-mode", type=int, choices=(1, 2), default=1)
    limit = p.add_mutually_exclusive_group()
    limit.add_argument(
        "--duration", type=_positive_float, metavar="S", help="simulated seconds to run"
    )
    limit.add_argument(
        "--frames",
        type=_int_range(1, 10**9),
        metavar="N",
        help="stop after N frames (dropped ones count)",
    )
    p.add_argument(
        "--speed",
        type=_nonneg_float,
        metavar="X",
        help="1 = real time, N = N times faster, 0 = as fast as possible"
        " (default: 1 with --pty, 0 otherwise)",
    )
    p.add_argument(
        "--noise",
        type=_probability,
        default=0.0,
        metavar="RATE",
        help="per frame: chance of garbage bytes before it, and of a flipped bit",
    )
    p.add_argument(
        "--drop",
        type=_probability,
        default=0.0,
        metavar="RATE",
        help="per frame: chance it never arrives",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--mains-hz", type=int, choices=(50, 60), default=60, help="default 60"
    )
    p.add_argument(
        "--vrms",
        type=_positive_float,
        default=120.0,
        help="nominal mains voltage (default 120)",
    )
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument(
        "--output", "-o", metavar="FILE", help="write to FILE, or - for stdout"
    )
    out.add_argument(
        "--pty",
        action="store_true",
        help="create a pseudo-terminal, print its path and write to it",
    )
    p.add_argument(
        "--link", metavar="PATH", help="with --pty: also make a symlink PATH to it"
    )
    p.add_argument(
        "--format",
        choices=("raw", "recording"),
        help="file output format (default: by file name, see below)",
    )
    p.add_argument(
        "--start-time",
        type=_iso_time,
        metavar="ISO",
        help="wall time of simulated t=0 in recordings (default: now)",
    )
    p.add_argument(
        "--truth",
        metavar="FILE",
        help="also write per-frame true watts/Vrms/Irms as JSON lines",
    )
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``wattd simulate``."""
    if args.link and not args.pty:
        log.error("--link only applies with --pty")
        return EXIT_USAGE
    speed = args.speed if args.speed is not None else (1.0 if args.pty else 0.0)
    if speed == 0 and not args.pty and args.duration is None and args.frames is None:
        log.error("--speed 0 writes as fast as it can: give --duration or --frames")
        return EXIT_USAGE
    sim = Simulator(
        build_meters(
            args.meter,
            count=args.meters,
            seed=args.seed,
            mains_hz=float(args.mains_hz),
            nominal_vrms=args.vrms,
        ),
        seed=args.seed,
        api_mode=args.api_mode,
        noise=args.noise,
        drop_rate=args.drop,
    )
    for meter in sim.meters.values():
        log.debug("meter %d: %s", meter.address, meter.load.spec)
    with contextlib.ExitStack() as stack:
        on_frame = None
        if args.truth:
            on_frame = _truth_writer(stack.enter_context(_open_text(args.truth)))
        stats = asyncio.run(_run(args, sim, speed, on_frame))
    log.info(
        "simulated %.1f s: %d frames (%d dropped, %d corrupted), %d bytes written%s",
        stats.sim_time_s,
        stats.frames,
        stats.dropped,
        stats.corrupted,
        stats.bytes_written,
        f", {stats.overrun_bytes} discarded (nobody reading)"
        if stats.overrun_bytes
        else "",
    )
    return EXIT_OK


def build_meters(
    specs: list[MeterSpec],
    *,
    count: int | None,
    seed: int,
    mains_hz: float,
    nominal_vrms: float,
) -> list[MeterModel]:
    """Meters from specs plus ``count`` varied ones numbered after them.

    Raises:
        ConfigError: if two specs use the same address.
    """
    meters = [
        s.build(seed=seed, mains_hz=mains_hz, nominal_vrms=nominal_vrms) for s in specs
    ]
    seen: set[int] = set()
    for m in meters:
        if m.address in seen:
            raise ConfigError(f"two --meter specs use address {m.address}")
        seen.add(m.address)
    if count is None and not specs:
        count = DEFAULT_METERS
    if count:
        first = max(seen, default=0) + 1
        if first + count - 1 > 0xFFFD:
            raise ConfigError(
                f"{count} more meters after address {first - 1} do not fit"
            )
        meters += varied_meters(
            count,
            seed=seed,
            first_address=first,
            mains_hz=mains_hz,
            nominal_vrms=nominal_vrms,
        )
    return meters


async def _run(
    args: argparse.Namespace,
    sim: Simulator,
    speed: float,
    on_frame: Callable[[SimFrame], None] | None,
) -> SimRunStats:
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        if args.pty:
            return await _run_pty(args, sim, speed, stop, on_frame)
        return await _run_output(args, sim, speed, stop, on_frame)


async def _run_pty(
    args: argparse.Namespace,
    sim: Simulator,
    speed: float,
    stop: asyncio.Event,
    on_frame: Callable[[SimFrame], None] | None,
) -> SimRunStats:
    link = Path(args.link) if args.link else None
    with open_pty() as pty:
        try:
            if link is not None:
                _make_link(link, pty.path)
            # The path alone on stdout, so scripts can read it.
            print(pty.path, flush=True)
            if link is not None:
                log.info("pty %s (link %s)", pty.path, link)
            return await run_on_pty(
                sim,
                pty.master,
                speed=speed,
                until_s=args.duration,
                max_frames=args.frames,
                stop_event=stop,
                slave_fd=pty.slave,
                on_frame=on_frame,
            )
        finally:
            if link is not None and link.is_symlink():
                link.unlink()


def _make_link(link: Path, target: str) -> None:
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise ConfigError(f"{link} exists and is not a symlink; not replacing it")
    try:
        link.symlink_to(target)
    except OSError as exc:
        raise ConfigError(f"cannot create symlink {link}: {exc.strerror}") from None


async def _run_output(
    args: argparse.Namespace,
    sim: Simulator,
    speed: float,
    stop: asyncio.Event,
    on_frame: Callable[[SimFrame], None] | None,
) -> SimRunStats:
    to_stdout = args.output == "-"
    fmt = args.format or (
        "raw" if to_stdout or args.output.endswith(_RAW_SUFFIXES) else "recording"
    )
    start = args.start_time or datetime.now(UTC)
    emit: Callable[[SimFrame], Awaitable[None]]
    with contextlib.ExitStack() as stack:
        if fmt == "recording":
            if to_stdout:
                raise ConfigError("--format recording needs a file, not stdout")
            writer = stack.enter_context(
                RecordingWriter(
                    args.output,
                    port="simulator",
                    baud=9600,
                    api_mode=args.api_mode,
                    source=f"wattd simulate --seed {args.seed}",
                    start_wall_ns=wall_to_ns(start),
                    start_monotonic_s=0.0,
                    overwrite=True,
                )
            )

            async def emit(frame: SimFrame) -> None:
                if frame.data:
                    writer.write(
                        frame.data,
                        monotonic_s=frame.time_s,
                        wall_ns=wall_to_ns(start) + round(frame.time_s * 1e9),
                    )
                if on_frame is not None:
                    on_frame(frame)

        else:
            out: IO[bytes] = (
                sys.stdout.buffer
                if to_stdout
                else stack.enter_context(_open_out(args.output))
            )
            flush_each = speed > 0

            async def emit(frame: SimFrame) -> None:
                if frame.data:
                    out.write(frame.data)
                    if flush_each:
                        out.flush()
                if on_frame is not None:
                    on_frame(frame)

        stats = await pace_frames(
            sim,
            emit,
            speed=speed,
            until_s=args.duration,
            max_frames=args.frames,
            stop_event=stop,
        )
        if to_stdout:
            sys.stdout.buffer.flush()
        return stats


def _open_out(path: str) -> IO[bytes]:
    try:
        return Path(path).open("wb")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _open_text(path: str) -> IO[str]:
    try:
        return Path(path).open("w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _truth_writer(fh: IO[str]) -> Callable[[SimFrame], None]:
    def write(frame: SimFrame) -> None:
        fh.write(
            json.dumps(
                {
                    "t": round(frame.time_s, 6),
                    "address": frame.address,
                    "seq": frame.seq,
                    "watts": frame.true_watts,
                    "vrms": round(frame.true_vrms, 4),
                    "irms": round(frame.true_irms, 6),
                    "dropped": frame.dropped,
                    "corrupted": frame.corrupted,
                },
                separators=(",", ":"),
            )
            + "\n"
        )

    return write


# -- argument types ---------------------------------------------------------------


def _spec_arg(text: str) -> MeterSpec:
    try:
        return parse_meter_spec(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _nonneg_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability 0..1, got {text}")
    return value


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value

    return parse


def _iso_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time like 2024-01-31T12:00:00Z"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone (Z or +hh:mm)")
    return value.astimezone(UTC)
