from __future__ import annotations

import io
from datetime import UTC, datetime

from wattd.cli.console import LiveConsole, render
from wattd.core.readings import Flag
from wattd.core.snapshot import (
    DaemonSnapshot,
    PortSnapshot,
    SensorSnapshot,
    SinkSnapshot,
)

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def snapshot(*, connected: bool = True) -> DaemonSnapshot:
    port = PortSnapshot(
        name="usb0",
        device="/dev/ttyUSB0",
        api_mode=1,
        baud=9600,
        connected=connected,
        connections=1,
        outages=0 if connected else 1,
        last_error=None if connected else "/dev/ttyUSB0 does not exist",
        outage_s=None if connected else 3.0,
        bytes_read=8800,
        frames_per_s=1.5,
        frames_ok=100,
        io_frames=100,
        rejected={"bad_checksum": 2, "garbage": 1},
        garbage_bytes=12,
        modem_status={},
        last_frame_age_s=0.5,
    )
    sensors = (
        SensorSnapshot(
            sensor=1,
            name="fridge",
            configured=True,
            port="usb0",
            frames=60,
            readings=60,
            bad_checksum=2,
            last_seen=T0,
            last_seen_age_s=1.2,
            watts=123.456,
            wh_total=4567.8,
            vrms=119.9,
            rssi_dbm=-61,
            flags=frozenset({Flag.DRIFT_CORRECTED}),
            labels={},
        ),
        SensorSnapshot(
            sensor=2,
            name="sensor-2",
            configured=True,
            port="",
            frames=0,
            readings=0,
            bad_checksum=0,
            last_seen=None,
            last_seen_age_s=None,
            watts=None,
            wh_total=None,
            vrms=None,
            rssi_dbm=None,
            flags=frozenset(),
            labels={},
        ),
    )
    sink = SinkSnapshot(
        name="store",
        started=True,
        queue_depth=3,
        queue_capacity=10000,
        frame_queue_depth=0,
        written=57,
        frames_written=100,
        dropped=0,
        frames_dropped=0,
        rejected=0,
        errors=1,
        last_error=None,
        last_write_age_s=0.2,
    )
    return DaemonSnapshot(
        version="1.0",
        started_at=T0,
        uptime_s=65.0,
        config_path=None,
        config_loaded_at=T0,
        last_reload_error=None,
        ports=(port,),
        sinks=(sink,),
        sensors=sensors,
        readings_total=60,
        state_saved_at=None,
        state_save_error=None,
    )


def test_render_shows_each_sensor_with_its_health() -> None:
    text = render(snapshot(), title="demo", true_watts={1: 120.0})
    lines = text.splitlines()
    assert lines[0] == "demo - up 65 s - 1.5 frames/s - 60 readings"
    assert (
        "port usb0: connected; 100 frames ok, 2 bad checksums, 12 garbage bytes" in text
    )
    header = next(line for line in lines if line.startswith("sensor"))
    assert header.split() == [
        "sensor",
        "name",
        "watts",
        "true",
        "W",
        "kWh",
        "Vrms",
        "RSSI",
        "frames",
        "bad",
        "crc",
        "last",
        "seen",
        "flags",
    ]
    fridge = next(line for line in lines if "fridge" in line)
    assert fridge.split() == [
        "1",
        "fridge",
        "123.5",
        "120.0",
        "4.568",
        "119.9",
        "-61",
        "60",
        "2",
        "1",
        "s",
        "ago",
        "drift_corrected",
    ]
    silent = next(line for line in lines if "sensor-2" in line)
    assert "never" in silent
    assert "sink store: 57 readings written, 3 queued, 0 dropped, 1 errors" in text


def test_render_right_aligns_numbers_under_their_headers() -> None:
    lines = render(snapshot()).splitlines()
    header = next(line for line in lines if line.startswith("sensor"))
    fridge = next(line for line in lines if "fridge" in line)
    for title, value in (("watts", "123.5"), ("kWh", "4.568"), ("frames", "60")):
        assert header.index(title) + len(title) == fridge.index(value) + len(value)


def test_port_down_is_visible() -> None:
    text = render(snapshot(connected=False))
    assert "port usb0: DOWN (/dev/ttyUSB0 does not exist)" in text


def test_console_redraws_in_place_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe = io.StringIO()
    LiveConsole(pipe).show("frame 1\n")
    LiveConsole(pipe).show("frame 2\n")
    assert pipe.getvalue() == "frame 1\n\nframe 2\n\n"
    tty = Tty()
    LiveConsole(tty).show("frame\n")
    assert tty.getvalue() == "\x1b[H\x1b[Jframe\n"


def test_small_energy_still_shows_it_growing() -> None:
    import dataclasses

    snap = snapshot()
    small = dataclasses.replace(snap.sensors[0], wh_total=0.07)
    text = render(dataclasses.replace(snap, sensors=(small,)))
    assert "0.000070" in text


def test_notes_are_shown_under_the_header() -> None:
    note = "simulated line noise (--noise 0.02), added on purpose: 3 frames"
    lines = render(snapshot(), title="demo", notes=[note]).splitlines()
    assert lines[0].startswith("demo - up")
    assert lines[1] == note
