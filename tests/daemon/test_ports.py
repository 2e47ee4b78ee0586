from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Literal

import pytest

from wattd.config import PortConfig
from wattd.core.frames import encode_frame
from wattd.core.iosample import encode_rx16_io
from wattd.daemon.ports import PortReader, RateMeter
from wattd.sources.serial import Chunk

T0 = datetime(2024, 5, 1, tzinfo=UTC)


class NoSource:
    name = "none"

    async def chunks(self) -> AsyncGenerator[Chunk, None]:  # pragma: no cover
        return
        yield


def frame(address: int, api_mode: int = 1) -> bytes:
    data = encode_rx16_io(
        address=address,
        rssi_dbm=-50,
        analog={0: list(range(300, 319)), 4: list(range(480, 499))},
    )
    return encode_frame(data, api_mode)


def chunk(data: bytes, t: float = 10.0, connection: int = 1) -> Chunk:
    return Chunk(
        port="p", data=data, wall_time=T0, monotonic_s=t, connection=connection
    )


def reader(api_mode: Literal[1, 2] = 1) -> PortReader:
    return PortReader(
        PortConfig(device="/dev/x", name="p", api_mode=api_mode), NoSource()
    )


def test_rate_meter_averages_over_its_window() -> None:
    meter = RateMeter(window_s=10)
    assert meter.rate(100.0) == 0.0
    for k in range(20):
        meter.add(100.0 + k * 0.5)  # 2 per second for 10 s
    assert meter.rate(110.0) == pytest.approx(2.0, rel=0.1)
    assert meter.rate(130.0) == 0.0  # all outside the window now


@pytest.mark.parametrize("api_mode", [1, 2])
def test_decode_gives_records_and_io_frames(api_mode: Literal[1, 2]) -> None:
    r = reader(api_mode)
    wire = frame(3, api_mode) + b"\x00\x01" + frame(4, api_mode)
    items = r.decode(chunk(wire[:50])) + r.decode(chunk(wire[50:], t=11.0))
    kinds = [i.record.kind for i in items]
    assert kinds == ["io", "garbage", "io"]
    assert [i.frame.sensor_id for i in items if i.frame] == [3, 4]
    assert items[0].record.sensor == 3
    assert items[0].record.api_mode == api_mode
    assert items[0].record.raw == frame(3, api_mode)
    snap = r.snapshot(11.0)
    assert snap.io_frames == 2
    assert snap.rejected == {"garbage": 1}
    assert snap.last_frame_age_s == 0.0


def test_bytes_from_before_a_reconnect_are_dropped_as_truncated() -> None:
    r = reader()
    whole = frame(5)
    assert r.decode(chunk(whole[:40], connection=1)) == []
    items = r.decode(chunk(whole, connection=2))
    assert [i.record.kind for i in items] == ["truncated", "io"]
    assert r.snapshot(10.0).rejected == {"truncated": 1}


def test_bad_checksum_names_the_claimed_sensor_and_logs_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = reader()
    bad = bytearray(frame(7))
    bad[-1] ^= 0x55
    with caplog.at_level(logging.WARNING, logger="wattd.daemon.ports"):
        items = [i for _ in range(5) for i in r.decode(chunk(bytes(bad)))]
    checksum = [i for i in items if i.record.kind == "bad_checksum"]
    assert len(checksum) == 5
    assert {i.claimed_sensor for i in checksum} == {7}
    assert r.snapshot(10.0).bad_checksum == 5
    lines = [m for m in caplog.messages if "bad checksum" in m]
    assert len(lines) == 1


def claimed(wire: bytes, api_mode: Literal[1, 2]) -> list[int | None]:
    r = reader(api_mode)
    items = r.decode(chunk(wire)) + r.decode(chunk(b"", connection=2))
    return [i.claimed_sensor for i in items if i.record.kind == "bad_checksum"]


def test_claimed_sensor_in_both_modes() -> None:
    bad = bytearray(frame(0x0102, 1))
    bad[-1] ^= 0x01
    assert claimed(bytes(bad), 1) == [0x0102]
    bad = bytearray(frame(0x7D13, 2))  # escaped address bytes
    bad[-1] ^= 0x01
    assert claimed(bytes(bad), 2) == [0x7D13]
    assert claimed(b"\x7e\x00\x02\x8a\x00\x76", 1) == [None]  # not an 0x83
    assert claimed(b"\x7e\x00", 1) == []


def test_modem_status_is_counted() -> None:
    r = reader()
    items = r.decode(chunk(encode_frame(b"\x8a\x00")))
    assert [i.record.kind for i in items] == ["other"]
    assert r.snapshot(10.0).modem_status == {"hardware reset": 1}
