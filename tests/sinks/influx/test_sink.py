"""The InfluxDB sink: line protocol, delivery to a real TSDB, failures, zero loss."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import influxdb_client.rest as rest
import pytest
from aiohttp import web

import wattd.sinks.influx.sink as influx_module
from tests.fixtures.daemon import DaemonProcess, MeterFeed, meter_sensors
from tests.fixtures.daemon import write_config as write_daemon_config
from tests.fixtures.influx import FakeInflux, Recorded, forward, influx_error
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.services import VictoriaMetrics, free_port
from tests.fixtures.sinks import running_sink
from tests.fixtures.waiting import block_until, wait_until
from wattd.cli import main as cli_main
from wattd.clients.influx import (
    InfluxBusy,
    InfluxRejected,
    InfluxTarget,
    InfluxWriter,
    classify_error,
)
from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.errors import SinkAuthError, SinkUnavailable, SpoolError
from wattd.sinks.influx.lineprotocol import (
    FIELDS,
    PointEncoder,
    escape_measurement,
    escape_tag,
)
from wattd.sinks.influx.sink import BACKOFF_JITTER, STREAM, InfluxSink
from wattd.sinks.registry import build_sinks
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator
from wattd.storage.spool import AsyncSpool
from wattd.support.backoff import backoff_delay

if TYPE_CHECKING:
    from tests.fixtures.pty import Pty

ROOT = REPO_ROOT
HARNESS = Path(__file__).with_name("harness.py")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "s3cr3t-token-value"


def reading(i: int, *, sensor: int = 1, **changes: Any) -> Reading:
    base = Reading(
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
    return dataclasses.replace(base, **changes)


def make_config(tmp_path: Path, url: str, extra: str = "", **influx: Any) -> Config:
    settings = {
        "enabled": True,
        "url": url,
        "org": "home",
        "bucket": "energy",
        "token": TOKEN,
        "flush_interval_s": 0.05,
        # These tests look at every request; the clock probe has tests of its
        # own (test_clock_probe.py).
        "clock_probe": False,
        **influx,
    }
    body = ", ".join(f"{k}: {json.dumps(v)}" for k, v in settings.items())
    return parse_config(
        f"state_dir: {json.dumps(str(tmp_path))}\n"
        "mqtt: {node_id: node-a}\n"
        f"influxdb: {{{body}}}\n"
        "sensors:\n"
        "  - {address: 1, name: meter-1, rack: r1, customer: acme, location: lab}\n"
        "  - {address: 2, name: meter-2, rack: r2, customer: globex}\n" + extra
    )


def export(server: VictoriaMetrics, measurement: str) -> list[dict[str, Any]]:
    return server.export(f'{{__name__=~"{measurement}_.*"}}')


def unique_measurement() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(influx_module, "BASE_BACKOFF_S", 0.01)


# -- line protocol -------------------------------------------------------------


def test_line_has_sorted_tags_float_fields_and_ns_time() -> None:
    encoder = PointEncoder(
        measurement="power",
        node="pi",
        sensor_tags={1: {"rack": "r1", "customer": "acme", "location": "lab"}},
    )
    r = reading(0, rssi_dbm=-60)
    line = encoder.encode(r)
    assert line == (
        b"power,customer=acme,location=lab,name=meter-1,node=pi,rack=r1,sensor=1"
        b" watts=100.0,va=110.5,vrms=120.25,irms=0.875,pf=0.9,wh_total=1000.0,"
        b"rssi_dbm=-60.0 " + str(r.time_ns).encode()
    )


def test_special_characters_are_escaped() -> None:
    assert escape_measurement("my power,x") == r"my\ power\,x"
    assert escape_tag("a=b, c") == r"a\=b\,\ c"
    assert escape_tag("line\nbreak\ttab") == r"line\ break\ tab"
    # A trailing backslash must not escape the separator that follows.
    assert escape_tag("C:\\") == "C:\\ "
    encoder = PointEncoder(measurement="p w", sensor_tags={})
    line = encoder.encode(reading(0, name="Fridge, kitchen=1"))
    assert line is not None
    assert line.startswith(rb"p\ w,name=Fridge\,\ kitchen\=1,sensor=1 watts=")


def test_missing_and_non_finite_fields_are_left_out() -> None:
    encoder = PointEncoder()
    r = reading(0, power_factor=None, rssi_dbm=None, va=math.nan, irms=math.inf)
    line = encoder.encode(r)
    assert line is not None
    fields = line.split(b" ")[1].decode()
    assert [f.split("=")[0] for f in fields.split(",")] == ["watts", "vrms", "wh_total"]
    empty = reading(
        0,
        watts=math.nan,
        va=math.nan,
        vrms=math.nan,
        irms=math.nan,
        power_factor=None,
        wh_total=math.inf,
        rssi_dbm=None,
    )
    assert encoder.encode(empty) is None


def test_reading_labels_win_and_reserved_keys_are_ignored() -> None:
    encoder = PointEncoder(
        node="n1", sensor_tags={1: {"rack": "old", "customer": "acme", "empty": ""}}
    )
    r = reading(0, labels={"rack": "new", "time": "x", "_field": "y", "node": "z"})
    assert dict(encoder.tags(r)) == {
        "customer": "acme",
        "name": "meter-1",
        "node": "n1",
        "rack": "new",
        "sensor": "1",
    }


def test_changed_labels_change_the_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("wattd.sinks.influx.lineprotocol.SERIES_CACHE_SIZE", 2)
    encoder = PointEncoder()
    lines = [
        encoder.encode(reading(0, labels={"rack": rack}))
        for rack in ("a", "b", "a", "c", "d")
    ]
    racks = [line.split(b",")[2].split(b" ")[0] for line in lines if line]
    assert racks == [b"rack=a", b"rack=b", b"rack=a", b"rack=c", b"rack=d"]


@pytest.mark.parametrize("value", [1e-7, 123456789.123456, -0.0, 5e22, 2.0**-1074])
def test_floats_round_trip(value: float) -> None:
    line = PointEncoder().encode(reading(0, watts=value))
    assert line is not None
    text = line.split(b" ")[1].split(b",")[0].decode()
    assert float(text.split("=")[1]) == value


def test_encoder_from_config_uses_sensor_metadata_and_node(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:1", measurement="energy")
    encoder = PointEncoder.from_config(config)
    assert encoder.measurement == "energy"
    assert encoder.node == "node-a"
    assert encoder.sensor_tags[2] == {"rack": "r2", "customer": "globex"}
    config = make_config(tmp_path, "http://127.0.0.1:1", node_id="rack-host")
    assert PointEncoder.from_config(config).node == "rack-host"


# -- connection forms ----------------------------------------------------------


def test_target_for_influxdb_2(tmp_path: Path) -> None:
    config = make_config(tmp_path, "https://user:pw@influx.example:8086/")
    target = InfluxTarget.from_config(config.influxdb)
    assert (target.org, target.bucket, target.token) == ("home", "energy", TOKEN)
    assert target.safe_url == "https://influx.example:8086"
    assert TOKEN not in repr(target)


def test_target_for_influxdb_1_8_compatibility(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        "http://127.0.0.1:8086",
        bucket=None,
        token=None,
        org=None,
        database="telemetry",
        retention_policy="autogen",
        username="writer",
        password="pw",
    )
    target = InfluxTarget.from_config(config.influxdb)
    assert target.bucket == "telemetry/autogen"
    assert target.token == "writer:pw"
    assert target.org == "-"


# -- delivery to a real server -------------------------------------------------


async def test_points_arrive_with_values_tags_and_timestamps(
    tmp_path: Path, victoria: VictoriaMetrics
) -> None:
    measurement = unique_measurement()
    config = make_config(tmp_path, victoria.url, measurement=measurement)
    readings = [reading(i, sensor=1 + i % 2) for i in range(200)]
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write(readings)
        await wait_until(lambda: sink.stats()["points_written"] == 200)
        assert sink.stats()["spool_depth"] == 0
    series = export(victoria, measurement)
    by_key = {(s["metric"]["__name__"], s["metric"]["sensor"]): s for s in series}
    assert {name for name, _ in by_key} == {f"{measurement}_{f}" for f in FIELDS}
    watts = by_key[(f"{measurement}_watts", "1")]
    assert watts["metric"] == {
        "__name__": f"{measurement}_watts",
        "sensor": "1",
        "name": "meter-1",
        "rack": "r1",
        "customer": "acme",
        "location": "lab",
        "node": "node-a",
    }
    expected = [r for r in readings if r.sensor == 1]
    assert watts["timestamps"] == [r.time_ns // 1_000_000 for r in expected]
    assert watts["values"] == [r.watts for r in expected]
    wh = by_key[(f"{measurement}_wh_total", "2")]
    assert wh["values"] == [r.wh_total for r in readings if r.sensor == 2]
    assert by_key[(f"{measurement}_rssi_dbm", "2")]["values"][0] == -42


async def test_aggregation_writes_one_mean_point_per_meter_per_interval(
    tmp_path: Path, victoria: VictoriaMetrics
) -> None:
    measurement = unique_measurement()
    config = make_config(tmp_path, victoria.url, measurement=measurement, aggregate_s=1)
    # 3 s of readings every 10 ms, alternating meters: intervals of 1 s hold
    # i = 0..99, 100..199, 200..299, i.e. 50 readings per meter each.
    readings = [reading(i, sensor=1 + i % 2) for i in range(300)]
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write(readings[:150])
        await sink.write(readings[150:])
        await wait_until(lambda: sink.stats()["points_written"] == 4)
        assert sink.stats()["aggregate_open"] == 2
        await sink.flush()  # shutdown writes the open interval
        assert sink.stats()["points_written"] == 6
        assert sink.stats()["aggregate_open"] == 0
    series = export(victoria, measurement)
    by_key = {(s["metric"]["__name__"], s["metric"]["sensor"]): s for s in series}
    # Meter 1 has the even i of each interval (mean offset 49), meter 2 the odd.
    for sensor, offset in ((1, 49), (2, 50)):
        ins = [
            [r for r in readings if r.sensor == sensor and r.time_ns // 10**9 == t]
            for t in sorted({r.time_ns // 10**9 for r in readings})
        ]
        watts = by_key[(f"{measurement}_watts", str(sensor))]
        # The mean of the interval, stamped with its last reading's time.
        assert watts["values"] == [100.0 + 100 * k + offset for k in range(3)]
        assert watts["values"] == [sum(r.watts for r in g) / len(g) for g in ins]
        assert watts["timestamps"] == [g[-1].time_ns // 1_000_000 for g in ins]
        wh = by_key[(f"{measurement}_wh_total", str(sensor))]
        assert wh["values"] == [g[-1].wh_total for g in ins]
        pf = by_key[(f"{measurement}_pf", str(sensor))]
        expected_pf = [sum(r.watts for r in g) / sum(r.va for r in g) for g in ins]
        assert pf["values"] == pytest.approx(expected_pf)
    # Six points (three intervals, two meters), every field of each.
    assert sum(len(s["values"]) for s in series) == 6 * len(FIELDS)


async def test_aggregated_points_are_written_when_every_meter_falls_silent(
    tmp_path: Path, victoria: VictoriaMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wattd.core.aggregate.IDLE_MIN_S", 0.5)
    measurement = unique_measurement()
    config = make_config(tmp_path, victoria.url, measurement=measurement, aggregate_s=1)
    # Half a second of two meters, then silence (the radio was unplugged).
    readings = [reading(i, sensor=1 + i % 2) for i in range(50)]
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write(readings)
        await asyncio.sleep(0.5)
        assert sink.stats()["aggregate_open"] == 2
        # No flush: two intervals of silence close them.
        await wait_until(lambda: sink.stats()["points_written"] == 2, timeout_s=10)
        assert sink.stats()["aggregate_open"] == 0
    series = export(victoria, measurement)
    watts = {
        s["metric"]["sensor"]: s["values"]
        for s in series
        if s["metric"]["__name__"] == f"{measurement}_watts"
    }
    assert watts == {
        "1": [statistics.fmean(r.watts for r in readings if r.sensor == 1)],
        "2": [statistics.fmean(r.watts for r in readings if r.sensor == 2)],
    }


async def test_aggregated_points_survive_a_failing_spool_without_double_counting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, f"http://127.0.0.1:{free_port()}", aggregate_s=1)
    sink = InfluxSink(config)
    await sink.start()
    spool = sink._spool
    assert spool is not None
    real_append = spool.append
    failing = True

    async def append(stream: str, rows: Any) -> Any:
        if failing:
            raise SpoolError("disk full")
        return await real_append(stream, rows)

    monkeypatch.setattr(spool, "append", append)
    # reading(i) is at T0 + 10i ms: i < 100 is the first 1 s interval.
    await sink.write([reading(i) for i in range(0, 100, 10)])
    # This batch closes the first interval, which the spool refuses. The batch
    # is taken all the same (a retry would count it twice) ...
    await sink.write([reading(100)])
    assert sink.stats()["spool_depth"] == 0
    # ... and the next batch is refused, untouched, until the spool recovers.
    with pytest.raises(SinkUnavailable, match="disk full"):
        await sink.write([reading(150)])
    failing = False
    await sink.write([reading(150)])  # the daemon's retry of that batch
    await sink.stop()
    again = AsyncSpool.for_config(config)
    try:
        lines = [item.payload for item in await again.peek(STREAM, 100)]
    finally:
        await again.close()
    encoder = PointEncoder.from_config(config)
    first = [reading(i) for i in range(0, 100, 10)]
    second = [reading(100), reading(150)]
    expected = [
        dataclasses.replace(
            group[-1],
            watts=sum(r.watts for r in group) / len(group),
            va=sum(r.va for r in group) / len(group),
            power_factor=sum(r.watts for r in group) / sum(r.va for r in group),
            wh_delta=sum(r.wh_delta for r in group),
        )
        for group in (first, second)
    ]
    assert lines == [encoder.encode(r) for r in expected]


async def test_batches_by_size_gzip_and_ns_precision(
    tmp_path: Path, fake: FakeInflux
) -> None:
    config = make_config(tmp_path, fake.url, batch_size=100, flush_interval_s=30)
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write([reading(i) for i in range(250)])
        # The size trigger sends full batches without waiting for the interval.
        await wait_until(lambda: sink.stats()["points_written"] >= 200)
        assert sink.stats()["spool_depth"] <= 50
    sizes = [len(r.lines) for r in fake.requests]
    assert sizes[:2] == [100, 100]
    first = fake.requests[0]
    assert first.headers["Content-Encoding"] == "gzip"
    assert first.headers["Authorization"] == f"Token {TOKEN}"
    assert first.query == {"org": "home", "bucket": "energy", "precision": "ns"}
    assert first.lines[0] == PointEncoder.from_config(config).encode(reading(0))


async def test_interval_flushes_a_partial_batch_without_gzip(
    tmp_path: Path, fake: FakeInflux
) -> None:
    config = make_config(tmp_path, fake.url, gzip=False, flush_interval_s=0.1)
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write([reading(0)])
        await wait_until(lambda: sink.stats()["points_written"] == 1)
    assert "Content-Encoding" not in fake.requests[0].headers


async def test_influxdb_1_8_form_sends_db_rp_and_user_password(
    tmp_path: Path, fake: FakeInflux
) -> None:
    # api: v2 keeps a database on the 1.8+ compatibility API (/api/v2/write).
    config = make_config(
        tmp_path,
        fake.url,
        bucket=None,
        token=None,
        org=None,
        api="v2",
        database="telemetry",
        retention_policy="one_year",
        username="writer",
        password="pw",
    )
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write([reading(0)])
        await wait_until(lambda: sink.stats()["points_written"] == 1)
    request = fake.requests[0]
    assert request.query["bucket"] == "telemetry/one_year"
    assert request.headers["Authorization"] == "Token writer:pw"


# -- failures ------------------------------------------------------------------


async def test_bad_token_is_a_clear_error_and_points_wait(
    tmp_path: Path,
    fake: FakeInflux,
    fast_backoff: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def auth(request: Recorded) -> web.Response:
        if request.headers.get("Authorization") != "Token good-token":
            return influx_error(401, "unauthorized access")
        return web.Response(status=204)

    fake.rule = auth
    config = make_config(tmp_path, fake.url)
    with caplog.at_level(logging.DEBUG, logger="wattd"):
        async with running_sink(InfluxSink(config)) as sink:
            await sink.write([reading(i) for i in range(5)])
            await wait_until(lambda: sink.stats()["retries"] >= 2)
            stats = sink.stats()
            assert stats["spool_depth"] == 5
            assert stats["failing"] == 1
            assert stats["points_written"] == 0
            assert sink.last_error is not None
            assert "refused the credentials (HTTP 401: unauthorized access)" in (
                sink.last_error
            )
            assert "check token or token_file" in sink.last_error
            # A fixed token (SIGHUP) is used at once, and nothing was lost.
            sink.reconfigure(make_config(tmp_path, fake.url, token="good-token"))
            await wait_until(lambda: sink.stats()["points_written"] == 5)
            assert sink.stats()["failing"] == 0
    assert "refused the credentials" in caplog.text
    assert "accepts writes again" in caplog.text
    assert TOKEN not in caplog.text
    assert "good-token" not in caplog.text


async def test_closed_port_is_a_clear_error(tmp_path: Path, fast_backoff: None) -> None:
    config = make_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write([reading(0)])
        await wait_until(lambda: sink.stats()["retries"] >= 1)
        assert sink.last_error is not None
        assert "cannot connect to http://127.0.0.1:" in sink.last_error
        assert "is InfluxDB running" in sink.last_error
        assert sink.stats()["spool_depth"] == 1


async def test_timeout_is_a_clear_error(tmp_path: Path, fake: FakeInflux) -> None:
    async def slow(_request: Recorded) -> web.Response:
        await asyncio.sleep(0.6)
        return web.Response(status=204)

    fake.rule = slow
    writer = InfluxWriter(
        InfluxTarget.from_config(
            make_config(tmp_path, fake.url, timeout_s=0.2).influxdb
        )
    )
    with pytest.raises(SinkUnavailable, match=r"did not answer within 0.2 s"):
        await writer.write(b"m f=1 1")
    await writer.close()


async def test_server_errors_are_retried_until_accepted(
    tmp_path: Path, fake: FakeInflux, fast_backoff: None
) -> None:
    answers = [500, 503, 429]

    async def flaky(_request: Recorded) -> web.Response:
        if answers:
            return influx_error(answers.pop(0), "try later", **{"Retry-After": "0"})
        return web.Response(status=204)

    fake.rule = flaky
    config = make_config(tmp_path, fake.url)
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write([reading(i) for i in range(10)])
        await wait_until(lambda: sink.stats()["points_written"] == 10)
        assert sink.stats()["retries"] == 3
    # The same batch was sent each time: nothing lost, nothing extra.
    assert [len(r.lines) for r in fake.requests] == [10, 10, 10, 10]
    assert fake.requests[0].lines == fake.requests[-1].lines


async def test_refused_point_is_dead_lettered_and_the_rest_is_delivered(
    tmp_path: Path, fake: FakeInflux, victoria: VictoriaMetrics
) -> None:
    measurement = unique_measurement()
    message = (
        f'partial write: field type conflict: input field "watts" on measurement'
        f' "{measurement}" is type float, already exists as type integer dropped=1'
    )

    async def typed(request: Recorded) -> web.Response:
        # Like InfluxDB: a batch with a conflicting point is refused as a whole.
        if any(b"sensor=13 " in line for line in request.lines):
            return influx_error(400, message)
        return await forward(request, victoria.url)

    fake.rule = typed
    config = make_config(tmp_path, fake.url, measurement=measurement, batch_size=64)
    readings = [reading(i, sensor=13 if i == 37 else 1) for i in range(64)]
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write(readings)
        await wait_until(lambda: sink.stats()["dead_letters"] == 1)
        await wait_until(lambda: sink.stats()["points_written"] == 63)
        assert sink.stats()["spool_depth"] == 0
        sent_before = len(fake.requests)
        # The refused point is never sent again.
        await sink.write([reading(100)])
        await wait_until(lambda: sink.stats()["points_written"] == 64)
        assert len(fake.requests) == sent_before + 1
        assert fake.requests[-1].lines == [
            PointEncoder.from_config(config).encode(reading(100))
        ]
        spool = AsyncSpool.for_config(config)
        (letter,) = await spool.dead_letters(STREAM)
        await spool.close()
    # Bisection: about 2*log2(64) requests, not one per point.
    assert sent_before <= 2 * 6 + 1
    assert letter.reason == f"HTTP 400: {message}"
    assert letter.payload == PointEncoder.from_config(config).encode(readings[37])
    watts = [
        s
        for s in export(victoria, measurement)
        if s["metric"]["__name__"].endswith("_watts")
    ]
    (series,) = watts
    assert series["values"] == [r.watts for r in readings if r.sensor == 1] + [200.0]


def test_classify_known_failures() -> None:
    target = InfluxTarget(
        url="http://u:p@db.example:8086", org="o", bucket="b", token="t"
    )

    class Response:
        def __init__(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.status = status
            self.reason = "Reason"
            self.data = data
            self._headers = headers

        def getheaders(self) -> dict[str, str]:
            return self._headers

        def getheader(self, name: str, default: str | None = None) -> str | None:
            return self._headers.get(name, default)

    def api(status: int, body: bytes = b"", **headers: str) -> rest.ApiException:
        return rest.ApiException(http_resp=Response(status, body, headers))

    assert isinstance(
        classify_error(api(403, b'{"message":"no"}'), target), SinkAuthError
    )
    busy = classify_error(api(429, b"", **{"Retry-After": "7"}), target)
    assert isinstance(busy, InfluxBusy)
    assert busy.retry_after_s == 7
    rejected = classify_error(api(413, b'{"message":"too large"}'), target)
    assert isinstance(rejected, InfluxRejected)
    assert rejected.server_message == "too large"
    missing = classify_error(
        api(404, b'{"message":"bucket \\"b\\" not found"}'), target
    )
    assert isinstance(missing, SinkUnavailable)
    assert 'bucket "b" not found' in str(missing)
    dns = classify_error(OSError("boom"), target)
    assert "db.example:8086" in str(dns)
    for error in (busy, rejected, missing, dns):
        assert "u:p" not in str(error)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (500, 60.0)]:
        delays = [
            backoff_delay(
                attempt,
                initial_s=influx_module.BASE_BACKOFF_S,
                max_s=60.0,
                jitter=BACKOFF_JITTER,
                rng=rng,
            )
            for _ in range(200)
        ]
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
        assert len(set(delays)) > 100


# -- lifecycle and stats -------------------------------------------------------


async def test_stats_report_backlog_and_its_age(tmp_path: Path) -> None:
    config = make_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    sink = InfluxSink(config)
    assert sink.stats() == {}
    await sink.start()
    now = datetime.now(UTC)
    await sink.write(
        [reading(0, time=now - timedelta(seconds=30)), reading(1, time=now)]
    )
    stats = sink.stats()
    assert stats["spool_depth"] == 2
    assert stats["spool_bytes"] > 0
    assert 29 <= stats["oldest_pending_age_s"] < 60
    assert stats["spool_durable"] == 1
    await sink.stop()


async def test_flush_sends_the_backlog_once_and_restart_resumes(
    tmp_path: Path, fake: FakeInflux
) -> None:
    config = make_config(tmp_path, fake.url)
    sink = InfluxSink(config)
    await sink.start()
    await sink.write([reading(i) for i in range(3)])
    await sink.flush()
    assert sink.stats()["points_written"] == 3
    fake.rule = lambda _r: asyncio.sleep(0, influx_error(503, "down"))
    await sink.write([reading(3)])
    await sink.flush()
    await sink.stop()
    # A new process finds the point left behind and sends it.
    fake.rule = FakeInflux.accept
    again = InfluxSink(config)
    async with running_sink(again):
        await wait_until(lambda: again.stats()["points_written"] == 1)
    assert fake.requests[-1].lines == [
        PointEncoder.from_config(config).encode(reading(3))
    ]


async def test_reconfigure_changes_tags_of_new_points(
    tmp_path: Path, fake: FakeInflux
) -> None:
    config = make_config(tmp_path, fake.url)
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write([reading(0)])
        await wait_until(lambda: sink.stats()["points_written"] == 1)
        sink.reconfigure(make_config(tmp_path, fake.url, measurement="watts_v2"))
        await sink.write([reading(1)])
        await wait_until(lambda: sink.stats()["points_written"] == 2)
    assert fake.requests[0].lines[0].startswith(b"power,")
    assert fake.requests[-1].lines[0].startswith(b"watts_v2,")


def test_registry_builds_the_influx_sink(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:1")
    assert any(isinstance(s, InfluxSink) for s in build_sinks(config))


# -- wattd influx-test ---------------------------------------------------------


def write_config(tmp_path: Path, url: str, token: str = TOKEN) -> Path:
    path = tmp_path / "wattd.yaml"
    path.write_text(
        f"state_dir: {json.dumps(str(tmp_path))}\n"
        f"influxdb: {{enabled: true, url: {url}, org: home, bucket: energy,"
        f" token: {token}}}\n"
    )
    return path


def test_influx_test_passes_against_a_real_server(
    tmp_path: Path, victoria: VictoriaMetrics, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli_main(["influx-test", "--config", str(write_config(tmp_path, victoria.url))])
        == 0
    )
    out = capsys.readouterr().out
    assert f"ok: {victoria.url} answers" in out
    assert "ok: wrote a test point to" in out
    # A point at the current time can take a moment to become searchable.
    block_until(
        lambda: bool(victoria.export('{__name__="wattd_check_ok"}')),
        timeout_s=10,
        interval_s=0.1,
        what="the test point",
    )


async def _serve(fake: FakeInflux, argv: list[str]) -> int:
    return await asyncio.to_thread(cli_main, argv)


async def test_influx_test_bad_token(
    tmp_path: Path, fake: FakeInflux, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.rule = lambda _r: asyncio.sleep(0, influx_error(401, "unauthorized access"))
    code = await _serve(
        fake, ["influx-test", "--config", str(write_config(tmp_path, fake.url))]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert f"ok: {fake.url} answers (version fake-2.7)" in out
    assert "FAIL: " in out
    assert "refused the credentials (HTTP 401: unauthorized access)" in out
    assert TOKEN not in out


async def test_influx_test_not_an_influxdb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}"
        code = await asyncio.to_thread(
            cli_main, ["influx-test", "--config", str(write_config(tmp_path, url))]
        )
    finally:
        await runner.cleanup()
    assert code == 1
    assert "does not point at an InfluxDB server" in capsys.readouterr().out


def test_influx_test_closed_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cli_main(["influx-test", "--config", str(write_config(tmp_path, url))]) == 1
    out = capsys.readouterr().out
    assert f"FAIL: cannot connect to {url}" in out


# -- zero loss across an outage and a kill -9 ----------------------------------


class Harness:
    """``influx_harness.py`` in a child process that the test can SIGKILL."""

    def __init__(self, config_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS), str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
        )

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"harness died on {command!r}"
        return answer.strip()

    def stats(self) -> dict[str, float]:
        return dict(json.loads(self.ask("stats")))

    def wait_drained(self, points: int, timeout: float = 30) -> None:
        last: dict[str, float] = {}

        def drained() -> bool:
            last.update(self.stats())
            return last["points_written"] >= points and not last["spool_depth"]

        block_until(drained, timeout_s=timeout, what=lambda: f"drained: {last}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.slow
def test_outage_and_kill_9_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, fresh_victoria: VictoriaMetrics
) -> None:
    config_path = tmp_path / "wattd.yaml"
    config_path.write_text(
        f"state_dir: {json.dumps(str(tmp_path))}\n"
        f"influxdb: {{enabled: true, url: {fresh_victoria.url}, bucket: b,"
        " org: o, token: t, flush_interval_s: 0.05, max_backoff_s: 1}\n"
    )
    first = Harness(config_path)
    try:
        assert first.ask("feed 0 2000") == "fed 0 2000"
        first.wait_drained(2000)
        fresh_victoria.stop()
        assert first.ask("feed 2000 10000") == "fed 2000 10000"
        assert first.stats()["spool_depth"] == 10_000
    finally:
        first.kill()
    fresh_victoria.start()
    second = Harness(config_path)
    try:
        second.wait_drained(10_000)
        assert second.ask("quit") == "bye"
        assert second.proc.wait(10) == 0
    finally:
        second.kill()
    series = fresh_victoria.export_at_least(
        '{__name__=~"power_.*"}', 12_000 * len(FIELDS)
    )
    assert {s["metric"]["__name__"] for s in series} == {f"power_{f}" for f in FIELDS}
    for name in ("power_watts", "power_wh_total"):
        points = sorted(
            (int(s["metric"]["sensor"]), t, v)
            for s in series
            if s["metric"]["__name__"] == name
            for t, v in zip(s["timestamps"], s["values"], strict=True)
        )
        t0_ms = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
        scale = 1.0 if name == "power_watts" else 1 / 1000
        expected = sorted((i % 5 + 1, t0_ms + i, i * scale) for i in range(12_000))
        # Every point once: none missing and none twice.
        assert len(points) == 12_000
        assert [(s, t) for s, t, _ in points] == [(s, t) for s, t, _ in expected]
        assert all(
            math.isclose(v, e, rel_tol=1e-12, abs_tol=1e-12)
            for (_, _, v), (_, _, e) in zip(points, expected, strict=True)
        )


def spool_counters(path: Path) -> dict[str, int]:
    """The influx stream's counters, read from the daemon's spool file."""
    if not path.exists():
        return {"depth": 0, "appended": 0, "acked": 0, "dropped": 0}
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        ) as conn:
            row = conn.execute(
                "SELECT depth, appended, acked, dropped FROM streams WHERE name = ?",
                (STREAM,),
            ).fetchone()
    except sqlite3.OperationalError:
        row = None  # the daemon is still creating the file
    if row is None:
        return {"depth": 0, "appended": 0, "acked": 0, "dropped": 0}
    return dict(zip(("depth", "appended", "acked", "dropped"), row, strict=True))


def wait_counters(
    path: Path,
    done: Callable[[dict[str, int]], bool],
    daemon: DaemonProcess,
    timeout: float = 30,
) -> dict[str, int]:
    counters: dict[str, int] = {}

    def reached() -> bool:
        counters.update(spool_counters(path))
        return done(counters)

    block_until(
        reached,
        timeout_s=timeout,
        what=lambda: (
            f"spool counters stuck at {counters}; wattd log:\n{daemon.log[-3000:]}"
        ),
    )
    return counters


@pytest.mark.slow
def test_wattd_run_on_a_pty_survives_outage_and_kill_9(
    tmp_path: Path, pty: Pty, fresh_victoria: VictoriaMetrics
) -> None:
    meters = [
        MeterModel.with_quirks(a, ResistiveLoad(watts=50.0 * a), seed=a)
        for a in range(1, 11)
    ]
    config = {
        "ports": [{"device": pty.path, "name": "sim"}],
        "sensors": meter_sensors(meters),
        "state_dir": str(tmp_path / "state"),
        "store": {"enabled": False},
        "influxdb": {
            "enabled": True,
            "url": fresh_victoria.url,
            "bucket": "b",
            "org": "o",
            "token": "t",
            "flush_interval_s": 0.1,
            "max_backoff_s": 1,
        },
    }
    path = write_daemon_config(tmp_path / "wattd.yaml", config)
    spool_path = tmp_path / "state" / "spool.sqlite"
    # 100x real time: each meter sends every ~20 ms.
    feed = MeterFeed(Simulator(meters, seed=3), pty.master, speed=100)
    daemon = DaemonProcess(path).start()
    try:
        daemon.wait_for_log("running")
        feed.start()
        wait_counters(spool_path, lambda c: c["acked"] >= 200, daemon)
        fresh_victoria.stop()
        outage_start = spool_counters(spool_path)["acked"]
        wait_counters(spool_path, lambda c: c["depth"] >= 1000, daemon)
        feed.pause()
        # Everything written to the pty must be spooled before the kill.
        counters = wait_counters(
            spool_path, lambda c: c["appended"] == len(feed.frames_sent()), daemon
        )
        daemon.kill9()
    finally:
        feed.stop()
        daemon.stop()
    assert counters["acked"] - outage_start <= 200
    fresh_victoria.start()
    again = DaemonProcess(path).start()
    try:
        wait_counters(spool_path, lambda c: c["depth"] == 0, again)
        again.signal(signal.SIGTERM)
        assert again.wait() == 0
    finally:
        again.stop()
    final = spool_counters(spool_path)
    assert final["dropped"] == 0
    assert final["acked"] == final["appended"] == len(feed.frames_sent())
    series = fresh_victoria.export_at_least(
        '{__name__="power_watts"}', final["appended"]
    )
    points = [
        (s["metric"]["sensor"], t, v)
        for s in series
        for t, v in zip(s["timestamps"], s["values"], strict=True)
    ]
    # Every reading arrived, none of them twice. (Two frames read in one chunk
    # share an arrival time, so a resend shows as an identical value too.)
    assert len(points) == final["appended"]
    assert len(set(points)) == len(points)
    per_sensor = {s["metric"]["sensor"]: len(s["timestamps"]) for s in series}
    sent = collections.Counter(str(f.address) for _, f in feed.frames_sent())
    assert per_sensor == dict(sent)
