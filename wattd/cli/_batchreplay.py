"""``wattd replay`` flat out: a capture decoded and computed in batches.

Used when nothing paces the replay (speed 0, the default for raw captures)
and numpy is installed. The output is the per-frame replay's, line for line:
the batch pipeline keeps the same per-sensor state and the JSON lines are
formatted from its columns. A recording is read as it goes, a batch of
chunks at a time, so a long one never has to fit in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TextIO

from wattd.cli._progress import EXIT_STOPPED, ProgressLine, stop_on_signals
from wattd.config import Config, SensorConfig, pipeline_settings
from wattd.core.iosample import ModemStatusFrame
from wattd.errors import CaptureError
from wattd.sources.recording import Capture, RecordingReader, load_capture
from wattd.sources.recording.lines import wall_to_ns

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from wattd.cli.output import ReadingWriter
    from wattd.core.batch.stream import Decoded

__all__ = [
    "BATCH_CHUNKS",
    "BatchReplay",
    "BatchSource",
    "batch_source",
    "capture_mode",
    "summary_line",
    "warn_unknown",
]

log = logging.getLogger("wattd.replay")

BATCH_CHUNKS: Final = 20_000
"""Chunks per batch: big enough for the arrays to pay, a few MB of memory."""


@dataclasses.dataclass(frozen=True, slots=True)
class Columns:
    """Chunks as columns: wall clock (µs), monotonic (s), bytes."""

    time_us: list[int]
    monotonic_s: list[float]
    data: list[bytes]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BatchSource:
    """A capture to read in batches, and how far through it the reading is."""

    api_mode: int
    batches: Callable[[], Iterator[Columns]]
    done: Callable[[], float | None]
    """The share read so far (None when it cannot be told)."""


def _numpy_here() -> bool:
    """Whether the batch path can run; says so once when it cannot."""
    from wattd.core.batch import UNAVAILABLE_MESSAGE, available

    if available():
        return True
    log.info(UNAVAILABLE_MESSAGE)
    return False


def batch_source(
    path: Path, forced_mode: int | None, speed: float | None
) -> BatchSource | None:
    """The capture as batches, or None (a paced replay, no numpy, no recording).

    Raises:
        CaptureError: a raw capture cannot be used.
    """
    try:
        reader = RecordingReader(path)
    except CaptureError:
        reader = None
    if reader is not None:
        if speed != 0 or reader.header.api_mode is None or not _numpy_here():
            reader.close()
            return None
        return _recording_source(reader, forced_mode or reader.header.api_mode)
    if speed or not _numpy_here():
        return None
    capture = load_capture(path)
    mode = capture_mode(capture, forced_mode, path)
    chunks = capture.chunks
    read = [0]

    def batches() -> Iterator[Columns]:
        for start in range(0, len(chunks), BATCH_CHUNKS):
            part = chunks[start : start + BATCH_CHUNKS]
            read[0] = start + len(part)
            yield Columns(
                [wall_to_ns(c.wall_time) // 1000 for c in part],
                [c.offset_s for c in part],
                [c.data for c in part],
            )

    return BatchSource(
        api_mode=mode,
        batches=batches,
        done=lambda: read[0] / len(chunks) if chunks else 1.0,
    )


def _recording_source(reader: RecordingReader, mode: int) -> BatchSource:
    try:
        size = os.path.getsize(reader.path)
    except OSError:
        size = 0

    def batches() -> Iterator[Columns]:
        with reader:
            for part in reader.batches(BATCH_CHUNKS):
                yield Columns(
                    [ns // 1000 for ns in part.wall_ns], part.offset_s, part.data
                )

    def done() -> float | None:
        if not size:
            return None
        at = reader.position
        # The reader closes the file once it has read the last line.
        return 1.0 if at is None else at / size

    return BatchSource(api_mode=mode, batches=batches, done=done)


def warn_unknown(address: int, config: Config) -> None:
    """The warning for a sensor that the config does not name."""
    log.warning(
        "sensor %d is not in the config: using default calibration"
        " (current_zero %.1f, %.1f counts/A, %g V, %d Hz);"
        " add it under sensors: to calibrate it",
        address,
        float(SensorConfig.model_fields["current_zero"].default),
        float(SensorConfig.model_fields["counts_per_amp"].default),
        config.mains.nominal_vrms,
        config.mains.frequency_hz,
    )


def summary_line(
    readings: int,
    frames_ok: int | None,
    rejects: Counter[str],
    garbage_bytes: int,
    skipped: int,
) -> str:
    """The one-line summary both replay paths print on stderr."""
    parts = [f"{readings} readings"]
    if frames_ok is not None:
        parts.append(f"{frames_ok} frames ok")
        parts.extend(f"{n} {reason}" for reason, n in sorted(rejects.items()))
        if garbage_bytes:
            parts.append(f"{garbage_bytes} garbage bytes")
    if skipped:
        parts.append(f"{skipped} frames without a usable waveform")
    return "wattd replay: " + ", ".join(parts) + "\n"


class BatchReplay:
    """Decode, compute and write a capture a batch at a time."""

    def __init__(
        self,
        config: Config,
        writer: ReadingWriter,
        stream: TextIO,
        fmt: str,
        only: list[int] | None,
    ) -> None:
        from wattd.core.batch.pipeline import BatchPipeline

        self.pipeline = BatchPipeline(pipeline_settings(config))
        self.config = config
        self.writer = writer
        self.stream = stream
        self.fmt = fmt
        self.only = frozenset(only) if only else None
        self.readings = 0

    def run(self, source: BatchSource, *, progress: bool = False) -> int:
        """Replay everything (or until a stop signal); the exit status."""
        from wattd.core.batch.stream import StreamBatcher

        batcher = StreamBatcher(source.api_mode, port="replay")
        line = ProgressLine(sys.stderr, "wattd replay", force=progress)
        started = time.monotonic()
        frames = 0
        with stop_on_signals() as stop:
            for cols in source.batches():
                self._handle(batcher.feed(cols.data, cols.time_us, cols.monotonic_s))
                frames += len(cols.data)
                rate = frames / max(time.monotonic() - started, 1e-9)
                line.show(
                    source.done(), f"{self.readings:,} readings  {rate:,.0f} chunks/s"
                )
                if stop:
                    break
            if not stop:
                now = datetime.now(UTC)
                now_us = wall_to_ns(now) // 1000
                self._handle(batcher.close(now_us, time.monotonic()))
        line.clear()
        self.stream.flush()
        skipped = sum(self.pipeline.skipped.values())
        sys.stderr.write(
            summary_line(
                self.readings,
                batcher.frames_ok,
                batcher.rejects,
                batcher.garbage_bytes,
                skipped,
            )
        )
        if stop:
            sys.stderr.write(
                "wattd replay: stopped by a signal; every line written is complete\n"
            )
            return EXIT_STOPPED
        return 0

    def _handle(self, decoded: Decoded) -> None:
        for event in decoded.events:
            if isinstance(event, ModemStatusFrame):
                log.info("radio modem status: %s", event.description)
        if not len(decoded.frames):
            return
        cols = self.pipeline.process(decoded.frames)
        for address in self.pipeline.drain_new_unknown():
            warn_unknown(address, self.config)
        if self.fmt == "jsonl":
            lines = cols.jsonl(self.only)
            self.stream.writelines(lines)
            self.readings += len(lines)
            return
        for reading in cols.readings():
            if self.only is None or reading.sensor in self.only:
                self.writer.write(reading)
                self.readings += 1


def capture_mode(capture: Capture, forced_mode: int | None, path: Path) -> int:
    """The API mode to decode a capture in; a forced one that disagrees is warned of."""
    if forced_mode and capture.api_mode_detected and forced_mode != capture.api_mode:
        log.warning(
            "%s looks like API mode %d, decoding as mode %d as asked",
            path,
            capture.api_mode,
            forced_mode,
        )
    return forced_mode or capture.api_mode
