"""Reading a recording lazily, chunk by chunk, as one continuous timeline.

A file may be gzip-compressed. Appended segments (each with its own header)
are joined: a segment's offsets continue after the last chunk before it, plus
the wall-clock gap between them. A last line cut short by a crash is skipped.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, cast

from wattd.errors import CaptureError
from wattd.sources.recording.lines import (
    FORMAT_NAME,
    Chunk,
    chunk_fields,
    header_from,
    parse_header,
    wall_from_ns,
)
from wattd.support.closing import Closeable

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["RecordingReader", "open_bytes"]

_GZIP_MAGIC: Final = b"\x1f\x8b"


def open_bytes(path: Path) -> IO[bytes]:
    """Open a capture or recording for reading, decompressing it if it is gzip.

    Raises:
        CaptureError: the file cannot be opened.
    """
    try:
        fh: IO[bytes] = path.open("rb")
    except OSError as exc:
        raise CaptureError(f"cannot open: {exc.strerror}", source=str(path)) from None
    if fh.read(2) == _GZIP_MAGIC:
        fh.close()
        return cast("IO[bytes]", gzip.open(path, "rb"))
    fh.seek(0)
    return fh


class RecordingReader(Closeable):
    """Read a recording lazily: ``header`` first, then iterate :class:`Chunk` s.

    A last line cut short by a crash is skipped (``truncated`` turns True);
    any other malformed line raises :class:`CaptureError` naming file and line.
    The file closes when iteration ends (or on :meth:`close`); iterate once.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.truncated = False
        self._fh = open_bytes(self.path)
        try:
            first = self._fh.readline(64 * 1024)
        except (OSError, EOFError) as exc:
            self._fh.close()
            raise CaptureError(f"unreadable: {exc}", source=str(self.path)) from None
        header = parse_header(first, f"{self.path}:1")
        if header is None:
            self._fh.close()
            raise CaptureError(
                "not a wattd recording (no header line); raw captures go through"
                " load_capture",
                source=str(self.path),
            )
        self.header = header
        self.segments = 1

    def __iter__(self) -> Iterator[Chunk]:
        header = self.header
        base = 0.0  # added to this segment's t to keep one timeline
        prev_t = 0.0
        last_offset = 0.0
        last_wall_ns: int | None = None
        lineno = 1
        lines = self._lines()
        for raw in lines:
            lineno += 1
            line = raw.strip()
            if not line:
                continue
            where = f"{self.path}:{lineno}"
            try:
                obj = json.loads(line)
            except ValueError:
                if not raw.endswith(b"\n"):
                    # Only the last line can lack its newline: cut by a crash.
                    self.truncated = True
                    return
                raise CaptureError("line is not valid JSON", source=where) from None
            if not isinstance(obj, dict):
                raise CaptureError("line is not a JSON object", source=where)
            if obj.get("format") == FORMAT_NAME:
                seg = header_from(obj, where)
                if (
                    seg.api_mode is not None
                    and header.api_mode is not None
                    and seg.api_mode != header.api_mode
                ):
                    raise CaptureError(
                        f"segment is API mode {seg.api_mode} but the recording is"
                        f" mode {header.api_mode}",
                        source=where,
                    )
                gap = 0.0
                if last_wall_ns is not None:
                    gap = max(0.0, (seg.start_wall_ns - last_wall_ns) / 1e9)
                base = last_offset + gap
                prev_t = 0.0
                self.segments += 1
                continue
            t, wall_ns, data = chunk_fields(obj, where)
            if t < prev_t:
                raise CaptureError(
                    f"time offset {t} goes back from {prev_t}; offsets never decrease",
                    source=where,
                )
            prev_t = t
            last_offset = base + t
            last_wall_ns = wall_ns
            yield Chunk(last_offset, wall_from_ns(wall_ns), data)

    def _lines(self) -> Iterator[bytes]:
        # The file is done with once the lines are: close it even when the
        # caller never calls close().
        try:
            yield from self._fh
        except (OSError, EOFError):
            # A gzip recording cut short: what was decompressed so far is good.
            self.truncated = True
        finally:
            self._fh.close()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()
