"""A byte stream in read chunks, decoded a batch of chunks at a time.

:class:`StreamBatcher` takes what a port delivered, chunk by chunk with each
chunk's arrival times, and hands back the IO frames as a
:class:`~wattd.core.batch.pipeline.FrameBatch` with the times the per-frame
decoder would have stamped them with (those of the chunk that completed
them). API mode 1 is decoded by the arrays; mode 2, where a frame's length
on the wire depends on its escapes, goes through
:class:`~wattd.core.frames.FrameDecoder` and only the power maths is batched.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from wattd.core.batch.decode import DecodedFrames, decode_stream
from wattd.core.batch.frames import FrameBatch
from wattd.core.frames import ApiMode, FrameDecoder, FrameEvent, FrameRejected
from wattd.core.iosample import IoSampleFrame

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Decoded", "StreamBatcher"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Decoded:
    """The IO frames of some chunks, and the other events among them."""

    frames: FrameBatch
    events: list[FrameEvent]
    """Events that are not IO frames (modem status, other frame types)."""


class StreamBatcher:
    """Decode chunks of one port's bytes; counts what was rejected."""

    def __init__(self, api_mode: int, *, port: str = "") -> None:
        self.api_mode = ApiMode(api_mode)
        self.port = port
        self.frames_ok = 0
        self.garbage_bytes = 0
        self.rejects: Counter[str] = Counter()
        self._carry = b""
        self._decoder = FrameDecoder(api_mode)

    def feed(
        self,
        data: Sequence[bytes],
        time_us: Sequence[int],
        monotonic_s: Sequence[float],
    ) -> Decoded:
        """Decode chunks (bytes, wall-clock µs, monotonic s each)."""
        if self.api_mode is ApiMode.ESCAPED:
            events: list[FrameEvent] = []
            owner: list[int] = []
            for j, piece in enumerate(data):
                got = self._decoder.feed(piece)
                events.extend(got)
                owner.extend([j] * len(got))
            return self._scalar(events, owner, time_us, monotonic_s)
        blob = self._carry + b"".join(data)
        ends = len(self._carry) + np.cumsum([len(c) for c in data], dtype=np.int64)
        found = decode_stream(blob)
        self._carry = blob[found.consumed :]
        self.frames_ok += found.frames_ok
        self.garbage_bytes += found.garbage_bytes
        self.rejects.update(found.rejects)
        chunk = np.minimum(
            np.searchsorted(ends, found.ready_bytes, side="left"), len(data) - 1
        )
        times = np.asarray(time_us, np.int64)[chunk]
        monos = np.asarray(monotonic_s, np.float64)[chunk]
        other: list[FrameEvent] = [
            events[0]
            for events in found.frames.others.values()
            if not isinstance(events[0], IoSampleFrame)
        ]
        batch = FrameBatch.build(found.frames, times, monos, [self.port] * found.events)
        return Decoded(frames=batch, events=other)

    def close(self, time_us: int, monotonic_s: float) -> Decoded:
        """End of input: what the bytes held back still give, at the given time."""
        if self.api_mode is ApiMode.UNESCAPED:
            self._decoder = FrameDecoder(self.api_mode)
            events = self._decoder.feed(self._carry)
            self._carry = b""
        else:
            events = []
        events.extend(self._decoder.close())
        return self._scalar(events, [0] * len(events), [time_us], [monotonic_s])

    def _scalar(
        self,
        events: list[FrameEvent],
        owner: list[int],
        time_us: Sequence[int],
        monotonic_s: Sequence[float],
    ) -> Decoded:
        """Events from the per-frame decoder, as a batch of odd rows."""
        io: dict[int, list[FrameEvent]] = {}
        other: list[FrameEvent] = []
        picked: list[int] = []
        for event in events:
            if isinstance(event, FrameRejected):
                self.rejects[str(event.reason)] += 1
                if event.reason == "garbage":
                    self.garbage_bytes += event.nbytes
                continue
            self.frames_ok += 1
            if isinstance(event, IoSampleFrame):
                io[len(picked)] = [event]
                picked.append(len(picked))
            else:
                other.append(event)
        chunks = [
            owner[i] for i, e in enumerate(events) if isinstance(e, IoSampleFrame)
        ]
        empty = DecodedFrames(
            index=np.zeros(0, np.int64),
            address16=np.zeros(0, np.int64),
            rssi_dbm=np.zeros(0, np.int64),
            samples=np.zeros((0, 19, 2), np.int64),
            others=io,
        )
        at = np.array(chunks, np.int64)
        batch = FrameBatch.build(
            empty,
            np.asarray(time_us, np.int64)[at] if len(at) else np.zeros(0, np.int64),
            np.asarray(monotonic_s, np.float64)[at] if len(at) else np.zeros(0),
            [self.port] * len(picked),
        )
        return Decoded(frames=batch, events=other)
