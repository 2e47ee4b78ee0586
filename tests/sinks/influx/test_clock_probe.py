"""The InfluxDB sink's clock probe, against a real VictoriaMetrics and influxd 1.x.

After a delivered batch the sink writes one ``wattd_clock`` point without a
timestamp; the store stamps it on receipt, so its value minus its time is the
host's clock offset. The readings here are stamped months in the past (a
backlog), and the probe must still measure the clock at sending.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

import wattd.sinks.influx.sink as sink_module
from tests.fixtures.influx import FakeInflux, Recorded, forward, influx_error
from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.sinks.influx.lineprotocol import FIELDS
from wattd.sinks.influx.sink import STREAM, InfluxSink, clock_line
from wattd.storage.spool import Spool

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.services import Influxd, VictoriaMetrics

T0 = datetime(2025, 6, 1, 12, tzinfo=UTC)
PROBE = "wattd_clock_sent_ms"


def reading(i: int) -> Reading:
    sensor = 1 + i % 2
    return Reading(
        sensor=sensor,
        name=f"meter-{sensor}",
        time=T0 + timedelta(milliseconds=10 * i),
        monotonic_s=float(i),
        watts=100.0 + i,
        va=110.5 + i,
        vrms=120.25,
        irms=0.875,
        power_factor=0.9,
        wh_total=1000.0 + i / 8,
        wh_delta=0.125,
        rssi_dbm=-42,
    )


def make_config(tmp_path: Path, url: str, node: str, **influx: Any) -> Config:
    settings = {"enabled": True, "url": url, "flush_interval_s": 0.05, **influx}
    if "database" not in influx:
        settings |= {"org": "home", "bucket": "energy", "token": "t0k3n"}
    return parse_config(
        f"state_dir: {json.dumps(str(tmp_path))}\n"
        f"node: {node}\n"
        "site: hall.1\n"
        f"influxdb: {json.dumps(settings)}\n"
        "sensors:\n"
        "  - {address: 1, name: meter-1}\n"
        "  - {address: 2, name: meter-2}\n"
    )


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def send(config: Config, readings: list[Reading]) -> dict[str, float]:
    """Spool ``readings`` and deliver them with one flush; the sink's stats after.

    ``flush`` drains in the caller's task, so any probe has been sent (or
    refused) when it returns.
    """
    sink = InfluxSink(config)
    await sink.start()
    try:
        await sink.write(readings)
        await sink.flush()
        return sink.stats()
    finally:
        await sink.stop()


def acked(tmp_path: Path) -> tuple[int, int, int]:
    """The spool's (depth, dead letters, acked) for the sink's stream."""
    with Spool(tmp_path / "spool.sqlite", must_exist=True) as spool:
        stats = spool.stats(STREAM)
    return stats.depth, stats.dead_letters, stats.acked


def test_the_clock_line_has_node_and_site_and_no_timestamp() -> None:
    line = clock_line("hall1-a", "hall 1", 1_750_000_000_123)
    assert line == b"wattd_clock,node=hall1-a,site=hall\\ 1 sent_ms=1750000000123.0"
    assert clock_line("n", None, 5) == b"wattd_clock,node=n sent_ms=5.0"


async def test_victoriametrics_stamps_the_probe_and_power_is_unchanged(
    tmp_path: Path, victoria: VictoriaMetrics
) -> None:
    node, measurement = unique("n"), unique("m")
    config = make_config(tmp_path, victoria.url, node, measurement=measurement)
    readings = [reading(i) for i in range(300)]
    before_ms = time.time() * 1000
    stats = await send(config, readings)
    after_ms = time.time() * 1000
    assert stats["points_written"] == 300
    (probe,) = victoria.export_at_least(f'{PROBE}{{node="{node}"}}', 1)
    assert probe["metric"] == {"__name__": PROBE, "node": node, "site": "hall.1"}
    ((sent_ms,), (stored_ms,)) = probe["values"], probe["timestamps"]
    # Sent now, not at the readings' time, and stamped by the store on receipt.
    assert before_ms - 1 <= sent_ms <= after_ms + 1
    assert abs(sent_ms - stored_ms) < 1000
    # The power series are exactly the readings: the probe is no part of them.
    series = victoria.export(f'{{__name__=~"{measurement}_.*"}}')
    got = {(s["metric"]["__name__"], s["metric"]["sensor"]): s for s in series}
    assert {name for name, _ in got} == {f"{measurement}_{f}" for f in FIELDS}
    for sensor in (1, 2):
        mine = [r for r in readings if r.sensor == sensor]
        watts = got[(f"{measurement}_watts", str(sensor))]
        assert watts["timestamps"] == [r.time_ns // 1_000_000 for r in mine]
        assert watts["values"] == [r.watts for r in mine]
        wh = got[(f"{measurement}_wh_total", str(sensor))]
        assert wh["values"] == [r.wh_total for r in mine]
    # The probe was never spooled: exactly the readings went through the spool.
    assert acked(tmp_path) == (0, 0, 300)


async def test_influxdb_1x_stamps_the_probe(tmp_path: Path, influxd: Influxd) -> None:
    node, db = unique("n"), unique("w")
    influxd.create_database(db)
    config = make_config(tmp_path, influxd.url, node, database=db)
    readings = [reading(i) for i in range(50)]
    assert (await send(config, readings))["points_written"] == 50
    where = f"\"node\" = '{node}'"  # a generated name: nothing to escape
    query = f'SELECT "sent_ms", "site" FROM "wattd_clock" WHERE {where}'  # noqa: S608
    params = {"db": db, "epoch": "ms", "q": query}
    body = urllib.parse.urlencode(params).encode()
    with urllib.request.urlopen(f"{influxd.url}/query", data=body, timeout=10) as resp:
        (series,) = json.load(resp)["results"][0]["series"]
    ((stored_ms, sent_ms, site),) = series["values"]
    assert site == "hall.1"
    assert abs(sent_ms - stored_ms) < 1000
    power = influxd.query('SELECT COUNT("watts") FROM "power"', db)
    assert power[0]["series"][0]["values"][0][1] == 50
    assert acked(tmp_path) == (0, 0, 50)


async def test_clock_probe_false_writes_no_probe(
    tmp_path: Path, victoria: VictoriaMetrics
) -> None:
    node, measurement = unique("n"), unique("m")
    config = make_config(
        tmp_path, victoria.url, node, measurement=measurement, clock_probe=False
    )
    assert (await send(config, [reading(i) for i in range(20)]))["points_written"] == 20
    watts = victoria.export_at_least(f'{measurement}_watts{{node="{node}"}}', 20)
    assert sum(len(s["values"]) for s in watts) == 20
    assert victoria.export(f'{PROBE}{{node="{node}"}}') == []


async def test_a_refused_probe_stops_no_point_and_is_never_dead_lettered(
    tmp_path: Path,
    fake: FakeInflux,
    victoria: VictoriaMetrics,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_probes(request: Recorded) -> web.Response:
        if any(line.startswith(b"wattd_clock") for line in request.lines):
            return influx_error(400, "unable to parse 'wattd_clock': not allowed")
        return await forward(request, victoria.url)

    fake.rule = no_probes
    node, measurement = unique("n"), unique("m")
    config = make_config(tmp_path, fake.url, node, measurement=measurement)
    caplog.set_level(logging.WARNING, logger="wattd")
    sink = InfluxSink(config)
    await sink.start()
    try:
        await sink.write([reading(i) for i in range(40)])
        await sink.flush()
        # The probe went alone, after the batch.
        assert [len(r.lines) for r in fake.requests] == [40, 1]
        assert fake.requests[1].lines[0].startswith(b"wattd_clock,node=")
        # At most once a minute: a second batch right away brings none.
        await sink.write([reading(i) for i in range(40, 50)])
        await sink.flush()
        assert [len(r.lines) for r in fake.requests] == [40, 1, 10]
        monkeypatch.setattr(sink_module, "CLOCK_PROBE_INTERVAL_S", 0.0)
        await sink.write([reading(50)])
        await sink.flush()
        assert [len(r.lines) for r in fake.requests] == [40, 1, 10, 1, 1]
        stats = sink.stats()
    finally:
        await sink.stop()
    assert (stats["points_written"], stats["dead_letters"]) == (51, 0)
    assert acked(tmp_path) == (0, 0, 51)
    watts = victoria.export_at_least(f'{measurement}_watts{{node="{node}"}}', 51)
    assert sum(len(s["values"]) for s in watts) == 51
    # One warning for a server that keeps refusing it, with no secret in it.
    (refused,) = [
        r.getMessage() for r in caplog.records if "clock probe" in r.getMessage()
    ]
    assert "HTTP 400" in refused
    assert "clock_probe: false" in refused
    assert "t0k3n" not in caplog.text
