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

from wattd.cli._batchreplay import (
    BatchReplay,
    batch_source,
    capture_mode,
    summary_line,
    warn_unknown,
)
from wattd.cli._invocation import wattd_command
from wattd.cli._progress import EXIT_STOPPED, add_progress_argument
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
    add_progress_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    config = load_config(args.config) if args.config else Config()
    forced = None if args.api_mode == "auto" else int(args.api_mode)
    if args.speed is not None and args.speed < 0:
        log.error("--speed must be 0 or more, got %s", args.speed)
        return 2
    writer = ReadingWriter(sys.stdout, args.format)
    if args.capture == "-":
        chunks = _stdin_chunks(forced)
    else:
        path = Path(args.capture)
        source = batch_source(path, forced, args.speed)
        if source is not None:
            replay_batches = BatchReplay(
                config, writer, sys.stdout, args.format, args.sensor
            )
            return replay_batches.run(source, progress=args.progress)
        chunks = _file_chunks(path, forced, args.speed)
    replay = Replay(config, writer, args.sensor)
    try:
        asyncio.run(replay.run(chunks))
    except KeyboardInterrupt:
        sys.stdout.flush()
        replay.report(sys.stderr)
        sys.stderr.write("wattd replay: interrupted; every line written is complete\n")
        return EXIT_STOPPED
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
                    warn_unknown(addr, self.config)
                if reading is None or (self.only and reading.sensor not in self.only):
                    continue
                self.writer.write(reading)
                self.readings += 1
            elif isinstance(ev, FrameRejected):
                self.rejects[ev.reason.value] += 1
                log.debug("rejected %s: %s", ev.reason, ev.detail)
            elif isinstance(ev, ModemStatusFrame):
                log.info("radio modem status: %s", ev.description)

    def report(self, stream: TextIO) -> None:
        """Print a one-line summary of what was decoded."""
        stats = self.decoder.stats if self.decoder else None
        stream.write(
            summary_line(
                self.readings,
                None if stats is None else stats.frames_ok,
                self.rejects,
                0 if stats is None else stats.garbage_bytes,
                sum(self.pipeline.skipped.values()),
            )
        )


async def _file_chunks(
    path: Path, forced_mode: int | None, speed: float | None
) -> AsyncIterator[tuple[int, ReplayChunk]]:
    capture = load_capture(path)
    mode = capture_mode(capture, forced_mode, path)
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
