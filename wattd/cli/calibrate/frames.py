"""Where calibrate's frames come from: a capture file or a live serial port.

Either way the result is the sensor's IO frames, decoded exactly as the
daemon decodes them. A live port is read until enough frames arrived, the
timeout passed or Ctrl-C; the daemon must not hold the port meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
import time
from typing import TYPE_CHECKING, Final

from wattd.cli._invocation import wattd_command
from wattd.cli._signals import on_stop_signals
from wattd.errors import CalibrationError, SerialPortGone

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from pathlib import Path

    from wattd.config import Config
    from wattd.core.iosample import IoSampleFrame
    from wattd.sources.serial import Opener

__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_TIMEOUT_S",
    "collect_frames",
    "frames_from_capture",
    "read_port_frames",
]

DEFAULT_FRAMES: Final = 30
"""About a minute of one meter's frames: a 95 % interval of ~0.05 counts."""
DEFAULT_TIMEOUT_S: Final = 180.0
READ_SIZE: Final = 4096
_POLL_S: Final = 0.2


def collect_frames(
    args: argparse.Namespace, config: Config | None
) -> list[IoSampleFrame]:
    """The sensor's IO frames from the capture or the live port.

    Raises:
        CalibrationError: the source holds no frame of the sensor.
    """
    if args.capture is not None:
        frames = frames_from_capture(args.capture, args.sensor, api_mode=args.api_mode)
        if args.frames is not None:
            frames = frames[: args.frames]
        if not frames:
            raise CalibrationError(
                f"{args.capture} holds no IO frame from this sensor; check --sensor"
                f" (`{wattd_command()} replay {shlex.quote(str(args.capture))}"
                " --format table` lists the addresses it contains)",
                sensor=args.sensor,
            )
        return frames
    port_cfg = None
    if config is not None:
        port_cfg = next((p for p in config.ports if p.device == args.port), None)
    baud = args.baud or (port_cfg.baud if port_cfg else 9600)
    api_mode = args.api_mode or (port_cfg.api_mode if port_cfg else 1)
    return asyncio.run(
        _read_live(
            args.port,
            args.sensor,
            baud=baud,
            api_mode=api_mode,
            count=args.frames or DEFAULT_FRAMES,
            timeout_s=args.timeout,
        )
    )


def frames_from_capture(
    path: Path, sensor: int, *, api_mode: int | None = None
) -> list[IoSampleFrame]:
    """Every IO frame of ``sensor`` in a recording or raw capture.

    Raises:
        CaptureError: the file is unreadable or holds no XBee frames.
    """
    from wattd.core.frames import FrameDecoder
    from wattd.core.iosample import IoSampleFrame
    from wattd.sources.recording import load_capture

    capture = load_capture(path)
    decoder = FrameDecoder(api_mode or capture.api_mode)
    events = decoder.feed(capture.data) + decoder.close()
    return [e for e in events if isinstance(e, IoSampleFrame) and e.sensor_id == sensor]


async def _read_live(
    device: str,
    sensor: int,
    *,
    baud: int,
    api_mode: int,
    count: int,
    timeout_s: float,
    opener: Opener | None = None,
) -> list[IoSampleFrame]:
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        return await read_port_frames(
            device,
            sensor,
            baud=baud,
            api_mode=api_mode,
            count=count,
            timeout_s=timeout_s,
            stop_event=stop,
            opener=opener,
        )


async def read_port_frames(
    device: str,
    sensor: int,
    *,
    baud: int = 9600,
    api_mode: int = 1,
    count: int = DEFAULT_FRAMES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stop_event: asyncio.Event | None = None,
    opener: Opener | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[IoSampleFrame]:
    """Read ``count`` IO frames of ``sensor`` from a serial port.

    Stops early (with what it has) at ``timeout_s`` or on ``stop_event``.

    Raises:
        SerialPortGone: the port cannot be opened or vanished.
        CalibrationError: no frame of the sensor arrived at all.
    """
    from wattd.core.frames import FrameDecoder
    from wattd.core.iosample import IoSampleFrame
    from wattd.sources.serial import describe_open_error, open_port

    try:
        reader, writer = await (opener or open_port)(device, baud)
    except OSError as exc:
        text = describe_open_error(device, exc).removeprefix(f"{device} ")
        raise SerialPortGone(
            f"{text}; stop the daemon while calibrating, or calibrate from a"
            f" recording (`{wattd_command()} record {shlex.quote(device)} -o"
            " noload.jsonl`, then --capture noload.jsonl)",
            source=device,
        ) from None
    decoder = FrameDecoder(api_mode)
    frames: list[IoSampleFrame] = []
    others: set[int] = set()
    report = progress or _print_progress
    deadline = time.monotonic() + timeout_s
    try:
        while len(frames) < count and not (stop_event and stop_event.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(
                    reader.read(READ_SIZE), min(_POLL_S, left)
                )
            except TimeoutError:
                continue
            except OSError as exc:
                raise SerialPortGone(f"device lost ({exc})", source=device) from None
            if not data:
                raise SerialPortGone("device closed (end of file)", source=device)
            for event in decoder.feed(data):
                if not isinstance(event, IoSampleFrame):
                    continue
                if event.sensor_id == sensor:
                    frames.append(event)
                    report(len(frames), count)
                else:
                    others.add(event.sensor_id)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
    if not frames:
        heard = (
            f"; heard from sensor(s) {', '.join(map(str, sorted(others)))}"
            if others
            else "; no IO frames at all: check the port, baud and that the meter"
            " is powered"
        )
        raise CalibrationError(
            f"no frame from this sensor in {timeout_s:g} s{heard}", sensor=sensor
        )
    return frames


def _print_progress(have: int, want: int) -> None:
    if sys.stderr.isatty():
        end = "" if have < want else "\n"
        print(f"\rframes: {have}/{want}", end=end, file=sys.stderr, flush=True)
