from __future__ import annotations

import asyncio
import logging
import os
import statistics
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.daemon import meter_sensors, running_supervisor
from tests.fixtures.pty import Pty, SocatLink
from tests.fixtures.sinks import RecordingSink
from tests.fixtures.waiting import wait_until
from wattd.config import Config
from wattd.daemon.sdnotify import SdNotifier
from wattd.daemon.supervisor import Supervisor
from wattd.sources.simulate import (
    InductiveLoad,
    MeterModel,
    ResistiveLoad,
    Simulator,
    SmpsLoad,
    run_on_pty,
)
from wattd.storage.store import Store

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from wattd.sinks.base import Sink


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    data: dict[str, Any] = {"state_dir": str(tmp_path / "state"), "save_interval_s": 1}
    data.update(overrides)
    return Config.model_validate(data)


def meters_3() -> list[MeterModel]:
    return [
        MeterModel.with_quirks(1, ResistiveLoad(watts=100.0), seed=7),
        MeterModel.with_quirks(2, InductiveLoad(watts=300.0, power_factor=0.7), seed=7),
        MeterModel.with_quirks(3, SmpsLoad(watts=150.0), seed=7),
    ]


def frames_for(meter: MeterModel, n: int, seed: int = 3) -> list[bytes]:
    sim = Simulator([meter], seed=seed)
    return [sim.next_frame().data for _ in range(n)]


def recording_factory(*sinks: Sink) -> Callable[[Config], list[Sink]]:
    return lambda _config: list(sinks)


@pytest.mark.slow
async def test_end_to_end_simulator_to_sqlite_matches_truth(
    tmp_path: Path, pty: Pty
) -> None:
    meters = meters_3()
    sim = Simulator(meters, seed=11)
    config = make_config(
        tmp_path,
        ports=[{"device": pty.path, "name": "sim"}],
        sensors=meter_sensors(meters),
    )
    sup = Supervisor(config, flush_timeout_s=10)
    speed = 8.0
    async with running_supervisor(sup):
        stats = await run_on_pty(sim, pty.master, speed=speed, until_s=32.0)
        await wait_until(lambda: sup.snapshot().readings_total >= stats.frames - 3)
    snap = sup.snapshot()
    assert snap.ports[0].frames_ok == stats.frames
    assert snap.ports[0].rejected == {}
    with Store.open(config.store_path, readonly=True) as store:
        rows = {
            m.address: store.recent_readings([m.address], limit_per_sensor=1000)
            for m in meters
        }
        totals = store.last_wh_totals()
    for meter in meters:
        readings = sorted(rows[meter.address], key=lambda r: r.time_ns)
        truth_w = meter.true_watts(0.0)
        assert len(readings) >= 12, meter.address  # ~15 frames in 32 simulated s
        mean_w = statistics.fmean(r.watts or 0.0 for r in readings)
        assert mean_w == pytest.approx(truth_w, rel=0.03), meter.address
        # Energy: the daemon integrates in real (monotonic) time, so the truth
        # is the constant load times the real time between its readings.
        span_h = (readings[-1].time_ns - readings[0].time_ns) / 3.6e12
        energy = (readings[-1].wh_total or 0.0) - (readings[0].wh_total or 0.0)
        assert energy == pytest.approx(truth_w * span_h, rel=0.04), meter.address
        assert totals[meter.address] == pytest.approx(readings[-1].wh_total)
    # The snapshot agrees with the store.
    by_sensor = {s.sensor: s for s in snap.sensors}
    for meter in meters:
        assert by_sensor[meter.address].wh_total == pytest.approx(totals[meter.address])
        assert by_sensor[meter.address].configured


async def test_slow_sink_does_not_stall_decoding_or_other_sinks(
    tmp_path: Path, pty: Pty
) -> None:
    slow = RecordingSink("slow", queue_size=5, batch_size=1)
    slow.gate.clear()  # every write blocks
    fast = RecordingSink("fast")
    meter = MeterModel.with_quirks(5, ResistiveLoad(watts=200.0), seed=1)
    config = make_config(
        tmp_path, ports=[{"device": pty.path}], sensors=meter_sensors([meter])
    )
    sup = Supervisor(
        config, sink_factory=recording_factory(slow, fast), flush_timeout_s=0.5
    )
    frames = frames_for(meter, 40)
    async with running_supervisor(sup):
        await asyncio.sleep(0.3)
        for data in frames:
            pty.write(data)
            await asyncio.sleep(0.005)
        await wait_until(lambda: len(fast.received) == 40)
        snap = {s.name: s for s in sup.snapshot().sinks}
        assert snap["fast"].written == 40
        assert snap["slow"].written == 0
        assert snap["slow"].queue_depth == 5
        assert snap["slow"].dropped == 40 - 5 - 1  # one batch is stuck in write()
        assert sup.snapshot().ports[0].io_frames == 40
    # Shutdown did not hang on the stuck sink: it gave up after its timeout.
    assert slow.events == ["start", "stop"]
    assert fast.events == ["start", "flush", "stop"]


