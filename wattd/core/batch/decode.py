"""Many XBee frames at once: framing, checksum, 0x83 header and samples as arrays.

Nearly every frame a Tweet-a-Watt sends has one shape: API id 0x83, 19 sample
sets of AD0 and AD4 (mask 0x2200), 84 bytes of frame data, 88 on the wire.
Those are checked and unpacked as rows of one array. Everything else (other
frame types or layouts, and candidates that fail a check in a way the arrays
cannot settle) goes through the per-frame decoder, so the outcome is the same
frame for frame as :class:`~wattd.core.frames.FrameDecoder` gives.

For a byte stream (API mode 1) the scan is the decoder's: every 0x7E is a
candidate, a candidate that is complete, has a plausible length and a matching
checksum and parses is a frame, the scan goes on after it, and anything else
costs its start byte only. The arrays find every candidate's length, checksum
and shape in one pass; only the choice between overlapping candidates, which
is rare, is a loop. The scan stops at the first candidate whose bytes have not
all arrived; the caller keeps those bytes for the next batch. Each frame also
gets the number of bytes that had to arrive before the decoder could report
it, so a replay stamps it with the same chunk's arrival time.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Final

import numpy as np

from wattd.core.frames import (
    MAX_FRAME_DATA_LEN,
    START,
    FrameDecoder,
    FrameEvent,
    RejectReason,
    unescape,
)
from wattd.core.iosample import (
    RX16_IO,
    PayloadRejection,
    parse_frame_data,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = [
    "STANDARD_CHANNELS",
    "STANDARD_SETS",
    "STANDARD_WIRE_LEN",
    "DecodedFrames",
    "StreamDecode",
    "decode_frames",
    "decode_stream",
]

STANDARD_SETS: Final = 19
STANDARD_CHANNELS: Final = (0, 4)
_STANDARD_MASK: Final = 0x2200
_STANDARD_DATA_LEN: Final = 8 + 2 * len(STANDARD_CHANNELS) * STANDARD_SETS
STANDARD_WIRE_LEN: Final = _STANDARD_DATA_LEN + 4
_HEAD: Final = np.array(
    [START, _STANDARD_DATA_LEN >> 8, _STANDARD_DATA_LEN & 0xFF, RX16_IO], np.uint8
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DecodedFrames:
    """Standard frames as arrays, the rest as the per-frame decoder's events.

    ``index`` gives each standard row's position among the inputs (frames or
    stream events); ``others`` holds the other positions' events.
    """

    index: NDArray[np.int64]
    address16: NDArray[np.int64]
    rssi_dbm: NDArray[np.int64]
    samples: NDArray[np.int64]
    """Shape (rows, 19, 2): AD0 and AD4 of each sample set, in counts."""
    others: dict[int, list[FrameEvent]]


def _unpack(rows: NDArray[np.uint8]) -> tuple[NDArray[np.int64], ...]:
    """Address, RSSI and samples of standard wire frames (one per row)."""
    address = (rows[:, 4].astype(np.int64) << 8) | rows[:, 5]
    rssi = -rows[:, 6].astype(np.int64)
    body = np.ascontiguousarray(rows[:, 11:-1])
    words = body.view(">u2").astype(np.int64)
    return address, rssi, words.reshape(len(rows), STANDARD_SETS, 2)


def _standard_rows(rows: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Which wire frames (rows) have the standard shape and a valid checksum."""
    ok: NDArray[np.bool_] = np.all(rows[:, :4] == _HEAD, axis=1)
    ok &= rows[:, 8] == STANDARD_SETS
    ok &= rows[:, 9] == _STANDARD_MASK >> 8
    ok &= rows[:, 10] == _STANDARD_MASK & 0xFF
    ok &= (rows[:, 3:].sum(axis=1, dtype=np.int64) & 0xFF) == 0xFF
    return ok


