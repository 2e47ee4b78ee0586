from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.pty import Pty, SocatLink
from tests.fixtures.waiting import wait_until
from wattd.config import PortConfig
from wattd.core.frames import FrameDecoder, encode_frame
from wattd.core.iosample import IoSampleFrame, encode_rx16_io
from wattd.sources.serial import Chunk, SerialSource, describe_open_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Clocks the test sets by hand (the source must read them at arrival)."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall_time = T0

    def wall(self) -> datetime:
        return self.wall_time

    def monotonic(self) -> float:
        return self.mono


def tweetawatt_frame(address: int, seed: int, api_mode: int = 1) -> bytes:
    volts = [512 + (seed * 7 + k * 37) % 300 - 150 for k in range(19)]
    amps = [495 + (seed + k * 11) % 40 - 20 for k in range(19)]
    data = encode_rx16_io(address=address, rssi_dbm=-40, analog={0: volts, 4: amps})
    return encode_frame(data, api_mode)


async def keep_sending(fd: int, frame: bytes, reader: Reader, n: int) -> None:
    """Send ``frame`` every 50 ms, as a meter would, until ``n`` bytes arrived.

    A frame sent while the device end is closed may or may not wait for the
    reopen (socat may drop it), so the meter keeps sending.
    """

    def arrived() -> bool:
        if len(reader.data) >= n:
            return True
        os.write(fd, frame)
        return False

    await wait_until(
        arrived,
        timeout_s=5,
        interval_s=0.05,
        what=lambda: f"{n} bytes; got {len(reader.data)}",
    )


