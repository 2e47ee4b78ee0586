"""The lines of a recording: the header and the chunk records, read and written.

A header line::

    {"format":"wattd-recording","version":1,"port":"/dev/ttyUSB0","baud":9600,
     "api_mode":1,"start_wall_ns":1700000000000000000,...}

and a chunk line (one read from the port)::

    {"t":0.018342,"wall_ns":1700000000018342000,"hex":"7e005483..."}

``t`` is seconds since the start on the monotonic clock (so pacing survives
wall-clock steps); ``wall_ns`` is the wall clock at arrival. Every problem with
a line is a :class:`~wattd.errors.CaptureError` naming file and line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple, TypeGuard

from wattd import __version__
from wattd.errors import CaptureError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Chunk",
    "RecordingHeader",
    "chunk_fields",
    "chunk_line",
    "header_from",
    "parse_header",
    "wall_from_ns",
    "wall_to_ns",
]

FORMAT_NAME: Final = "wattd-recording"
FORMAT_VERSION: Final = 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Chunk(NamedTuple):
    """One read from the port: offset from the start (s), wall time, bytes."""

    offset_s: float
    wall_time: datetime
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RecordingHeader:
    """The first line of a recording (or of an appended segment)."""

    version: int
    port: str
    baud: int | None
    api_mode: int | None
    """None when the recorder did not know; readers then detect it."""
    start_wall_ns: int
    source: str = ""

    @property
    def start_time(self) -> datetime:
        """Wall time of the start, UTC."""
        return wall_from_ns(self.start_wall_ns)

    def to_json(self) -> str:
        """The header line (without newline)."""
        obj = {
            "format": FORMAT_NAME,
            "version": self.version,
            "port": self.port,
            "baud": self.baud,
            "api_mode": self.api_mode,
            "start_wall_ns": self.start_wall_ns,
            "start_time": self.start_time.isoformat().replace("+00:00", "Z"),
            "source": self.source,
            "wattd_version": __version__,
        }
        return json.dumps(obj, separators=(",", ":"))


def wall_from_ns(wall_ns: int) -> datetime:
    """Nanoseconds since the epoch as an aware UTC datetime (microseconds kept)."""
    return _EPOCH + timedelta(microseconds=wall_ns // 1000)


def wall_to_ns(wall: datetime) -> int:
    """An aware datetime as integer nanoseconds since the epoch."""
    delta = wall - _EPOCH
    return (
        delta.days * 86_400 + delta.seconds
    ) * 1_000_000_000 + delta.microseconds * 1000


def chunk_line(t: float, wall_ns: int, data: bytes) -> bytes:
    """The line (with newline) that records ``data`` read at ``t`` and ``wall_ns``."""
    return b'{"t":%.6f,"wall_ns":%d,"hex":"%s"}\n' % (t, wall_ns, data.hex().encode())


def parse_header(line: bytes, where: str) -> RecordingHeader | None:
    """The header in ``line``, or None if the line is not a recording header."""
    stripped = line.strip()
    if not stripped.startswith(b"{"):
        return None
    try:
        obj = json.loads(stripped)
    except ValueError:
        if stripped.startswith(b'{"format"'):
            raise CaptureError(
                "recording header is incomplete or corrupt (the writer stopped while"
                " starting?); the file holds no usable data",
                source=where,
            ) from None
        return None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        return None
    return header_from(obj, where)


def header_from(obj: dict[str, Any], where: str) -> RecordingHeader:
    """The header a parsed header line describes.

    Raises:
        CaptureError: a field is missing or invalid, or the version is newer.
    """
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CaptureError(
            f"header has no valid version (got {version!r})", source=where
        )
    if version > FORMAT_VERSION:
        raise CaptureError(
            f"recording format version {version} is newer than this wattd reads"
            f" ({FORMAT_VERSION}); upgrade wattd",
            source=where,
        )
    start = obj.get("start_wall_ns")
    if not _is_int(start):
        raise CaptureError(
            "header needs start_wall_ns (integer nanoseconds)", source=where
        )
    api_mode = obj.get("api_mode")
    if api_mode is not None and api_mode not in (1, 2):
        raise CaptureError(
            f"header api_mode must be 1, 2 or null, got {api_mode!r}", source=where
        )
    baud = obj.get("baud")
    if baud is not None and not _is_int(baud):
        raise CaptureError(
            f"header baud must be an integer, got {baud!r}", source=where
        )
    return RecordingHeader(
        version=version,
        port=str(obj.get("port", "")),
        baud=baud,
        api_mode=api_mode,
        start_wall_ns=start,
        source=str(obj.get("source", "")),
    )


def chunk_fields(obj: dict[str, Any], where: str) -> tuple[float, int, bytes]:
    """``(t, wall_ns, data)`` of a parsed chunk line.

    Raises:
        CaptureError: a field is missing or invalid.
    """
    t = obj.get("t")
    if (
        not isinstance(t, int | float)
        or isinstance(t, bool)
        or not math.isfinite(t)
        or t < 0
    ):
        raise CaptureError(
            f"'t' must be a number of seconds >= 0, got {t!r}", source=where
        )
    wall_ns = obj.get("wall_ns")
    if not _is_int(wall_ns):
        raise CaptureError(
            f"'wall_ns' must be integer nanoseconds, got {wall_ns!r}", source=where
        )
    text = obj.get("hex")
    if not isinstance(text, str):
        raise CaptureError("'hex' (the bytes read) is missing", source=where)
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise CaptureError(
            "'hex' is not an even-length hex string", source=where
        ) from None
    return float(t), wall_ns, data


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