async def test_decoder_rejections_are_counted_and_logged_rate_limited(
    tmp_path: Path, pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    meter = MeterModel.with_quirks(9, ResistiveLoad(watts=50.0), seed=2)
    sink = RecordingSink("rec", wants_frames=True)
    config = make_config(
        tmp_path,
        ports=[{"device": pty.path, "name": "p0"}],
        sensors=meter_sensors([meter]),
    )
    sup = Supervisor(config, sink_factory=recording_factory(sink))
    good = frames_for(meter, 6)
    with caplog.at_level(logging.INFO, logger="wattd.daemon.supervisor"):
        async with running_supervisor(sup):
            await asyncio.sleep(0.3)
            for data in good[:3]:
                pty.write(data)  # sensor 9 is now known
            await wait_until(lambda: len(sink.received) == 3)
            for data in good[3:]:
                bad = bytearray(data)
                bad[-1] ^= 0xFF  # break the checksum
                pty.write(bytes(bad) + b"\x01\x02\x03")
                await asyncio.sleep(0.05)
            pty.write(good[0])
            await wait_until(lambda: len(sink.received) == 4)
            await wait_until(
                lambda: sum(len(b) for b in sink.frame_batches) >= 4 + 3 + 1
            )
            snap = sup.snapshot()
    port = snap.ports[0]
    assert port.rejected["bad_checksum"] == 3
    assert port.rejected["garbage"] >= 1
    assert port.io_frames == 4
    sensor = next(s for s in snap.sensors if s.sensor == 9)
    assert sensor.bad_checksum == 3  # the corrupt frames still named sensor 9
    assert sensor.frames == 4
    kinds = [f.kind for b in sink.frame_batches for f in b]
    assert kinds.count("bad_checksum") == 3
    assert kinds.count("io") == 4
    checksum_lines = [r for r in caplog.records if "bad checksum" in r.getMessage()]
    assert len(checksum_lines) == 1  # rate-limited: one line, not three


async def test_reload_applies_calibration_without_reopening_the_port(
    tmp_path: Path, pty: Pty
) -> None:
    meter = MeterModel.with_quirks(4, ResistiveLoad(watts=400.0), seed=4)
    sink = RecordingSink("rec")
    base = {"ports": [{"device": pty.path}], "sensors": meter_sensors([meter])}
    config = make_config(tmp_path, **base)
    sup = Supervisor(config, sink_factory=recording_factory(sink))
    frames = frames_for(meter, 8)
    async with running_supervisor(sup):
        await asyncio.sleep(0.3)
        for data in frames[:4]:
            pty.write(data)
        await wait_until(lambda: len(sink.received) == 4)
        doubled = meter_sensors([meter])
        doubled[0]["counts_per_amp"] *= 2
        doubled[0]["name"] = "renamed"
        new = make_config(tmp_path, ports=base["ports"], sensors=doubled)
        assert await sup.reload(new)
        for data in frames[4:]:
            pty.write(data)
        await wait_until(lambda: len(sink.received) == 8)
        port = sup.snapshot().ports[0]
    before = statistics.fmean(r.watts for r in sink.received[:4])
    after = statistics.fmean(r.watts for r in sink.received[4:])
    assert after == pytest.approx(before / 2, rel=0.05)
    assert {r.name for r in sink.received[4:]} == {"renamed"}
    # Energy carried over: the total kept rising through the reload.
    totals = [r.wh_total for r in sink.received]
    assert totals == sorted(totals)
    assert port.connections == 1  # never reopened


async def test_reload_opens_added_ports_and_closes_removed_ones(
    tmp_path: Path, pty: Pty
) -> None:
    other = Pty()
    try:
        meter = MeterModel.with_quirks(6, ResistiveLoad(watts=100.0), seed=6)
        sink = RecordingSink("rec")
        config = make_config(
            tmp_path,
            ports=[{"device": pty.path, "name": "a"}],
            sensors=meter_sensors([meter]),
        )
        sup = Supervisor(config, sink_factory=recording_factory(sink))
        frames = frames_for(meter, 4)
        async with running_supervisor(sup):
            both = make_config(
                tmp_path,
                ports=[
                    {"device": pty.path, "name": "a"},
                    {"device": other.path, "name": "b"},
                ],
                sensors=meter_sensors([meter]),
            )
            assert await sup.reload(both)
            await wait_until(
                lambda: (
                    all(p.connected for p in sup.snapshot().ports)
                    and len(sup.snapshot().ports) == 2
                )
            )
            other.write(frames[0])
            await wait_until(lambda: len(sink.received) == 1)
            assert sink.received[0].port == "b"
            only_b = make_config(
                tmp_path,
                ports=[{"device": other.path, "name": "b"}],
                sensors=meter_sensors([meter]),
            )
            assert await sup.reload(only_b)
            assert [p.name for p in sup.snapshot().ports] == ["b"]
            other.write(frames[1])
            await wait_until(lambda: len(sink.received) == 2)
            b_port = sup.snapshot().ports[0]
            assert b_port.connections == 1  # b was not restarted by the 2nd reload
    finally:
        other.close()


async def test_bad_reload_keeps_the_running_config(
    tmp_path: Path, pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    meter = MeterModel.with_quirks(2, ResistiveLoad(watts=100.0), seed=2)
    sink = RecordingSink("rec")
    path = tmp_path / "wattd.yaml"
    path.write_text(f"ports:\n  - device: {pty.path}\nstate_dir: {tmp_path}\n")
    from wattd.config import load_config

    sup = Supervisor(
        load_config(path), config_path=path, sink_factory=recording_factory(sink)
    )
    frames = frames_for(meter, 2)
    async with running_supervisor(sup):
        path.write_text("ports:\n  - device: [not, a, path]\n    bogus: 1\n")
        with caplog.at_level(logging.ERROR, logger="wattd.daemon.supervisor"):
            assert not await sup.reload()
        assert "reload rejected" in caplog.text
        assert "wattd.yaml:2" in caplog.text
        snap = sup.snapshot()
        assert snap.last_reload_error is not None
        assert snap.ports[0].device == pty.path
        await asyncio.sleep(0.2)
        pty.write(frames[0])
        await wait_until(lambda: len(sink.received) == 1)


async def test_reload_starts_and_stops_sinks(tmp_path: Path, pty: Pty) -> None:
    made: list[RecordingSink] = []

    def factory(config: Config) -> list[Sink]:
        if not config.web.enabled:  # any switch will do for this test
            return []
        sink = RecordingSink("extra")
        made.append(sink)
        return [sink]

    meter = MeterModel.with_quirks(3, ResistiveLoad(watts=100.0), seed=3)
    ports = [{"device": pty.path}]
    sup = Supervisor(make_config(tmp_path, ports=ports), sink_factory=factory)
    frames = frames_for(meter, 3)
    async with running_supervisor(sup):
        assert sup.snapshot().sinks == ()
        assert await sup.reload(
            make_config(tmp_path, ports=ports, web={"enabled": True})
        )
        assert [s.name for s in sup.snapshot().sinks] == ["extra"]
        await asyncio.sleep(0.3)
        pty.write(frames[0])
        await wait_until(lambda: len(made[0].received) == 1)
        # Reloading with the sink still enabled keeps the running instance.
        assert await sup.reload(
            make_config(tmp_path, ports=ports, web={"enabled": True})
        )
        assert len(made) == 2
        assert made[1].events == []  # built, never started
        assert await sup.reload(make_config(tmp_path, ports=ports))
        assert sup.snapshot().sinks == ()
        assert made[0].events == ["start", "flush", "stop"]


async def test_state_is_saved_every_interval_and_at_shutdown(
    tmp_path: Path, pty: Pty
) -> None:
    meter = MeterModel.with_quirks(8, ResistiveLoad(watts=1000.0), seed=8)
    sink = RecordingSink("rec")
    config = make_config(
        tmp_path, ports=[{"device": pty.path}], sensors=meter_sensors([meter])
    )
    sup = Supervisor(config, sink_factory=recording_factory(sink))
    frames = frames_for(meter, 3)
    async with running_supervisor(sup):
        await asyncio.sleep(0.3)
        for data in frames:
            pty.write(data)
            await asyncio.sleep(0.2)
        await wait_until(lambda: len(sink.received) == 3)
        await wait_until(lambda: config.state_path.exists(), timeout_s=5)
        saved = sup.snapshot().state_saved_at
        assert saved is not None
    import json

    doc = json.loads(config.state_path.read_text())
    assert doc["format"] == "wattd-state"
    total = sink.received[-1].wh_total
    assert total > 0
    sensors = doc["pipeline"]["sensors"]
    assert sensors["8"]["energy"]["wh_total"] == pytest.approx(total)
    assert sup.snapshot().state_saved_at != saved  # saved again at shutdown
    # Only the final file is left: no temp files.
    assert sorted(
        p.name for p in config.state_path.parent.iterdir() if "state" in p.name
    ) == ["state.json"]


async def test_restart_continues_energy_from_saved_state(
    tmp_path: Path, pty: Pty
) -> None:
    meter = MeterModel.with_quirks(7, ResistiveLoad(watts=1000.0), seed=7)
    config = make_config(
        tmp_path, ports=[{"device": pty.path}], sensors=meter_sensors([meter])
    )
    frames = frames_for(meter, 6)
    first = RecordingSink("rec")
    async with running_supervisor(
        Supervisor(config, sink_factory=recording_factory(first))
    ):
        await asyncio.sleep(0.3)
        for data in frames[:3]:
            pty.write(data)
            await asyncio.sleep(0.2)
        await wait_until(lambda: len(first.received) == 3)
    second = RecordingSink("rec")
    async with running_supervisor(
        Supervisor(config, sink_factory=recording_factory(second))
    ):
        await asyncio.sleep(0.3)
        for data in frames[3:]:
            pty.write(data)
            await asyncio.sleep(0.2)
        await wait_until(lambda: len(second.received) == 3)
    end_first = first.received[-1].wh_total
    assert second.received[0].wh_total >= end_first
    # The first frame after a restart has no predecessor: nothing is added for
    # the time the daemon was down.
    assert second.received[0].wh_total == pytest.approx(end_first)
    assert second.received[-1].wh_total > end_first


async def test_store_total_raises_the_floor(tmp_path: Path, pty: Pty) -> None:
    meter = MeterModel.with_quirks(7, ResistiveLoad(watts=100.0), seed=7)
    config = make_config(
        tmp_path, ports=[{"device": pty.path}], sensors=meter_sensors([meter])
    )
    sink = RecordingSink("rec")
    sup = Supervisor(
        config,
        sink_factory=recording_factory(sink),
        store_totals=lambda _c: {7: 1234.5},
    )
    async with running_supervisor(sup):
        await asyncio.sleep(0.3)
        pty.write(frames_for(meter, 1)[0])
        await wait_until(lambda: len(sink.received) == 1)
    assert sink.received[0].wh_total == pytest.approx(1234.5)


async def test_unknown_sensor_is_logged_once(
    tmp_path: Path, pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    meter = MeterModel.with_quirks(0x42, ResistiveLoad(watts=100.0), seed=1)
    sink = RecordingSink("rec")
    sup = Supervisor(
        make_config(tmp_path, ports=[{"device": pty.path}]),
        sink_factory=recording_factory(sink),
    )
    with caplog.at_level(logging.WARNING, logger="wattd.daemon.supervisor"):
        async with running_supervisor(sup):
            await asyncio.sleep(0.3)
            for data in frames_for(meter, 3):
                pty.write(data)
            await wait_until(lambda: len(sink.received) == 3)
            await asyncio.sleep(1.2)  # one main-loop tick
    lines = [r for r in caplog.records if "not in the config" in r.getMessage()]
    assert len(lines) == 1
    assert "66 (0x0042)" in lines[0].getMessage()
    assert all("unknown_sensor" in r.flags for r in sink.received)


async def test_notifies_ready_status_and_watchdog(tmp_path: Path, pty: Pty) -> None:
    import socket

    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.setblocking(False)
    try:
        notifier = SdNotifier(
            {
                "NOTIFY_SOCKET": str(path),
                "WATCHDOG_USEC": "600000",
                "WATCHDOG_PID": str(os.getpid()),
            }
        )
        sup = Supervisor(
            make_config(tmp_path, ports=[{"device": pty.path}]),
            sink_factory=recording_factory(),
            notifier=notifier,
        )
        messages: list[str] = []
        async with running_supervisor(sup):
            await asyncio.sleep(0.7)
        while True:
            try:
                messages.append(server.recv(4096).decode())
            except BlockingIOError:
                break
    finally:
        server.close()
    assert messages[0].startswith("READY=1\nSTATUS=")
    assert "frames/s" in messages[0]
    assert sum("WATCHDOG=1" in m for m in messages) >= 2  # every 0.2 s (600 ms / 3)
    assert "STOPPING=1" in messages[-1] or any("STOPPING=1" in m for m in messages)


async def test_live_cost_stage_prices_each_reading(tmp_path: Path, pty: Pty) -> None:
    meter = MeterModel.with_quirks(3, ResistiveLoad(watts=1000.0), seed=3)
    sink = RecordingSink("rec")
    config = make_config(
        tmp_path,
        ports=[{"device": pty.path}],
        sensors=meter_sensors([meter]),
        tariffs={
            "timezone": "UTC",
            "default": "home",
            "plans": {"home": {"currency": "EUR", "price_per_kwh": 0.25}},
        },
    )
    sup = Supervisor(config, sink_factory=recording_factory(sink))
    async with running_supervisor(sup):
        await asyncio.sleep(0.3)
        for data in frames_for(meter, 2):
            pty.write(data)
            await asyncio.sleep(0.3)
        await wait_until(lambda: len(sink.received) == 2)
    last = sink.received[-1]
    assert last.currency == "EUR"
    assert last.price_per_kwh == 0.25
    assert last.cost_per_hour == pytest.approx(last.watts / 1000 * 0.25)


@pytest.mark.slow
async def test_unplug_and_replug_resumes_and_drops_the_cut_frame(
    tmp_path: Path, socat_link: SocatLink
) -> None:
    meter = MeterModel.with_quirks(5, ResistiveLoad(watts=100.0), seed=5)
    sink = RecordingSink("rec")
    config = make_config(
        tmp_path,
        ports=[{"device": str(socat_link.device), "name": "usb"}],
        sensors=meter_sensors([meter]),
    )
    sup = Supervisor(config, sink_factory=recording_factory(sink))
    frames = frames_for(meter, 40)
    async with running_supervisor(sup):
        await wait_until(lambda: sup.snapshot().ports[0].connected)
        fd = socat_link.open_peer()
        os.write(fd, frames[0])
        await wait_until(lambda: len(sink.received) == 1)
        os.write(fd, frames[1][:30])  # the adapter is pulled mid-frame
        await asyncio.sleep(0.2)
        os.close(fd)
        socat_link.unplug()
        await wait_until(lambda: not sup.snapshot().ports[0].connected)
        await asyncio.sleep(1.5)
        down = sup.snapshot().ports[0]
        assert down.outages == 1
        assert down.outage_s is not None
        assert down.outage_s > 1.0
        socat_link.replug()
        replugged = asyncio.get_running_loop().time()
        fd = socat_link.open_peer()
        try:
            k = 2
            while len(sink.received) < 2:  # a meter keeps sending every ~2 s
                os.write(fd, frames[k])
                k += 1
                await asyncio.sleep(0.1)
            resumed = asyncio.get_running_loop().time()
        finally:
            os.close(fd)
        port = sup.snapshot().ports[0]
    assert resumed - replugged < 2.0
    assert port.connections == 2
    # The 30 bytes cut off by the unplug were dropped as one truncated frame,
    # never glued to the bytes that came after the replug.
    assert port.rejected.get("truncated") == 1
    assert port.rejected.get("bad_checksum", 0) == 0
    assert [r.sensor for r in sink.received] == [5, 5]


@pytest.mark.parametrize(
    ("cli_level", "expected"), [("debug", logging.DEBUG), (None, logging.ERROR)]
)
async def test_reload_keeps_the_command_line_log_level(
    tmp_path: Path, pty: Pty, cli_level: str | None, expected: int
) -> None:
    logger = logging.getLogger("wattd")
    saved = (logger.level, list(logger.handlers))
    base = {"ports": [{"device": pty.path}]}
    config = make_config(tmp_path, **base, logging={"level": "warning"})
    sup = Supervisor(
        config,
        sink_factory=recording_factory(RecordingSink("rec")),
        log_level=cli_level,
    )
    try:
        async with running_supervisor(sup):
            new = make_config(
                tmp_path, **base, logging={"level": "error", "format": "text"}
            )
            assert await sup.reload(new)
            assert logger.level == expected
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]
