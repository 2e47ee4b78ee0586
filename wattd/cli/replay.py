"""``wattd replay``: decode a capture or recording into readings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from wattd.cli._invocation import wattd_command
from wattd.cli.output import ReadingWriter
from wattd.config import Config, load_config, pipeline_settings
from wattd.core.frames import (
    FrameDecoder,
    FrameRejected,
    IoSampleFrame,
    ModemStatusFrame,
)
from wattd.core.pipeline import ReadingPipeline
from wattd.errors import CaptureError
from wattd.sources.recording import DETECT_LIMIT_BYTES, detect_api_mode, load_capture
from wattd.sources.replay import ReplayChunk, replay_capture

log = logging.getLogger("wattd.replay")


def register(sub: Any) -> None:
    """Add the ``replay`` command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="decode a raw capture or a recording into readings",
        description=(
            "Decode a raw byte capture or a wattd recording into readings. Use - to"
            " read a live byte stream from stdin (e.g. from"
            f" `{wattd_command()} simulate -o -`)."
        ),
    )
    p.add_argument("capture", help="capture file, recording, or - for stdin")
    p.add_argument("--config", type=Path, help="YAML config with sensor calibration")
    p.add_argument(
        "--format", choices=["jsonl", "table"], default="jsonl", help="output format"
    )
    p.add_argument(
        "--api-mode",
        choices=["auto", "1", "2"],
        default="auto",
        help="XBee API mode of the bytes (default: detect)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="1 = real time, N = N times faster, 0 = as fast as possible"
        " (default: 1 for recordings, 0 for raw captures)",
    )
    p.add_argument(
        "--sensor",
        type=int,
        action="append",
        help="only print readings of this sensor address (repeatable)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    config = load_config(args.config) if args.config else Config()
    forced = None if args.api_mode == "auto" else int(args.api_mode)
    if args.speed is not None and args.speed < 0:
        log.error("--speed must be 0 or more, got %s", args.speed)
        return 2
    replay = Replay(config, ReadingWriter(sys.stdout, args.format), args.sensor)
    if args.capture == "-":
        chunks = _stdin_chunks(forced)
    else:
        chunks = _file_chunks(Path(args.capture), forced, args.speed)
    asyncio.run(replay.run(chunks))
    replay.report(sys.stderr)
    return 0


class Replay:
    """Feeds chunks through decoder and pipeline and writes the readings."""

    def __init__(
        self, config: Config, writer: ReadingWriter, only: list[int] | None
    ) -> None:
        self.pipeline = ReadingPipeline(pipeline_settings(config))
        self.config = config
        self.writer = writer
        self.only = set(only) if only else None
        self.decoder: FrameDecoder | None = None
        self.readings = 0
        self.rejects: Counter[str] = Counter()

    async def run(self, chunks: AsyncIterator[tuple[int, ReplayChunk]]) -> None:
        """Consume every chunk, then flush what the decoder holds."""
        async for mode, chunk in chunks:
            if self.decoder is None:
                self.decoder = FrameDecoder(mode)
            self._handle(self.decoder.feed(chunk.data), chunk)
        if self.decoder is not None:
            end = ReplayChunk(datetime.now(UTC), time.monotonic(), b"")
            self._handle(self.decoder.close(), end)

    def _handle(self, events: list[Any], chunk: ReplayChunk) -> None:
        for ev in events:
            if isinstance(ev, IoSampleFrame):
                reading = self.pipeline.process(
                    ev,
                    time=chunk.wall_time,
                    monotonic_s=chunk.monotonic_s,
                    port="replay",
                )
                for addr in self.pipeline.drain_new_unknown():
                    log.warning(
                        "sensor %d is not in the config: using default calibration"
                        " (current_zero %.1f, %.1f counts/A, %g V, %d Hz);"
                        " add it under sensors: to calibrate it",
                        addr,
                        self._default("current_zero"),
                        self._default("counts_per_amp"),
                        self.config.mains.nominal_vrms,
                        self.config.mains.frequency_hz,
                    )
                if reading is None or (self.only and reading.sensor not in self.only):
                    continue
                self.writer.write(reading)
                self.readings += 1
            elif isinstance(ev, FrameRejected):
                self.rejects[ev.reason.value] += 1
                log.debug("rejected %s: %s", ev.reason, ev.detail)
            elif isinstance(ev, ModemStatusFrame):
                log.info("radio modem status: %s", ev.description)

    @staticmethod
    def _default(field: str) -> float:
        from wattd.config import SensorConfig

        return float(SensorConfig.model_fields[field].default)

    def report(self, stream: TextIO) -> None:
        """Print a one-line summary of what was decoded."""
        stats = self.decoder.stats if self.decoder else None
        parts = [f"{self.readings} readings"]
        if stats is not None:
            parts.append(f"{stats.frames_ok} frames ok")
            parts.extend(f"{n} {reason}" for reason, n in sorted(self.rejects.items()))
            if stats.garbage_bytes:
                parts.append(f"{stats.garbage_bytes} garbage bytes")
        skipped = sum(self.pipeline.skipped.values())
        if skipped:
            parts.append(f"{skipped} frames without a usable waveform")
        stream.write("wattd replay: " + ", ".join(parts) + "\n")


async def _file_chunks(
    path: Path, forced_mode: int | None, speed: float | None
) -> AsyncIterator[tuple[int, ReplayChunk]]:
    capture = load_capture(path)
    mode = forced_mode or capture.api_mode
    if forced_mode and capture.api_mode_detected and forced_mode != capture.api_mode:
        log.warning(
            "%s looks like API mode %d, decoding as mode %d as asked",
            path,
            capture.api_mode,
            forced_mode,
        )
    async for chunk in replay_capture(capture, speed=speed):
        yield mode, chunk


async def _stdin_chunks(
    forced_mode: int | None,
) -> AsyncIterator[tuple[int, ReplayChunk]]:
    """A live byte stream: chunks are stamped with the time they arrive."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.buffer.fileno()
    held = bytearray()
    mode = forced_mode
    while True:
        data = await loop.run_in_executor(None, os.read, fd, 65536)
        now_wall, now_mono = datetime.now(UTC), time.monotonic()
        if mode is None:
            held += data
            if data and len(held) < DETECT_LIMIT_BYTES // 16:
                continue
            if not held:
                return
            try:
                mode = detect_api_mode(bytes(held), source="stdin")
            except CaptureError as exc:
                log.warning("%s; assuming API mode 1", exc)
                mode = 1
            data, held = bytes(held), bytearray()
        if not data:
            return
        yield mode, ReplayChunk(now_wall, now_mono, data)
