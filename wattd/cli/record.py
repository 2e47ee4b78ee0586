"""``wattd record``: save everything a serial port delivers, with arrival times."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wattd.cli import EXIT_OK
from wattd.cli._args import positive_float
from wattd.cli._invocation import wattd_command
from wattd.cli._signals import on_stop_signals
from wattd.errors import CaptureError, SerialPortGone
from wattd.sources.recording import RecordingWriter
from wattd.sources.serial import describe_open_error, open_port

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("wattd.record")

BAUD_RATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
READ_SIZE: Final = 4096
# How often a blocked read wakes up to check the deadline and Ctrl-C.
_POLL_S: Final = 0.2
_CLOSE_TIMEOUT_S: Final = 2.0

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``record`` command."""
    p = subparsers.add_parser(
        "record",
        help="record a serial port's bytes with arrival times, for replay",
        description=(
            "Append every chunk read from PORT to a wattd recording (JSON lines:"
            " the bytes exactly as read, their monotonic offset and wall time)"
            " until Ctrl-C or --duration. Replay it with"
            f" `{wattd_command()} replay FILE --speed 1`."
        ),
    )
    p.add_argument("port", metavar="PORT", help="serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--output", "-o", required=True, metavar="FILE")
    p.add_argument("--baud", type=int, choices=BAUD_RATES, default=9600)
    p.add_argument("--duration", type=positive_float, metavar="S", help="seconds")
    p.add_argument(
        "--api-mode",
        type=int,
        choices=(1, 2),
        help="the receiver's AP setting, stored in the header"
        " (default: detected when the recording is read)",
    )
    exists = p.add_mutually_exclusive_group()
    exists.add_argument(
        "--append", action="store_true", help="add to FILE if it exists"
    )
    exists.add_argument(
        "--force", action="store_true", help="overwrite FILE if it exists"
    )
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``wattd record``."""
    stats = asyncio.run(_main(args))
    log.info(
        "recorded %d bytes in %d reads over %.1f s to %s",
        stats.bytes,
        stats.chunks,
        stats.duration_s,
        args.output,
    )
    return EXIT_OK


async def _main(args: argparse.Namespace) -> RecordStats:
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        return await record_port(
            args.port,
            Path(args.output),
            baud=args.baud,
            duration_s=args.duration,
            api_mode=args.api_mode,
            append=args.append,
            overwrite=args.force,
            stop_event=stop,
        )


@dataclasses.dataclass(slots=True)
class RecordStats:
    """What one recording session saved."""

    chunks: int = 0
    bytes: int = 0
    duration_s: float = 0.0


def _refuse_existing(output: Path) -> None:
    """Refuse an existing output before the port opens, naming the flags."""
    if output.exists() and not output.is_dir():
        raise CaptureError(
            "file exists; add --append to record onto its end, --force to"
            " replace it, or choose another name",
            source=str(output),
        )


async def record_port(
    port: str,
    output: Path,
    *,
    baud: int = 9600,
    duration_s: float | None = None,
    api_mode: int | None = None,
    append: bool = False,
    overwrite: bool = False,
    stop_event: asyncio.Event | None = None,
    opener: Callable[[str, int], Awaitable[StreamPair]] = open_port,
) -> RecordStats:
    """Record ``port`` into ``output`` until ``duration_s`` or ``stop_event``.

    Everything read before a failure is already on disk when this raises.

    Raises:
        SerialPortGone: the port is missing, busy, or vanished while recording.
        CaptureError: the output file cannot be written (or exists, unless
            ``append``/``overwrite``).
    """
    if not (append or overwrite):
        _refuse_existing(output)
    try:
        reader, writer = await opener(port, baud)
    except OSError as exc:
        # The error names the device already; SerialPortGone prefixes it again.
        text = describe_open_error(port, exc).removeprefix(f"{port} ")
        raise SerialPortGone(text, source=port) from None
    stats = RecordStats()
    try:
        with RecordingWriter(
            output,
            port=port,
            baud=baud,
            api_mode=api_mode,
            append=append,
            overwrite=overwrite,
        ) as rec:
            log.info("recording %s at %d baud to %s", port, baud, output)
            start = rec.start_monotonic_s
            deadline = None if duration_s is None else start + duration_s
            while stop_event is None or not stop_event.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wait = _POLL_S if deadline is None else min(_POLL_S, deadline - now)
                try:
                    async with asyncio.timeout(wait):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    continue
                except OSError as exc:
                    raise SerialPortGone(
                        f"device lost while recording ({exc}); the {stats.bytes}"
                        f" bytes read so far are saved in {output}",
                        source=port,
                    ) from None
                mono = time.monotonic()
                wall_ns = time.time_ns()
                if not data:
                    raise SerialPortGone(
                        f"device closed (end of file); the {stats.bytes} bytes read"
                        f" so far are saved in {output}",
                        source=port,
                    )
                rec.write(data, monotonic_s=mono, wall_ns=wall_ns)
                stats.chunks += 1
                stats.bytes += len(data)
            stats.duration_s = time.monotonic() - start
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await writer.wait_closed()
    return stats