def decode_frames(raws: Sequence[bytes], api_modes: Sequence[int]) -> DecodedFrames:
    """Decode archived frames, each a whole wire frame in its API mode.

    The result for each equals ``FrameDecoder(mode).feed(raw)``: that is what
    ``others`` holds for the frames that are not of the standard shape.
    """
    plain: list[bytes] = []
    where: list[int] = []
    others: dict[int, list[FrameEvent]] = {}
    for i, (raw, mode) in enumerate(zip(raws, api_modes, strict=True)):
        wire = raw
        if mode == 2 and raw[:1] == b"\x7e" and START not in raw[1:]:
            # One escaped frame holds no raw start byte after its first, so
            # unescaping it gives the frame the mode-2 scan would find.
            wire = b"\x7e" + unescape(raw[1:])
        if len(wire) == STANDARD_WIRE_LEN and (mode != 2 or wire is not raw):
            plain.append(wire)
            where.append(i)
        else:
            others[i] = FrameDecoder(mode).feed(raw)
    rows = np.frombuffer(b"".join(plain), np.uint8).reshape(-1, STANDARD_WIRE_LEN)
    index = np.array(where, np.int64)
    ok = _standard_rows(rows)
    if not ok.all():
        for j in np.flatnonzero(~ok).tolist():
            i = where[j]
            others[i] = FrameDecoder(api_modes[i]).feed(raws[i])
        rows = rows[ok]
        index = index[ok]
    address, rssi, samples = _unpack(rows)
    return DecodedFrames(
        index=index, address16=address, rssi_dbm=rssi, samples=samples, others=others
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StreamDecode:
    """What one batch of a mode-1 byte stream held.

    ``frames`` indexes events in stream order; ``ready_bytes`` gives, per
    event, how many bytes of the batch had to be there before the decoder
    reported it. ``consumed`` bytes are done with; the rest waits for more.
    """

    frames: DecodedFrames
    events: int
    ready_bytes: NDArray[np.int64]
    consumed: int
    rejects: Counter[str]
    frames_ok: int
    garbage_bytes: int


def decode_stream(data: bytes) -> StreamDecode:
    """Scan API mode 1 bytes as :class:`~wattd.core.frames.FrameDecoder` does.

    Rejected candidates are counted by reason (garbage by runs), not returned.
    """
    buf = np.frombuffer(data, np.uint8)
    n = len(buf)
    pos = np.flatnonzero(buf == START).astype(np.int64)
    pad = np.concatenate([buf, np.zeros(STANDARD_WIRE_LEN + 4, np.uint8)])
    length = (pad[pos + 1].astype(np.int64) << 8) | pad[pos + 2]
    bad_len = (length == 0) | (length > MAX_FRAME_DATA_LEN)
    stop = pos + 4 + length
    has_head = pos + 3 <= n
    # A candidate the scan would wait on: its length or its body is still due.
    waiting = ~has_head | (~bad_len & (stop > n))
    complete = has_head & ~bad_len & ~waiting
    # Each candidate's first 88 bytes: a whole frame if it is a standard one.
    rows = np.lib.stride_tricks.sliding_window_view(pad, STANDARD_WIRE_LEN)[pos]
    shaped = complete & (length == _STANDARD_DATA_LEN)
    shaped &= np.all(rows[:, 3:4] == RX16_IO, axis=1)
    shaped &= rows[:, 8] == STANDARD_SETS
    shaped &= rows[:, 9] == _STANDARD_MASK >> 8
    shaped &= rows[:, 10] == _STANDARD_MASK & 0xFF
    sum_ok = np.zeros(len(pos), np.bool_)
    sum_ok[shaped] = (rows[shaped, 3:].sum(axis=1, dtype=np.int64) & 0xFF) == 0xFF
    standard = sum_ok.copy()
    for c in np.flatnonzero(complete & ~shaped).tolist():
        p, s = int(pos[c]), int(stop[c])
        sum_ok[c] = (sum(data[p + 3 : s]) & 0xFF) == 0xFF
    special: dict[int, FrameEvent] = {}
    payload_reject: dict[int, str] = {}
    for c in np.flatnonzero(sum_ok & ~standard).tolist():
        p, s = int(pos[c]), int(stop[c])
        raw = data[p:s]
        parsed = parse_frame_data(raw[3:-1], raw)
        if isinstance(parsed, PayloadRejection):
            payload_reject[c] = str(
                RejectReason.ENCRYPTED if parsed.encrypted else RejectReason.BAD_PAYLOAD
            )
        else:
            special[c] = parsed
    accept = standard.copy()
    if special:
        accept[list(special)] = True
    chosen = np.flatnonzero(accept)
    starts = pos[chosen]
    ends = stop[chosen]
    if len(chosen) > 1:
        # A candidate that starts after every earlier one has ended is a frame
        # whatever was chosen before it; only the overlapping ones (a false
        # candidate inside a real frame) need the scan's choice, in order.
        reach = np.maximum.accumulate(ends)
        clash = np.flatnonzero(starts[1:] < reach[:-1]) + 1
        if len(clash):
            keep = np.ones(len(chosen), np.bool_)
            clashing = np.zeros(len(chosen), np.bool_)
            clashing[clash] = True
            last_end = 0
            for j in clash.tolist():
                if not clashing[j - 1]:
                    # The chain starts at a frame that is certainly kept.
                    last_end = int(ends[j - 1])
                if starts[j] >= last_end:
                    last_end = int(ends[j])
                else:
                    keep[j] = False
            chosen = chosen[keep]
            starts = pos[chosen]
            ends = stop[chosen]
    # Candidates inside an accepted frame are never looked at.
    inside = np.zeros(len(pos), np.bool_)
    if len(starts):
        owner = np.maximum(np.searchsorted(starts, pos, side="right") - 1, 0)
        inside = (pos > starts[owner]) & (pos < ends[owner])
    examined = ~inside
    blocked = np.flatnonzero(examined & waiting)
    consumed = int(pos[blocked[0]]) if len(blocked) else n
    live = pos < consumed
    examined &= live
    keep_mask = starts < consumed
    chosen = chosen[keep_mask]
    need = np.where(bad_len, pos + 3, stop)
    need = np.where(examined, need, 0)
    ready = np.maximum.accumulate(need)[chosen] if len(need) else need
    rejected = examined & ~accept
    rejects: Counter[str] = Counter()
    bad_sum = rejected & ~bad_len & ~sum_ok
    for reason, mask in (
        (RejectReason.BAD_LENGTH, rejected & bad_len),
        (RejectReason.BAD_CHECKSUM, bad_sum),
    ):
        count = int(mask.sum())
        if count:
            rejects[str(reason)] = count
    for c, why in payload_reject.items():
        if examined[c]:
            rejects[why] += 1
    # Every byte is in an accepted frame, is a rejected start byte, or is
    # garbage; runs of garbage lie between those.
    seg_start = np.concatenate([pos[chosen], pos[rejected]])
    seg_end = np.concatenate([stop[chosen], pos[rejected] + 1])
    order = np.argsort(seg_start, kind="stable")
    seg_start, seg_end = seg_start[order], seg_end[order]
    garbage = int(consumed - (seg_end - seg_start).sum())
    if garbage:
        bounds = np.concatenate([[0], seg_end])
        nexts = np.concatenate([seg_start, [consumed]])
        rejects[str(RejectReason.GARBAGE)] = int((nexts > bounds).sum())
    is_std = standard[chosen]
    address, rssi, samples = _unpack(np.ascontiguousarray(rows[chosen[is_std]]))
    order = np.arange(len(chosen), dtype=np.int64)
    others: dict[int, list[FrameEvent]] = {}
    for j in np.flatnonzero(~is_std).tolist():
        others[j] = [special[int(chosen[j])]]
    return StreamDecode(
        frames=DecodedFrames(
            index=order[is_std],
            address16=address,
            rssi_dbm=rssi,
            samples=samples,
            others=others,
        ),
        events=len(chosen),
        ready_bytes=ready,
        consumed=consumed,
        rejects=rejects,
        frames_ok=len(chosen),
        garbage_bytes=garbage,
    )
