"""The node health lines beside the clock probe, and what the store makes of them.

With the daemon's snapshot attached, the probe request also carries one
``wattd_node`` line and one ``wattd_meter`` line per meter, without
timestamps and with float fields only. The backlog it reports is the one
the drain started with; it is never spooled, and without a snapshot (or with
``clock_probe: false``) the output is what it was.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import wattd.sinks.influx.sink as sink_module
from tests.fixtures.influx import FakeInflux, Recorded, forward
from tests.fixtures.snapshots import daemon_snapshot
from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.costing.fleetstatus import METER_FIELDS, NODE_FIELDS
from wattd.sinks.influx.health import BacklogPeak, ReadingRate, health_lines
from wattd.sinks.influx.sink import STREAM, InfluxSink
from wattd.storage.spool import Spool

if TYPE_CHECKING:
    from pathlib import Path

    import pytest
    from aiohttp import web

    from tests.fixtures.services import VictoriaMetrics

T0 = datetime(2025, 6, 1, 12, tzinfo=UTC)
FLOAT_FIELD = re.compile(r"^[a-z_]+=-?\d+\.\d+(e[+-]?\d+)?$")


def reading(i: int) -> Reading:
    return Reading(
        sensor=1,
        name="meter-1",
        time=T0 + timedelta(milliseconds=10 * i),
        monotonic_s=float(i),
        watts=100.0,
        va=110.0,
        vrms=120.0,
        irms=0.9,
        power_factor=0.9,
        wh_total=1000.0 + i,
        wh_delta=1.0,
        rssi_dbm=-42,
    )


def make_config(tmp_path: Path, url: str, node: str, **influx: Any) -> Config:
    settings = {
        "enabled": True,
        "url": url,
        "flush_interval_s": 0.05,
        "org": "home",
        "bucket": "energy",
        "token": "t0k3n",
        **influx,
    }
    return parse_config(
        f"state_dir: {json.dumps(str(tmp_path))}\n"
        f"node: {node}\n"
        "site: hall.1\n"
        f"influxdb: {json.dumps(settings)}\n"
    )


def fields(line: bytes) -> dict[str, str]:
    _, field_text = line.decode().rsplit(" ", 1)
    return dict(pair.split("=") for pair in field_text.split(","))


def test_health_lines_hold_the_node_and_each_meter_as_floats() -> None:
    snap = daemon_snapshot()
    lines = health_lines(
        snap, node="hall1-a", site="hall 1", backlog=(12.0, 3.5), readings_per_s=0.75
    )
    node, *meters = lines
    assert node.startswith(b"wattd_node,node=hall1-a,site=hall\\ 1 ")
    got = fields(node)
    assert set(got) == set(NODE_FIELDS)
    assert float(got["spool_depth"]) == 12.0
    assert float(got["oldest_pending_age_s"]) == 3.5
    assert float(got["readings_per_s"]) == 0.75
    assert float(got["decode_errors_total"]) == snap.frame_errors == 7
    assert float(got["ports_connected"]) == 1.0
    assert [m.rsplit(b" ", 1)[0] for m in meters] == [
        b"wattd_meter,customer=acme,location=dc-1,name=web-1,node=hall1-a,rack=A,"
        b"sensor=1,site=hall\\ 1",
        b"wattd_meter,name=sensor-7,node=hall1-a,sensor=7,site=hall\\ 1",
    ]
    assert set(fields(meters[0])) == set(METER_FIELDS)
    assert float(fields(meters[0])["bad_checksum_total"]) == 2.0
    for line in lines:
        # No timestamp: the store stamps the line on receipt.
        assert line.count(b" ") == 1 + line.count(b"\\ ")
        assert all(FLOAT_FIELD.match(f"{k}={v}") for k, v in fields(line).items())
    # A meter never heard has no age, so that field is left out.
    sensor = dataclasses.replace(snap.sensors[0], last_seen_age_s=None)
    quiet = dataclasses.replace(snap, sensors=(sensor,))
    (_, meter) = health_lines(
        quiet, node="n", site=None, backlog=(0, 0), readings_per_s=0
    )
    assert "last_seen_age_s" not in fields(meter)


def test_the_backlog_peak_and_the_reading_rate() -> None:
    peak = BacklogPeak()
    peak.note(5, 1.0)
    peak.note(50, 0.5)
    assert peak.take() == (50, 1.0)
    assert peak.take() == (0.0, 0.0)
    rate = ReadingRate()
    assert rate.per_s(100, 50.0) == 2.0
    assert rate.per_s(160, 80.0) == 2.0
    # A restarted counter is not a negative rate.
    assert rate.per_s(10, 90.0) == 0.0


async def test_the_store_gets_the_node_and_meter_lines_and_the_spool_only_points(
    tmp_path: Path, victoria: VictoriaMetrics
) -> None:
    node = f"n{uuid.uuid4().hex[:10]}"
    measurement = f"m{uuid.uuid4().hex[:10]}"
    config = make_config(tmp_path, victoria.url, node, measurement=measurement)
    sink = InfluxSink(config)
    sink.attach(daemon_snapshot)
    await sink.start()
    try:
        await sink.write([reading(i) for i in range(30)])
        await sink.flush()
    finally:
        await sink.stop()
    (depth,) = victoria.export_at_least(f'wattd_node_spool_depth{{node="{node}"}}', 1)
    # The drain started with the 30 points waiting.
    assert depth["values"] == [30.0]
    assert depth["metric"]["site"] == "hall.1"
    meters = victoria.export_at_least(
        f'wattd_meter_bad_checksum_total{{node="{node}"}}', 2
    )
    assert sorted(m["metric"]["sensor"] for m in meters) == ["1", "7"]
    (clock,) = victoria.export(f'wattd_clock_sent_ms{{node="{node}"}}')
    # One request: the store stamped the probe and the health alike.
    assert abs(clock["timestamps"][0] - depth["timestamps"][0]) < 1000
    with Spool(tmp_path / "spool.sqlite", must_exist=True) as spool:
        stats = spool.stats(STREAM)
    assert (stats.depth, stats.acked) == (0, 30)


async def test_an_idle_attached_sink_still_probes_once_a_minute(
    tmp_path: Path,
    fake: FakeInflux,
    victoria: VictoriaMetrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def record(request: Recorded) -> web.Response:
        return await forward(request, victoria.url)

    fake.rule = record
    node = f"n{uuid.uuid4().hex[:10]}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    attached = InfluxSink(make_config(tmp_path / "a", fake.url, node))
    alone = InfluxSink(make_config(tmp_path / "b", fake.url, node))
    attached.attach(daemon_snapshot)
    await attached.start()
    await alone.start()
    try:
        # Within a minute of the start, an idle drain sends nothing.
        await attached.flush()
        await alone.flush()
        assert fake.requests == []
        monkeypatch.setattr(sink_module, "CLOCK_PROBE_INTERVAL_S", 0.0)
        await alone.flush()
        assert fake.requests == []
        await attached.flush()
        (request,) = fake.requests
        names = [line.split(b",")[0] for line in request.lines]
        assert names == [b"wattd_clock", b"wattd_node", b"wattd_meter", b"wattd_meter"]
    finally:
        await attached.stop()
        await alone.stop()


async def test_clock_probe_false_sends_no_health_either(
    tmp_path: Path, fake: FakeInflux, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "CLOCK_PROBE_INTERVAL_S", 0.0)
    config = make_config(tmp_path, fake.url, "quiet", clock_probe=False)
    sink = InfluxSink(config)
    sink.attach(daemon_snapshot)
    await sink.start()
    try:
        await sink.write([reading(i) for i in range(5)])
        await sink.flush()
        await sink.flush()
    finally:
        await sink.stop()
    assert [len(r.lines) for r in fake.requests] == [5]
    assert all(line.startswith(b"power,") for line in fake.requests[0].lines)
