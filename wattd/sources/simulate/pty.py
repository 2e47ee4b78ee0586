"""The simulator on a pseudo-terminal, which wattd reads like a USB XBee.

:func:`open_pty` makes the raw pty pair; :func:`run_on_pty` writes paced frames
to its master without blocking, discarding what nobody reads in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import NamedTuple

from wattd.errors import SourceError
from wattd.sources.simulate.pacing import SimRunStats, pace_frames
from wattd.sources.simulate.simulator import SimFrame, Simulator


class SimPty(NamedTuple):
    """An open pty pair: the simulator writes ``master``, readers open ``path``."""

    master: int
    slave: int
    path: str


@contextlib.contextmanager
def open_pty() -> Iterator[SimPty]:
    """A new pseudo-terminal pair in raw mode; both ends are closed on exit."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        tty.setraw(master)
        yield SimPty(master, slave, os.ttyname(slave))
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class _FdWriter:
    """Non-blocking writes to a pty master, with a policy for a full buffer."""

    def __init__(
        self,
        fd: int,
        *,
        wait_forever: bool,
        stall_limit_s: float,
        stop_event: asyncio.Event | None,
        slave_fd: int | None,
    ) -> None:
        self.fd = fd
        self.wait_forever = wait_forever
        self.stall_limit_s = stall_limit_s
        self.stop_event = stop_event
        self.slave_fd = slave_fd
        self.overrun_bytes = 0

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        stalled_at: float | None = None
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise SourceError(
                    f"writing to the pty failed: {exc}", source="simulator"
                ) from exc
            view = view[n:]
            if not view:
                return
            if self.stop_event is not None and self.stop_event.is_set():
                self.overrun_bytes += len(view)
                return
            now = time.monotonic()
            stalled_at = stalled_at if stalled_at is not None else now
            if not self.wait_forever and now - stalled_at > self.stall_limit_s:
                # Nobody reads the port: drop what does not fit, as a UART with
                # no host would, and discard the stale backlog so that a reader
                # who attaches later gets current data.
                self.overrun_bytes += len(view)
                if self.slave_fd is not None:
                    with contextlib.suppress(OSError):
                        termios.tcflush(self.slave_fd, termios.TCIFLUSH)
                return
            await _wait_writable(self.fd, 0.05)


async def _wait_writable(fd: int, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await asyncio.wait([ready], timeout=timeout_s)
    finally:
        loop.remove_writer(fd)


async def run_on_pty(
    sim: Simulator,
    master_fd: int,
    *,
    speed: float = 1.0,
    until_s: float | None = None,
    max_frames: int | None = None,
    stop_event: asyncio.Event | None = None,
    slave_fd: int | None = None,
    on_frame: Callable[[SimFrame], None] | None = None,
    stall_limit_s: float = 0.25,
) -> SimRunStats:
    """Write the simulator's frames to a pty master until a limit or the stop event.

    At ``speed`` 0 a full pty buffer makes the writer wait for the reader. When
    paced (speed > 0) it waits at most ``stall_limit_s`` and then discards,
    so real time is kept with or without a reader; given ``slave_fd`` it also
    flushes the unread backlog. ``on_frame`` sees every frame after writing.
    """
    writer = _FdWriter(
        master_fd,
        wait_forever=speed == 0,
        stall_limit_s=stall_limit_s,
        stop_event=stop_event,
        slave_fd=slave_fd,
    )

    async def emit(frame: SimFrame) -> None:
        if frame.data:
            await writer.write(frame.data)
        if on_frame is not None:
            on_frame(frame)

    was_blocking = os.get_blocking(master_fd)
    os.set_blocking(master_fd, False)
    try:
        stats = await pace_frames(
            sim,
            emit,
            speed=speed,
            until_s=until_s,
            max_frames=max_frames,
            stop_event=stop_event,
        )
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(master_fd, was_blocking)
    stats.overrun_bytes = writer.overrun_bytes
    stats.bytes_written -= writer.overrun_bytes
    return stats
