"""Recordings of a serial port: the bytes exactly as read, with arrival times.

Format (docs/recording-format.md has the full description): JSON Lines, UTF-8.
The first line is a header object, every further line one read chunk. Lines
are only ever appended, so a crash can at worst cut the last one. Appending to
an existing file adds a new header line that starts a segment; readers join
segments into one continuous timeline. Raw captures (bare bytes, no timing)
are accepted too.

- :mod:`~wattd.sources.recording.lines`: the header and chunk lines
- :mod:`~wattd.sources.recording.reader`: a recording read chunk by chunk
- :mod:`~wattd.sources.recording.writer`: chunks appended, crash-safely
- :mod:`~wattd.sources.recording.capture`: a recording or raw capture loaded
  whole, with its API mode found from the bytes when nothing says it
"""

from __future__ import annotations

from wattd.sources.recording.capture import (
    DETECT_LIMIT_BYTES,
    RAW_FRAME_INTERVAL_S,
    Capture,
    CaptureKind,
    detect_api_mode,
    load_capture,
    split_raw_capture,
)
from wattd.sources.recording.lines import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Chunk,
    RecordingHeader,
    wall_from_ns,
    wall_to_ns,
)
from wattd.sources.recording.reader import RecordingReader
from wattd.sources.recording.writer import RecordingWriter

__all__ = [
    "DETECT_LIMIT_BYTES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "RAW_FRAME_INTERVAL_S",
    "Capture",
    "CaptureKind",
    "Chunk",
    "RecordingHeader",
    "RecordingReader",
    "RecordingWriter",
    "detect_api_mode",
    "load_capture",
    "split_raw_capture",
    "wall_from_ns",
    "wall_to_ns",
]
