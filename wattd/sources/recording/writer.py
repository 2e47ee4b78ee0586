"""Writing a recording: read chunks appended as lines, crash-safely.

Lines are only ever appended and each is flushed whole, so a crash can at worst
cut the last line, which readers skip. Appending to an existing recording first
drops such a cut line, then adds a new header that starts a segment.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO

from wattd.core.frames import ApiMode
from wattd.errors import CaptureError
from wattd.sources.recording.lines import (
    FORMAT_VERSION,
    RecordingHeader,
    chunk_line,
    parse_header,
)
from wattd.support.closing import Closeable

__all__ = ["RecordingWriter"]


class RecordingWriter(Closeable):
    """Append read chunks to a recording, crash-safely.

    Every chunk is one line, flushed to the OS when written and synced to disk
    at most every ``fsync_interval_s``. ``monotonic_s`` values are turned into
    offsets from ``start_monotonic_s`` (default: the monotonic clock at open).

    Raises:
        CaptureError: if the file exists and neither ``append`` nor
            ``overwrite`` is set, or it cannot be appended to.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        port: str,
        baud: int | None = None,
        api_mode: int | None = None,
        source: str = "wattd record",
        start_wall_ns: int | None = None,
        start_monotonic_s: float | None = None,
        append: bool = False,
        overwrite: bool = False,
        fsync_interval_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.start_monotonic_s = (
            time.monotonic() if start_monotonic_s is None else start_monotonic_s
        )
        self.header = RecordingHeader(
            version=FORMAT_VERSION,
            port=port,
            baud=baud,
            api_mode=int(ApiMode(api_mode)) if api_mode is not None else None,
            start_wall_ns=time.time_ns() if start_wall_ns is None else start_wall_ns,
            source=source,
        )
        self.fsync_interval_s = fsync_interval_s
        self.chunks = 0
        self.bytes = 0
        self._last_t = 0.0
        self._synced_at = time.monotonic()
        self._fh = self._open(append=append, overwrite=overwrite)
        self._fh.write(self.header.to_json().encode() + b"\n")
        self._fh.flush()

    def _open(self, *, append: bool, overwrite: bool) -> IO[bytes]:
        where = str(self.path)
        try:
            if append and self.path.exists() and self.path.stat().st_size > 0:
                fh = self.path.open("r+b")
                try:
                    self._prepare_append(fh)
                except BaseException:
                    fh.close()
                    raise
                return fh
            if overwrite or append:
                return self.path.open("wb")
            return self.path.open("xb")
        except FileExistsError:
            raise CaptureError(
                "file exists; append to it or choose another name", source=where
            ) from None
        except OSError as exc:
            raise CaptureError(
                f"cannot open for writing: {exc.strerror}", source=where
            ) from None

    def _prepare_append(self, fh: IO[bytes]) -> None:
        first = fh.readline(64 * 1024)
        existing = parse_header(first, f"{self.path}:1")
        if existing is None:
            raise CaptureError(
                "not a wattd recording; refusing to append to it", source=str(self.path)
            )
        if (
            existing.api_mode is not None
            and self.header.api_mode is not None
            and existing.api_mode != self.header.api_mode
        ):
            raise CaptureError(
                f"recording is API mode {existing.api_mode}, this port is mode"
                f" {self.header.api_mode}; record to a new file",
                source=str(self.path),
            )
        # A crash may have cut the last line: drop it so the file stays valid.
        end = fh.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(4096, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos < end:
            fh.truncate(pos)
        fh.seek(pos)

    def write(
        self,
        data: bytes,
        *,
        monotonic_s: float | None = None,
        wall_ns: int | None = None,
    ) -> None:
        """Append one chunk, stamped now unless times are given."""
        if not data:
            return
        mono = time.monotonic() if monotonic_s is None else monotonic_s
        wall = time.time_ns() if wall_ns is None else wall_ns
        # Offsets never go back, even if a caller's clocks disagree slightly.
        t = max(self._last_t, mono - self.start_monotonic_s, 0.0)
        self._last_t = t
        self._fh.write(chunk_line(t, wall, data))
        self._fh.flush()
        self.chunks += 1
        self.bytes += len(data)
        now = time.monotonic()
        if now - self._synced_at >= self.fsync_interval_s:
            os.fsync(self._fh.fileno())
            self._synced_at = now

    def close(self) -> None:
        """Flush, sync and close."""
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
