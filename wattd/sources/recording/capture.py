"""Loading a capture of either kind, and telling its API mode from its bytes.

A capture is a wattd recording or raw bytes with no timing (like the public
Tweet-a-Watt ``.bin`` files); either may be gzip-compressed. :func:`load_capture`
tells the two apart, finds the API mode when nothing says it
(:func:`detect_api_mode`) and gives a raw capture a synthetic clock
(:func:`split_raw_capture`).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Final, Literal

from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame, ModemStatusFrame, OtherFrame
from wattd.errors import CaptureError
from wattd.sources.recording.lines import Chunk, RecordingHeader, parse_header
from wattd.sources.recording.reader import RecordingReader, open_bytes

__all__ = [
    "DETECT_LIMIT_BYTES",
    "RAW_FRAME_INTERVAL_S",
    "Capture",
    "CaptureKind",
    "detect_api_mode",
    "load_capture",
    "split_raw_capture",
]

log = logging.getLogger(__name__)

# Mean time between frames of one Tweet-a-Watt, measured on real captures.
RAW_FRAME_INTERVAL_S: Final = 2.08
# Enough frames to tell the API modes apart, small enough to stay fast.
DETECT_LIMIT_BYTES: Final = 256 * 1024
_ESCAPED_FORMS: Final = frozenset((0x5E, 0x5D, 0x31, 0x33))

CaptureKind = Literal["recording", "raw"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Capture:
    """A whole capture in memory: its chunks, framing mode and kind.

    For a raw capture the chunk offsets and wall times are synthetic.
    """

    path: Path
    kind: CaptureKind
    api_mode: int
    api_mode_detected: bool
    chunks: tuple[Chunk, ...]
    header: RecordingHeader | None = None
    truncated: bool = False

    @property
    def timed(self) -> bool:
        """True if the offsets are real arrival times (a recording)."""
        return self.kind == "recording"

    @property
    def data(self) -> bytes:
        """All bytes, concatenated."""
        return b"".join(c.data for c in self.chunks)

    @property
    def duration_s(self) -> float:
        """Offset of the last chunk."""
        return self.chunks[-1].offset_s if self.chunks else 0.0


def load_capture(
    path: Path | str,
    *,
    start_wall: datetime | None = None,
    frame_interval_s: float = RAW_FRAME_INTERVAL_S,
) -> Capture:
    """Load a recording or a raw byte capture (either may be gzip-compressed).

    A recording without an API mode in its header, and any raw capture, gets
    its mode from :func:`detect_api_mode`. Raw captures get synthetic times
    starting at ``start_wall`` (default: now); see :func:`split_raw_capture`.

    Raises:
        CaptureError: naming the file (and line) when it cannot be used.
    """
    path = Path(path)
    with open_bytes(path) as fh:
        head, _ = _read_salvaging(fh, 64 * 1024, path)
    header = parse_header(head.split(b"\n", 1)[0], f"{path}:1")
    if header is not None:
        with RecordingReader(path) as reader:
            chunks = tuple(reader)
            truncated = reader.truncated
        mode = header.api_mode
        detected = mode is None
        if mode is None:
            mode = _recorded_mode(chunks, path)
        return Capture(
            path=path,
            kind="recording",
            api_mode=mode,
            api_mode_detected=detected,
            chunks=chunks,
            header=header,
            truncated=truncated,
        )
    with open_bytes(path) as fh:
        data, truncated = _read_salvaging(fh, None, path)
    if not data:
        what = "compressed file cut off before any data" if truncated else "empty file"
        raise CaptureError(f"{what}: nothing to replay", source=str(path))
    mode = detect_api_mode(data, source=str(path))
    return Capture(
        path=path,
        kind="raw",
        api_mode=mode,
        api_mode_detected=True,
        truncated=truncated,
        chunks=split_raw_capture(
            data,
            mode,
            start_wall=start_wall or datetime.now(UTC),
            frame_interval_s=frame_interval_s,
        ),
    )


def _recorded_mode(chunks: tuple[Chunk, ...], path: Path) -> int:
    """API mode of a recording whose header does not say; 1 if the bytes can't tell.

    A recording of a silent or noisy port is still a valid recording, so unlike
    a raw capture it is not refused for holding no frame.
    """
    sample = b"".join(c.data for c in chunks[:4096])[:DETECT_LIMIT_BYTES]
    if not sample:
        return 1
    try:
        return detect_api_mode(sample, source=str(path))
    except CaptureError as exc:
        log.warning("%s; assuming API mode 1", exc)
        return 1


def _read_salvaging(fh: IO[bytes], limit: int | None, path: Path) -> tuple[bytes, bool]:
    """Read up to ``limit`` bytes; a gzip stream cut short keeps what came out."""
    out = bytearray()
    try:
        while limit is None or len(out) < limit:
            block = fh.read(64 * 1024 if limit is None else min(4096, limit - len(out)))
            if not block:
                return bytes(out), False
            out += block
    except EOFError:
        return bytes(out), True
    except OSError as exc:
        raise CaptureError(f"unreadable: {exc}", source=str(path)) from None
    return bytes(out), False


def split_raw_capture(
    data: bytes,
    api_mode: int,
    *,
    start_wall: datetime,
    frame_interval_s: float = RAW_FRAME_INTERVAL_S,
) -> tuple[Chunk, ...]:
    """Cut raw bytes into one chunk per frame and give them a synthetic clock.

    Each chunk ends with a valid frame (bytes before it that are not a frame
    ride along; trailing bytes form a last chunk), so the bytes are unchanged.
    Clock: a sensor's frames are ``frame_interval_s`` apart, as a Tweet-a-Watt
    sends them; a frame never comes before the one ahead of it in the file, so
    several sensors interleave at the same times. Non-IO frames take the time
    of the chunk before them. Wall time is ``start_wall`` plus the offset.
    """
    decoder = FrameDecoder(api_mode)
    events = decoder.feed(data)
    chunks: list[Chunk] = []
    pos = 0
    offset = 0.0
    last_seen: dict[int, float] = {}
    for ev in events:
        if not isinstance(ev, IoSampleFrame | ModemStatusFrame | OtherFrame):
            continue
        at = data.find(ev.raw, pos)
        if at < 0:  # pragma: no cover - a decoded frame is always in its input
            continue
        end = at + len(ev.raw)
        if isinstance(ev, IoSampleFrame):
            prev = last_seen.get(ev.sensor_id)
            if prev is not None:
                offset = max(offset, prev + frame_interval_s)
            last_seen[ev.sensor_id] = offset
        chunks.append(
            Chunk(offset, start_wall + timedelta(seconds=offset), data[pos:end])
        )
        pos = end
    if pos < len(data):
        chunks.append(Chunk(offset, start_wall + timedelta(seconds=offset), data[pos:]))
    return tuple(chunks)


def detect_api_mode(
    data: bytes, *, source: str = "<bytes>", limit: int = DETECT_LIMIT_BYTES
) -> int:
    """Tell API mode 1 from mode 2 by decoding the bytes both ways.

    The mode that yields more checksum-valid frames wins. A tie happens when
    the frames hold no byte that mode 2 escapes; then the frames read the same
    either way, except that a raw 0x11/0x13 (Tweet-a-Watt's sample count is
    0x13) cannot occur in mode 2, so it means mode 1, and otherwise an escape
    pair means mode 2. With no evidence at all the answer is 1.

    Raises:
        CaptureError: if neither mode finds a single valid frame.
    """
    sample = bytes(data[:limit])
    valid: dict[int, list[bytes]] = {}
    for mode in (1, 2):
        decoder = FrameDecoder(mode)
        events = decoder.feed(sample)
        valid[mode] = [
            ev.raw
            for ev in events
            if isinstance(ev, IoSampleFrame | ModemStatusFrame | OtherFrame)
        ]
    n1, n2 = len(valid[1]), len(valid[2])
    if n1 == 0 and n2 == 0:
        raise CaptureError(
            f"no valid XBee API frame in the first {len(sample)} bytes in API mode 1"
            " or 2; check that this is a capture of the XBee port at the right baud",
            source=source,
        )
    if n1 != n2:
        return 1 if n1 > n2 else 2
    if any(0x11 in raw[1:] or 0x13 in raw[1:] for raw in valid[2]):
        return 1
    for raw in valid[1]:
        for k in range(1, len(raw) - 1):
            if raw[k] == 0x7D and raw[k + 1] in _ESCAPED_FORMS:
                return 2
    return 1
