"""Reading a recording lazily, chunk by chunk, as one continuous timeline.

A file may be gzip-compressed. Appended segments (each with its own header)
are joined: a segment's offsets continue after the last chunk before it, plus
the wall-clock gap between them. A last line cut short by a crash is skipped.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from binascii import unhexlify
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

__all__ = ["ChunkBatch", "RecordingReader", "open_bytes"]

_GZIP_MAGIC: Final = b"\x1f\x8b"
# A chunk line exactly as the writer puts it (``lines.chunk_line``).
_WRITER_LINE: Final = re.compile(
    rb'\{"t":(\d+\.\d+),"wall_ns":(\d+),"hex":"([0-9a-f]*)"\}\n?'
)


_BLOCK_LINES: Final = 4096


class _CutShort(Exception):
    """The last line was cut short by a crash: reading ends there."""


@dataclasses.dataclass(slots=True)
class _Timeline:
    """Where reading stands: the segment's base offset and the last chunk."""

    base: float = 0.0
    prev_t: float = 0.0
    last_offset: float = 0.0
    last_wall_ns: int | None = None
    lineno: int = 1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChunkBatch:
    """Consecutive chunks as columns: offsets (s), wall clock (ns), bytes."""

    offset_s: list[float]
    wall_ns: list[int]
    data: list[bytes]


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
        for offset, wall_ns, data in self.records():
            yield Chunk(offset, wall_from_ns(wall_ns), data)

    def batches(self, size: int) -> Iterator[ChunkBatch]:
        """The chunks as columns, ``size`` at a time (for the batch path)."""
        offsets: list[float] = []
        walls: list[int] = []
        datas: list[bytes] = []
        for offset, wall_ns, data in self.records():
            offsets.append(offset)
            walls.append(wall_ns)
            datas.append(data)
            if len(offsets) >= size:
                yield ChunkBatch(offset_s=offsets, wall_ns=walls, data=datas)
                offsets, walls, datas = [], [], []
        if offsets:
            yield ChunkBatch(offset_s=offsets, wall_ns=walls, data=datas)

    def records(self) -> Iterator[tuple[float, int, bytes]]:
        """``(offset_s, wall_ns, data)`` of each chunk, on one timeline."""
        at = _Timeline()
        try:
            for block in self._blocks():
                for raw in block:
                    got = self._line(raw, at)
                    if got is not None:
                        yield got
        except _CutShort:
            return

    def _line(self, raw: bytes, at: _Timeline) -> tuple[float, int, bytes] | None:
        """One line's record, or None for a header or blank line.

        Raises:
            CaptureError: the line is malformed.
            _CutShort: it is a last line cut short (``truncated`` is set).
        """
        at.lineno += 1
        found = _WRITER_LINE.fullmatch(raw)
        if found is not None:
            # The writer's own layout: no need for the JSON parser.
            t = float(found[1])
            wall_ns = int(found[2])
            try:
                data = unhexlify(found[3])
            except ValueError:
                found = None
        if found is None:
            line = raw.strip()
            if not line:
                return None
            where = f"{self.path}:{at.lineno}"
            try:
                obj = json.loads(line)
            except ValueError:
                if not raw.endswith(b"\n"):
                    # Only the last line can lack its newline: cut by a crash.
                    self.truncated = True
                    raise _CutShort from None
                raise CaptureError("line is not valid JSON", source=where) from None
            if not isinstance(obj, dict):
                raise CaptureError("line is not a JSON object", source=where)
            if obj.get("format") == FORMAT_NAME:
                self._segment(obj, where, at)
                return None
            t, wall_ns, data = chunk_fields(obj, where)
        if t < at.prev_t:
            raise CaptureError(
                f"time offset {t} goes back from {at.prev_t}; offsets never decrease",
                source=f"{self.path}:{at.lineno}",
            )
        at.prev_t = t
        at.last_offset = at.base + t
        at.last_wall_ns = wall_ns
        return at.last_offset, wall_ns, data

    def _segment(self, obj: dict[str, object], where: str, at: _Timeline) -> None:
        """A header line that starts an appended segment."""
        header = self.header
        seg = header_from(obj, where)
        if (
            seg.api_mode is not None
            and header.api_mode is not None
            and seg.api_mode != header.api_mode
        ):
            raise CaptureError(
                f"segment is API mode {seg.api_mode} but the recording"
                f" is mode {header.api_mode}",
                source=where,
            )
        gap = 0.0
        if at.last_wall_ns is not None:
            gap = max(0.0, (seg.start_wall_ns - at.last_wall_ns) / 1e9)
        at.base = at.last_offset + gap
        at.prev_t = 0.0
        self.segments += 1

    def _blocks(self) -> Iterator[list[bytes]]:
        # The file is done with once the lines are: close it even when the
        # caller never calls close().
        block: list[bytes] = []
        try:
            for line in self._fh:
                block.append(line)
                if len(block) >= _BLOCK_LINES:
                    yield block
                    block = []
        except (OSError, EOFError):
            # A gzip recording cut short: what was decompressed so far is good.
            self.truncated = True
        finally:
            self._fh.close()
        if block:
            yield block

    @property
    def position(self) -> int | None:
        """How far into the file (bytes as stored) reading has got, if known."""
        raw = getattr(self._fh, "fileobj", self._fh)
        try:
            return None if raw.closed else int(raw.tell())
        except (OSError, ValueError, AttributeError):
            return None

    def close(self) -> None:
        """Close the file."""
        self._fh.close()
