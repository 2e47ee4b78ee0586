"""One receiving port: its byte source, its decoder and its health counters.

A :class:`PortReader` turns the chunks its source delivers into
:class:`Decoded` items: every frame event becomes a
:class:`~wattd.core.readings.FrameRecord` for the raw archive, IO sample frames are
handed on for the reading pipeline, and rejections (which the decoder counts
per reason) are logged at most once a minute per reason. No IO and no awaiting
happen here; the supervisor owns the task that pulls chunks from the source.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import TYPE_CHECKING, Final, Protocol

from wattd.core.frames import FrameDecoder, FrameRejected
from wattd.core.iosample import IoSampleFrame, ModemStatusFrame
from wattd.core.readings import FrameRecord
from wattd.core.snapshot import PortSnapshot
from wattd.support.throttle import LogThrottle

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from wattd.config import PortConfig
    from wattd.core.frames import FrameEvent
    from wattd.sources.serial import Chunk

log = logging.getLogger(__name__)

# Frames/s is averaged over this window (a Tweet-a-Watt sends every ~2 s).
RATE_WINDOW_S: Final = 30


class ChunkSource(Protocol):
    """A byte source such as :class:`~wattd.sources.serial.SerialSource`."""

    name: str

    def chunks(self) -> AsyncGenerator[Chunk, None]:
        """Yield chunks forever (handling outages inside)."""
        ...


class RateMeter:
    """Events per second over a sliding window of whole seconds."""

    def __init__(self, window_s: int = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._buckets: collections.deque[list[int]] = collections.deque()
        self._first: float | None = None

    def add(self, now_s: float, n: int = 1) -> None:
        """Count ``n`` events at monotonic time ``now_s``."""
        if self._first is None:
            self._first = now_s
        second = int(now_s)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, n])
        self._trim(second)

    def rate(self, now_s: float) -> float:
        """Events per second; the window is shorter right after start-up."""
        if self._first is None:
            return 0.0
        self._trim(int(now_s))
        span = min(float(self.window_s), max(1.0, now_s - self._first))
        return sum(n for _, n in self._buckets) / span

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window_s:
            self._buckets.popleft()


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded:
    """One frame event of a port, ready for the archive and the pipeline."""

    record: FrameRecord
    claimed_sensor: int | None = None
    """For a bad-checksum 0x83 candidate: the address it claims (a hint)."""

    @property
    def frame(self) -> IoSampleFrame | None:
        """Set for IO sample frames: the input of the reading pipeline."""
        return self.record.io_frame


class PortReader:
    """Decoder and counters of one port."""

    def __init__(self, port: PortConfig, source: ChunkSource) -> None:
        self.port = port
        self.name = port.display_name
        self.source = source
        self.decoder = FrameDecoder(port.api_mode)
        self.rate = RateMeter()
        self.modem_status: collections.Counter[str] = collections.Counter()
        self.last_frame_mono: float | None = None
        self._connection = 0
        self._throttle = LogThrottle()

    def decode(self, chunk: Chunk) -> list[Decoded]:
        """Feed one chunk; return what it completed, in order."""
        out: list[Decoded] = []
        if chunk.connection != self._connection:
            if self._connection:
                # Bytes from before a reconnect cannot complete a frame.
                out.extend(self._event(e, chunk) for e in self.decoder.close())
            self._connection = chunk.connection
        out.extend(self._event(e, chunk) for e in self.decoder.feed(chunk.data))
        return out

    def snapshot(self, now_s: float) -> PortSnapshot:
        """Counters and link state for the daemon snapshot."""
        status = getattr(self.source, "status", None)
        stats = self.decoder.stats
        outage_since = getattr(status, "outage_since_monotonic_s", None)
        last = self.last_frame_mono
        return PortSnapshot(
            name=self.name,
            device=self.port.device,
            api_mode=self.port.api_mode,
            baud=self.port.baud,
            connected=bool(getattr(status, "connected", False)),
            connections=int(getattr(status, "connections", 0)),
            outages=int(getattr(status, "outages", 0)),
            last_error=getattr(status, "last_error", None),
            outage_s=None if outage_since is None else now_s - outage_since,
            bytes_read=int(getattr(status, "bytes_read", 0)),
            frames_per_s=self.rate.rate(now_s),
            frames_ok=stats.frames_ok,
            io_frames=stats.io_frames,
            rejected=stats.by_reason(),
            garbage_bytes=stats.garbage_bytes,
            modem_status=dict(self.modem_status),
            last_frame_age_s=None if last is None else now_s - last,
        )

    def _event(self, event: FrameEvent, chunk: Chunk) -> Decoded:
        api_mode = int(self.decoder.api_mode)
        if isinstance(event, FrameRejected):
            return self._rejected(event, chunk)
        self.rate.add(chunk.monotonic_s)
        self.last_frame_mono = chunk.monotonic_s
        if isinstance(event, IoSampleFrame):
            record = FrameRecord(
                time=chunk.wall_time,
                port=self.name,
                api_mode=api_mode,
                kind="io",
                raw=event.raw,
                sensor=event.sensor_id,
                io_frame=event,
            )
            return Decoded(record)
        if isinstance(event, ModemStatusFrame):
            self.modem_status[event.description] += 1
            log.info("port %s: the radio reports %s", self.name, event.description)
        record = FrameRecord(
            time=chunk.wall_time,
            port=self.name,
            api_mode=api_mode,
            kind="other",
            raw=event.raw,
        )
        return Decoded(record)

    def _rejected(self, event: FrameRejected, chunk: Chunk) -> Decoded:
        reason = str(event.reason)
        suppressed = self._throttle.allow(reason)
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning(
                "port %s: rejected %s: %s; %d so far%s",
                self.name,
                reason.replace("_", " "),
                event.detail or f"{event.nbytes} bytes",
                self.decoder.stats.by_reason()[reason],
                more,
            )
        record = FrameRecord(
            time=chunk.wall_time,
            port=self.name,
            api_mode=int(self.decoder.api_mode),
            kind=reason,
            raw=event.raw,
        )
        return Decoded(record, claimed_sensor=event.claimed_address)


__all__ = ["ChunkSource", "Decoded", "PortReader", "RateMeter"]
