"""Sans-IO XBee API framing: bytes in, frame events out.

Strategy. An API frame is ``7E | LEN(2) | FRAME DATA (LEN bytes) | CHECKSUM``.
In API mode 1 a 0x7E inside a frame is ordinary data (about 5 % of real
Tweet-a-Watt frames carry one), so the decoder never resyncs on every 0x7E: it
trusts a candidate's length, waits for the whole candidate and accepts it only
if the checksum matches and the payload parses. A candidate that fails either
test is rejected and the scan resumes one byte after its start byte, so neither
a corrupt frame nor a false candidate in garbage hides a good frame inside or
after it. Only a false candidate that passes both by chance can (its checksum
matches 1 time in 256, and then its payload must still be a well-formed frame
or one of a type wattd does not parse). In API mode 2 every byte after the
start byte that equals 0x7E, 0x7D, 0x11 or 0x13 is escaped, so a raw 0x7E
always starts a frame and resync is immediate.

Radio noise is routine: problems come back as :class:`FrameRejected` events and
are counted in :class:`DecoderStats`. Nothing here raises on remote data, does IO
or reads a clock.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Final

from wattd.core.iosample import (
    PARSERS,
    RX16_IO,
    IoSampleFrame,
    ModemStatusFrame,
    OtherFrame,
    PayloadRejection,
)
from wattd.errors import FrameError

START: Final = 0x7E
ESCAPE: Final = 0x7D
XON: Final = 0x11
XOFF: Final = 0x13
_ESCAPED_BYTES: Final = frozenset((START, ESCAPE, XON, XOFF))

# The largest frame any XBee 802.15.4 / ZigBee firmware sends is well under 256
# data bytes (RF payloads top out at 100-255 bytes plus a <20-byte header). A
# larger length field is corruption, and waiting for it would delay the frames
# behind it for no gain.
MAX_FRAME_DATA_LEN: Final = 255

# Garbage and rejected frames keep at most this many raw bytes for diagnostics;
# the counters still count every byte.
MAX_REJECT_RAW: Final = 512


class ApiMode(enum.IntEnum):
    """XBee ``AP`` setting: 1 is unescaped, 2 is escaped."""

    UNESCAPED = 1
    ESCAPED = 2


class RejectReason(enum.StrEnum):
    """Why bytes on the wire did not become a frame."""

    BAD_CHECKSUM = "bad_checksum"
    BAD_LENGTH = "bad_length"
    TRUNCATED = "truncated"
    GARBAGE = "garbage"
    BAD_PAYLOAD = "bad_payload"
    ENCRYPTED = "encrypted"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FrameRejected:
    """Bytes that were not a usable frame, with the reason.

    ``raw`` is diagnostic: for a bad checksum or payload it is the whole
    candidate, whose bytes after the start byte are scanned again (API mode 1)
    and may still form a frame.
    """

    reason: RejectReason
    raw: bytes
    detail: str = ""
    nbytes: int = 0
    """Wire bytes this event used up (``raw`` may be cut short, or longer).

    Every fed byte is used up by exactly one event: an accepted frame (its
    ``raw``) or a rejection (its ``nbytes``). A candidate rejected for its length,
    or in API mode 1 for its checksum or payload, uses up only its start byte,
    because the bytes after it are scanned again.
    """
    claimed_address: int | None = None
    """For a bad checksum: the 16-bit source address an 0x83 candidate names.

    Only a hint, since the address bytes may be the corrupted ones: count it
    only against sensors already heard from.
    """

    def __post_init__(self) -> None:
        if not self.nbytes:
            object.__setattr__(self, "nbytes", len(self.raw))


FrameEvent = IoSampleFrame | ModemStatusFrame | OtherFrame | FrameRejected


@dataclasses.dataclass(slots=True)
class DecoderStats:
    """Running counters of one decoder."""

    frames_ok: int = 0
    io_frames: int = 0
    bad_checksum: int = 0
    bad_length: int = 0
    truncated: int = 0
    bad_payload: int = 0
    encrypted: int = 0
    unknown_type: int = 0
    garbage_bytes: int = 0
    garbage_runs: int = dataclasses.field(default=0, compare=False)
    """Garbage events. Runs that arrive in one ``feed`` are merged into one, so
    unlike every other counter this one depends on how the input was chunked,
    which is why it takes no part in comparing two decoders' stats."""

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict."""
        return dataclasses.asdict(self)

    def by_reason(self) -> dict[str, int]:
        """Rejection events by reason, leaving out reasons not seen."""
        counts = {
            RejectReason.BAD_CHECKSUM: self.bad_checksum,
            RejectReason.BAD_LENGTH: self.bad_length,
            RejectReason.TRUNCATED: self.truncated,
            RejectReason.GARBAGE: self.garbage_runs,
            RejectReason.BAD_PAYLOAD: self.bad_payload,
            RejectReason.ENCRYPTED: self.encrypted,
        }
        return {str(reason): n for reason, n in counts.items() if n}

    @property
    def rejected(self) -> int:
        """Frames rejected for any reason (garbage runs not included)."""
        return (
            self.bad_checksum
            + self.bad_length
            + self.truncated
            + self.bad_payload
            + self.encrypted
        )


def checksum(frame_data: bytes | bytearray | memoryview) -> int:
    """Return the XBee checksum of unescaped frame data (API id .. last byte)."""
    return 0xFF - (sum(frame_data) & 0xFF)


def escape(data: bytes | bytearray) -> bytes:
    """Escape bytes for API mode 2."""
    if not any(b in _ESCAPED_BYTES for b in data):
        return bytes(data)
    out = bytearray()
    for b in data:
        if b in _ESCAPED_BYTES:
            out.append(ESCAPE)
            out.append(b ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


_ESCAPE_PAIR: Final = re.compile(rb"\x7d(.)", re.DOTALL)
_UNESCAPED: Final = {bytes((b,)): bytes((b ^ 0x20,)) for b in range(256)}


def _unescape_pair(match: re.Match[bytes]) -> bytes:
    return _UNESCAPED[match.group(1)]


def unescape(data: bytes | bytearray) -> bytes:
    """Undo API mode 2 escaping; a trailing lone escape byte is kept as is."""
    if ESCAPE not in data:
        return bytes(data)
    return _ESCAPE_PAIR.sub(_unescape_pair, data)


def encode_frame(
    frame_data: bytes | bytearray, api_mode: ApiMode | int = ApiMode.UNESCAPED
) -> bytes:
    """Wrap frame data (API id + payload) into a complete wire frame.

    Raises:
        FrameError: if the data is empty or longer than an XBee frame can be.
    """
    n = len(frame_data)
    if not 0 < n <= 0xFFFF:
        raise FrameError(
            f"frame data must be 1..65535 bytes, got {n}; pass API id + payload"
        )
    check = bytes((checksum(frame_data),))
    body = bytes((n >> 8, n & 0xFF)) + bytes(frame_data) + check
    if ApiMode(api_mode) is ApiMode.ESCAPED:
        body = escape(body)
    return bytes((START,)) + body


class FrameDecoder:
    """Turn a serial byte stream into XBee frame events.

    ``feed`` takes whatever the serial port delivered (any chunking) and returns
    the events completed by it. An empty ``feed`` is not end of input: call
    :meth:`close` for that, which reports any incomplete frame left over.
    """

    def __init__(
        self,
        api_mode: ApiMode | int = ApiMode.UNESCAPED,
        *,
        max_frame_data_len: int = MAX_FRAME_DATA_LEN,
    ) -> None:
        self.api_mode = ApiMode(api_mode)
        if not 1 <= max_frame_data_len <= 0xFFFF:
            raise FrameError(
                f"max_frame_data_len must be 1..65535, got {max_frame_data_len}"
            )
        self.max_frame_data_len = max_frame_data_len
        self.stats = DecoderStats()
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[FrameEvent]:
        """Add received bytes and return every event they complete."""
        self._buf += data
        events: list[FrameEvent] = []
        if self.api_mode is ApiMode.UNESCAPED:
            self._scan_unescaped(events)
        else:
            self._scan_escaped(events)
        return events

    def close(self) -> list[FrameEvent]:
        """End of input: report what is left in the buffer as truncated.

        In API mode 1 the leftover candidate may have been waiting for bytes that
        will never come while complete frames sit behind it; those are still
        decoded, so a cut-off frame at the end never hides the frames after it.
        """
        events: list[FrameEvent] = []
        buf = self._buf
        while buf:
            # The scanners only ever stop at a start byte of an unfinished frame.
            cut = len(buf)
            if self.api_mode is ApiMode.UNESCAPED:
                nxt = self._next_complete_candidate(buf)
                if nxt >= 0:
                    cut = nxt
            self._truncated(
                events, buf[:cut], f"input ended inside a frame ({cut} bytes)"
            )
            del buf[:cut]
            if buf:
                self._scan_unescaped(events)
        return events

    def _next_complete_candidate(self, buf: bytearray) -> int:
        """First start byte after ``buf[0]`` that begins a checksum-valid frame."""
        end = len(buf)
        max_len = self.max_frame_data_len
        p = buf.find(START, 1)
        while p >= 0:
            if end - p >= 3:
                length = (buf[p + 1] << 8) | buf[p + 2]
                stop = p + 4 + length
                if (
                    0 < length <= max_len
                    and stop <= end
                    and (sum(buf[p + 3 : stop]) & 0xFF) == 0xFF
                ):
                    return p
            p = buf.find(START, p + 1)
        return -1

    # -- mode 1 ---------------------------------------------------------------

    def _scan_unescaped(self, events: list[FrameEvent]) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        max_len = self.max_frame_data_len
        # Local names: this loop runs once per frame and decides the decode speed.
        find = buf.find
        dispatch = self._dispatch
        append = events.append
        while pos < end:
            start = find(START, pos)
            if start < 0:
                self._garbage(events, buf[pos:end])
                pos = end
                break
            if start > pos:
                self._garbage(events, buf[pos:start])
            pos = start
            if end - start < 3:
                break
            length = (buf[start + 1] << 8) | buf[start + 2]
            if length == 0 or length > max_len:
                self._bad_length(events, buf[start : start + 3], length)
                pos = start + 1
                continue
            stop = start + 4 + length
            if stop > end:
                break
            raw = bytes(buf[start:stop])
            # Summing the whole frame and taking the start and length bytes back
            # out avoids copying the frame data once more.
            if (sum(raw) - START - raw[1] - raw[2]) & 0xFF != 0xFF:
                self.stats.bad_checksum += 1
                events.append(
                    FrameRejected(
                        reason=RejectReason.BAD_CHECKSUM,
                        raw=raw,
                        detail=(
                            f"checksum 0x{raw[-1]:02X} does not match"
                            f" 0x{checksum(raw[3:-1]):02X}"
                        ),
                        # Only the start byte is used up: the rest is scanned again.
                        nbytes=1,
                        claimed_address=_claimed_address(raw, 3),
                    )
                )
                pos = start + 1
                continue
            event = dispatch(raw[3:-1], raw)
            if type(event) is FrameRejected:
                # A payload that does not parse is most likely a false candidate
                # whose checksum matched by chance: it may span a real frame, so
                # its bytes are scanned again, as after a bad checksum.
                append(dataclasses.replace(event, nbytes=1))
                pos = start + 1
                continue
            append(event)
            pos = stop
        del buf[:pos]

    # -- mode 2 ---------------------------------------------------------------

    def _scan_escaped(self, events: list[FrameEvent]) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        max_len = self.max_frame_data_len
        while pos < end:
            start = buf.find(START, pos)
            if start < 0:
                self._garbage(events, buf[pos:end])
                pos = end
                break
            if start > pos:
                self._garbage(events, buf[pos:start])
            pos = start
            nxt = buf.find(START, start + 1)
            seg_end = end if nxt < 0 else nxt
            seg = buf[start + 1 : seg_end]
            if _ends_in_lone_escape(seg):
                # Either its partner byte is still on its way, or (a start byte
                # follows) it was lost; both ways it cannot belong to this frame.
                seg = seg[:-1]
            body = unescape(seg)
            if len(body) < 2:
                if nxt < 0:
                    break
                self._truncated(events, buf[start:nxt], "next frame started")
                pos = nxt
                continue
            length = (body[0] << 8) | body[1]
            if length == 0 or length > max_len:
                self._bad_length(events, buf[start : start + 3], length)
                pos = start + 1
                continue
            need = length + 3
            have = len(body)
            if have < need:
                if nxt < 0:
                    break
                self._truncated(
                    events,
                    buf[start:nxt],
                    f"next frame started after {have - 3} of {length} bytes",
                )
                pos = nxt
                continue
            if have == need:
                stop = start + 1 + len(seg)
            else:
                stop = start + 1 + _escaped_span(seg, need)
            frame = body[2:need]
            if (sum(frame) & 0xFF) != 0xFF:
                self.stats.bad_checksum += 1
                events.append(
                    FrameRejected(
                        reason=RejectReason.BAD_CHECKSUM,
                        raw=bytes(buf[start:stop]),
                        detail=(
                            f"checksum 0x{frame[-1]:02X} does not match"
                            f" 0x{checksum(frame[:-1]):02X}"
                        ),
                        claimed_address=_claimed_address(frame, 0),
                    )
                )
                # In mode 2 no frame can start before the next raw 0x7E.
                pos = stop
                continue
            events.append(self._dispatch(frame[:-1], bytes(buf[start:stop])))
            pos = stop
        del buf[:pos]

    # -- shared ---------------------------------------------------------------

    def _dispatch(self, frame_data: bytes, raw: bytes) -> FrameEvent:
        stats = self.stats
        parser = PARSERS.get(frame_data[0])
        if parser is None:
            stats.frames_ok += 1
            stats.unknown_type += 1
            return OtherFrame(api_id=frame_data[0], data=frame_data, raw=raw)
        parsed = parser(frame_data, raw)
        if isinstance(parsed, IoSampleFrame):
            stats.frames_ok += 1
            stats.io_frames += 1
            return parsed
        if isinstance(parsed, PayloadRejection):
            if parsed.encrypted:
                stats.encrypted += 1
                reason = RejectReason.ENCRYPTED
            else:
                stats.bad_payload += 1
                reason = RejectReason.BAD_PAYLOAD
            return FrameRejected(reason=reason, raw=raw, detail=parsed.detail)
        stats.frames_ok += 1
        return parsed

    def _bad_length(
        self, events: list[FrameEvent], head: bytes | bytearray, length: int
    ) -> None:
        self.stats.bad_length += 1
        events.append(
            FrameRejected(
                reason=RejectReason.BAD_LENGTH,
                raw=bytes(head),
                detail=f"length field {length} outside 1..{self.max_frame_data_len}",
                # Only the start byte is used up: the bytes after it are scanned
                # again (mode 1) or counted as garbage up to the next start (mode 2).
                nbytes=1,
            )
        )

    def _garbage(self, events: list[FrameEvent], raw: bytes | bytearray) -> None:
        self.stats.garbage_bytes += len(raw)
        if events:
            last = events[-1]
            if isinstance(last, FrameRejected) and last.reason is RejectReason.GARBAGE:
                # Merge runs split by a rejected start byte into one event.
                count = last.nbytes + len(raw)
                events[-1] = FrameRejected(
                    reason=RejectReason.GARBAGE,
                    raw=(last.raw + bytes(raw))[:MAX_REJECT_RAW],
                    detail=f"{count} bytes outside any frame",
                    nbytes=count,
                )
                return
        self.stats.garbage_runs += 1
        events.append(
            FrameRejected(
                reason=RejectReason.GARBAGE,
                raw=bytes(raw[:MAX_REJECT_RAW]),
                detail=f"{len(raw)} bytes outside any frame",
                nbytes=len(raw),
            )
        )

    def _truncated(
        self, events: list[FrameEvent], raw: bytes | bytearray, why: str
    ) -> None:
        self.stats.truncated += 1
        events.append(
            FrameRejected(
                reason=RejectReason.TRUNCATED,
                raw=bytes(raw[:MAX_REJECT_RAW]),
                detail=f"incomplete frame: {why}",
                nbytes=len(raw),
            )
        )


def _claimed_address(frame: bytes | bytearray, at: int) -> int | None:
    """The 16-bit source address of an 0x83 frame whose API id is ``frame[at]``.

    ``frame`` ends in the checksum byte, which is never read as an address.
    """
    if len(frame) - at < 4 or frame[at] != RX16_IO:
        return None
    return (frame[at + 1] << 8) | frame[at + 2]


def _ends_in_lone_escape(seg: bytes | bytearray) -> bool:
    """True if the last byte of ``seg`` is an escape byte without its partner."""
    if not seg or seg[-1] != ESCAPE:
        return False
    # Escape pairs are read left to right, and a run of escape bytes always
    # starts on a pair boundary, so the last one is alone iff the run is odd.
    run = len(seg) - len(seg.rstrip(b"\x7d"))
    return run % 2 == 1


def _escaped_span(seg: bytes | bytearray, unescaped_len: int) -> int:
    """Return how many escaped bytes of ``seg`` make ``unescaped_len`` bytes.

    ``seg`` must not end in a lone escape byte and must hold at least
    ``unescaped_len`` unescaped bytes.
    """
    if ESCAPE not in seg:
        return unescaped_len
    i = 0
    produced = 0
    while produced < unescaped_len:
        i += 2 if seg[i] == ESCAPE else 1
        produced += 1
    return i


__all__ = [
    "MAX_FRAME_DATA_LEN",
    "ApiMode",
    "DecoderStats",
    "FrameDecoder",
    "FrameEvent",
    "FrameRejected",
    "IoSampleFrame",
    "ModemStatusFrame",
    "OtherFrame",
    "RejectReason",
    "checksum",
    "encode_frame",
    "escape",
    "unescape",
]
