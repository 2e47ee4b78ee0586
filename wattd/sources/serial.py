"""Serial ports: bytes from a USB XBee, stamped with their arrival time.

A :class:`SerialSource` owns one device path. It opens the port with
pyserial-asyncio-fast, yields every read as a :class:`Chunk` carrying the wall
clock and the monotonic clock taken the moment the bytes arrived, and never
gives up: a device that is missing at start or vanishes mid-stream (USB unplug)
is logged once per outage and reopened with a short, capped backoff. The cap is
what bounds how long after replugging reading resumes.

Framing is not done here: the bytes go to a :class:`wattd.core.frames.FrameDecoder`
held by the caller, which also copes with frames split across reads. Each
successful open bumps :attr:`Chunk.connection`, so the caller can drop a partial
frame left over from before an unplug.

Bytes that wait in the port's input buffer when it is opened are kept (pyserial
would discard them): a pty, and some USB adapters, hold real and recent frames
there, such as the ones that arrived while the daemon restarted. They come as
the first chunk, stamped with the time of the open; the decoder keeps every
complete frame among them that checksums and rejects the rest, as it does for
any bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

import serial
import serial_asyncio_fast

from wattd.support.backoff import Backoff

if TYPE_CHECKING:
    from wattd.config import PortConfig

log = logging.getLogger(__name__)

# One USB-serial read rarely exceeds a few hundred bytes at 9600 baud; a larger
# limit only matters after a stall, and then fewer, larger chunks are cheaper.
READ_SIZE: Final = 4096

# First retry soon (a replug often re-enumerates within tens of ms), then back
# off, but never beyond RETRY_MAX_S: that cap is the promise "reading resumes
# within ~1 s of the device coming back". Opening a missing path is one failed
# syscall, so retrying once a second costs nothing.
RETRY_INITIAL_S: Final = 0.1
RETRY_MAX_S: Final = 1.0

# Closing a port hands the close to a worker thread; do not hang shutdown on it.
CLOSE_TIMEOUT_S: Final = 2.0


class Clock(Protocol):
    """Wall and monotonic time, kept apart; injectable for tests."""

    def wall(self) -> datetime:
        """Current UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Current monotonic time in seconds."""
        ...


class SystemClock:
    """The real clocks."""

    def wall(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


SYSTEM_CLOCK: Final = SystemClock()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """Bytes as one read delivered them, with arrival times."""

    port: str
    data: bytes
    wall_time: datetime
    monotonic_s: float
    connection: int
    """1 for the first successful open, 2 after the first reconnect, ..."""


@dataclasses.dataclass(slots=True)
class SourceStatus:
    """Live state of one source (read by the stats snapshot)."""

    connected: bool = False
    connections: int = 0
    outages: int = 0
    bytes_read: int = 0
    reads: int = 0
    last_error: str | None = None
    outage_since_monotonic_s: float | None = None
    last_data_monotonic_s: float | None = None


StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[str, int], Awaitable[StreamPair]]


async def open_port(device: str, baud: int) -> StreamPair:
    """Open a serial device as an asyncio stream pair (8N1, no flow control).

    What waited in the input buffer is discarded: the first byte read arrived
    after the open.
    """
    return await serial_asyncio_fast.open_serial_connection(
        url=device,
        baudrate=baud,
        # An advisory lock keeps a second wattd (or `wattd record`) from
        # silently splitting the byte stream with this one.
        exclusive=True,
    )


class _KeepInput(serial.Serial):  # type: ignore[misc]  # pyserial has no types
    """A port whose open leaves the input buffer alone (pyserial flushes it)."""

    _opening = False

    def open(self) -> None:
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False

    def _reset_input_buffer(self) -> None:
        if not self._opening:
            super()._reset_input_buffer()


async def open_port_keeping_input(device: str, baud: int) -> StreamPair:
    """:func:`open_port`, but bytes already in the input buffer are read first."""
    loop = asyncio.get_running_loop()
    # The default pool, not the shared worker: opening a device can block in
    # its driver, and a state save must not wait behind that.
    port = await loop.run_in_executor(
        None, functools.partial(_KeepInput, device, baudrate=baud, exclusive=True)
    )
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await serial_asyncio_fast.connection_for_serial(
        loop, lambda: protocol, port
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class SerialSource:
    """One serial port, read forever with reconnects."""

    def __init__(
        self,
        port: PortConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        opener: Opener = open_port_keeping_input,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        read_size: int = READ_SIZE,
    ) -> None:
        self.port = port
        self.name = port.display_name
        self.status = SourceStatus()
        self._clock = clock
        self._opener = opener
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._read_size = read_size

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """Yield chunks until cancelled; outages are handled inside."""
        backoff = Backoff(initial_s=self._retry_initial_s, max_s=self._retry_max_s)
        problem: str | None = None  # the error already logged for this outage
        while True:
            try:
                reader, writer = await self._opener(self.port.device, self.port.baud)
            except OSError as exc:
                text = describe_open_error(self.port.device, exc)
                problem = self._note_outage(text, problem)
                await asyncio.sleep(backoff.next_delay())
                continue
            self._note_connected(problem is not None)
            problem = None
            backoff.reset()
            connection = self.status.connections
            try:
                while True:
                    try:
                        data = await reader.read(self._read_size)
                    except OSError as exc:
                        text = f"device lost, read failed: {_strerror(exc)}"
                        break
                    if not data:
                        text = "device lost: end of file"
                        break
                    self.status.bytes_read += len(data)
                    self.status.reads += 1
                    mono = self._clock.monotonic()
                    self.status.last_data_monotonic_s = mono
                    yield Chunk(
                        port=self.name,
                        data=data,
                        wall_time=self._clock.wall(),
                        monotonic_s=mono,
                        connection=connection,
                    )
            finally:
                self.status.connected = False
                await _close(writer)
            problem = self._note_outage(text, None)
            # The device vanished under us; a brief pause avoids spinning on a
            # port that opens but fails every read.
            await asyncio.sleep(self._retry_initial_s)

    # -- bookkeeping, one log line per state change --------------------------

    def _note_outage(self, text: str, logged: str | None) -> str:
        status = self.status
        status.last_error = text
        if status.outage_since_monotonic_s is None:
            status.outage_since_monotonic_s = self._clock.monotonic()
            status.outages += 1
            log.warning(
                "port %s: %s; retrying every %.1f s or sooner",
                self.name,
                text,
                self._retry_max_s,
            )
        elif logged != text:
            # Same outage, new reason (unplugged, then the path is gone): worth
            # one line, but not a second warning.
            log.info("port %s: still unavailable: %s", self.name, text)
        else:
            log.debug("port %s: still unavailable: %s", self.name, text)
        return text

    def _note_connected(self, after_outage: bool) -> None:
        status = self.status
        status.connected = True
        status.connections += 1
        since = status.outage_since_monotonic_s
        status.outage_since_monotonic_s = None
        if after_outage and since is not None:
            log.info(
                "port %s: %s is back after %.1f s; reading resumed",
                self.name,
                self.port.device,
                self._clock.monotonic() - since,
            )
        else:
            log.info(
                "port %s: reading %s at %d baud, API mode %d",
                self.name,
                self.port.device,
                self.port.baud,
                self.port.api_mode,
            )


def describe_open_error(device: str, exc: OSError) -> str:
    """Say why a device did not open and what to check."""
    code = exc.errno
    if code == errno.ENOENT:
        return f"{device} does not exist (adapter unplugged, or wrong path?)"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied opening {device}; add the user to group dialout"
            " (or SupplementaryGroups=dialout in the service)"
        )
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        return f"{device} is in use by another program (another wattd, a getty?)"
    if code == errno.ENOTTY:
        return f"{device} is not a serial device"
    return f"cannot open {device}: {_strerror(exc)}"


def _strerror(exc: OSError) -> str:
    if exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # The port is closed in a worker thread; a failed close of a vanished
    # device has nothing left to tell.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()


__all__ = [
    "SYSTEM_CLOCK",
    "Chunk",
    "Clock",
    "SerialSource",
    "SourceStatus",
    "SystemClock",
    "describe_open_error",
    "open_port",
    "open_port_keeping_input",
]