class Reader:
    """Runs a source in a task and collects its chunks."""

    def __init__(self, source: SerialSource) -> None:
        self.source = source
        self.chunks: list[Chunk] = []
        self.arrived = asyncio.Event()
        self.arrival_times: list[float] = []

    async def run(self) -> None:
        async with contextlib.aclosing(self.source.chunks()) as chunks:
            async for chunk in chunks:
                self.chunks.append(chunk)
                self.arrival_times.append(time.monotonic())
                self.arrived.set()

    @property
    def data(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    async def wait_bytes(self, n: int, timeout: float = 5.0) -> None:
        await wait_until(
            lambda: len(self.data) >= n,
            timeout_s=timeout,
            interval_s=0.01,
            what=lambda: f"{n} bytes; got {len(self.data)}",
        )


@contextlib.asynccontextmanager
async def reading(source: SerialSource) -> AsyncIterator[Reader]:
    reader = Reader(source)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(reader.run(), name="test-reader")
        try:
            yield reader
        finally:
            task.cancel()


async def test_frames_split_across_reads_decode_with_arrival_times(pty: Pty) -> None:
    clock = FakeClock()
    source = SerialSource(PortConfig(device=pty.path, name="usb0"), clock=clock)
    frames = [tweetawatt_frame(3, i) for i in range(3)]
    wire = b"".join(frames)
    async with reading(source) as reader:
        await asyncio.sleep(0.2)  # the port opens
        # First half of frame 0, then the rest plus frames 1-2, at another time.
        pty.write(wire[:40])
        await reader.wait_bytes(40)
        clock.mono, clock.wall_time = 1002.5, T0 + timedelta(seconds=2.5)
        pty.write(wire[40:])
        await reader.wait_bytes(len(wire))
    assert reader.data == wire
    assert reader.chunks[0].monotonic_s == 1000.0
    assert reader.chunks[0].wall_time == T0
    assert reader.chunks[-1].monotonic_s == 1002.5
    assert reader.chunks[-1].wall_time == T0 + timedelta(seconds=2.5)
    assert {c.port for c in reader.chunks} == {"usb0"}
    assert {c.connection for c in reader.chunks} == {1}
    decoder = FrameDecoder(1)
    events = [e for c in reader.chunks for e in decoder.feed(c.data)]
    assert [type(e) for e in events] == [IoSampleFrame] * 3
    assert all(e.sensor_id == 3 and e.sample_count == 19 for e in events)  # type: ignore[union-attr]
    assert source.status.bytes_read == len(wire)
    assert source.status.connected is False  # closed when the task ended


async def test_frames_waiting_in_the_input_buffer_at_open_are_kept(pty: Pty) -> None:
    clock = FakeClock()
    frames = [tweetawatt_frame(4, i) for i in range(3)]
    # What a reader that died mid-frame left: the tail of one frame, then two
    # whole ones, all on the line before the port is opened again.
    waiting = frames[0][25:] + frames[1] + frames[2]
    pty.write(waiting)
    source = SerialSource(PortConfig(device=pty.path, name="usb0"), clock=clock)
    async with reading(source) as reader:
        await reader.wait_bytes(len(waiting))
        clock.mono, clock.wall_time = 1005.0, T0 + timedelta(seconds=5)
        pty.write(frames[0])
        await reader.wait_bytes(len(waiting) + len(frames[0]))
    assert reader.data == waiting + frames[0]
    # Stamped with the time of the open, not with the next frame's time.
    buffered = [c for c in reader.chunks if c.wall_time == T0]
    assert b"".join(c.data for c in buffered) == waiting
    assert {c.monotonic_s for c in buffered} == {1000.0}
    events = FrameDecoder(1).feed(reader.data)
    decoded = [e for e in events if isinstance(e, IoSampleFrame)]
    assert [e.raw for e in decoded] == [frames[1], frames[2], frames[0]]
    assert len(events) == 4  # and the torn tail, rejected


async def test_missing_device_logged_once_then_read_when_it_appears(
    socat_link: SocatLink, caplog: pytest.LogCaptureFixture
) -> None:
    socat_link.unplug()
    source = SerialSource(PortConfig(device=str(socat_link.device)))
    with caplog.at_level(logging.DEBUG, logger="wattd.sources.serial"):
        async with reading(source) as reader:
            await asyncio.sleep(2.5)  # several retries while absent
            assert reader.chunks == []
            assert source.status.connected is False
            assert source.status.outages == 1
            assert "does not exist" in (source.status.last_error or "")
            socat_link.replug()
            replugged = time.monotonic()
            fd = socat_link.open_peer()
            try:
                await keep_sending(fd, tweetawatt_frame(1, 0), reader, 1)
            finally:
                os.close(fd)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "does not exist" in warnings[0].getMessage()
    retries = [r for r in caplog.records if "still unavailable" in r.getMessage()]
    assert len(retries) >= 2  # it did retry, quietly
    assert reader.arrival_times[0] - replugged < 2.0
    assert any("back after" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
async def test_unplug_and_replug_resumes_reading_within_two_seconds(
    socat_link: SocatLink, caplog: pytest.LogCaptureFixture
) -> None:
    source = SerialSource(PortConfig(device=str(socat_link.device)))
    before = tweetawatt_frame(1, 1)
    after = tweetawatt_frame(1, 2)
    with caplog.at_level(logging.INFO, logger="wattd.sources.serial"):
        async with reading(source) as reader:
            await asyncio.sleep(0.3)
            fd = socat_link.open_peer()
            os.write(fd, before)
            await reader.wait_bytes(len(before))
            os.close(fd)
            socat_link.unplug()
            await asyncio.sleep(2.0)  # gone for a while: several failed reopens
            assert source.status.connected is False
            socat_link.replug()
            replugged = time.monotonic()
            fd = socat_link.open_peer()
            try:
                await keep_sending(fd, after, reader, len(before) + len(after))
            finally:
                os.close(fd)
    assert reader.data.startswith(before + after)
    first_after = next(
        t
        for c, t in zip(reader.chunks, reader.arrival_times, strict=True)
        if c.connection == 2
    )
    assert first_after - replugged < 2.0
    assert source.status.outages == 1
    assert source.status.connections == 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "device lost" in warnings[0].getMessage()


async def test_not_a_serial_device_is_reported_and_retried(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-tty"
    plain.write_bytes(b"")
    source = SerialSource(PortConfig(device=str(plain)), retry_max_s=0.05)
    async with reading(source) as reader:
        await asyncio.sleep(0.3)
    assert reader.chunks == []
    assert source.status.outages == 1
    assert str(plain) in (source.status.last_error or "")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOENT, "does not exist"),
        (errno.EACCES, "group dialout"),
        (errno.EBUSY, "in use"),
        (errno.ENOTTY, "not a serial device"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_open_errors_say_what_to_check(code: int, expected: str) -> None:
    text = describe_open_error("/dev/ttyUSB9", OSError(code, os.strerror(code)))
    assert expected in text
    assert "/dev/ttyUSB9" in text


async def test_two_ports_read_independently(pty: Pty) -> None:
    other = Pty()
    try:
        sources = [
            SerialSource(PortConfig(device=pty.path, name="a")),
            SerialSource(PortConfig(device=other.path, name="b", api_mode=2)),
        ]
        async with reading(sources[0]) as ra, reading(sources[1]) as rb:
            await asyncio.sleep(0.2)
            fa = tweetawatt_frame(1, 0, api_mode=1)
            fb = tweetawatt_frame(2, 0, api_mode=2)
            pty.write(fa)
            other.write(fb)
            await ra.wait_bytes(len(fa))
            await rb.wait_bytes(len(fb))
        assert ra.data == fa
        assert rb.data == fb
        ev_b = FrameDecoder(2).feed(rb.data)
        assert isinstance(ev_b[0], IoSampleFrame)
        assert ev_b[0].sensor_id == 2
    finally:
        other.close()
