"""Backfill from the local store to a real VictoriaMetrics, with dedup on.

The store is filled with readings of three meters; every check reads the
points back with VictoriaMetrics' export API and compares them, value for
value and millisecond for millisecond, with the readings in the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.services import VictoriaMetrics
from wattd.clients.influx import InfluxTarget, InfluxWriter
from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.ops.backfill import (
    BackfillJob,
    BackfillResult,
    Checkpoint,
    run_backfill,
    stored_to_reading,
)
from wattd.sinks.influx.lineprotocol import FIELDS, PointEncoder
from wattd.storage.store import Store, to_ns

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

METERS = (1, 2, 3)
PER_METER = 700
START = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
FIELD_OF = {
    "watts": "watts",
    "va": "va",
    "vrms": "vrms",
    "irms": "irms",
    "pf": "power_factor",
    "wh_total": "wh_total",
    "rssi_dbm": "rssi_dbm",
}


@pytest.fixture(scope="module")
def dedup_victoria(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VictoriaMetrics]:
    """A VictoriaMetrics that keeps one sample per series and millisecond."""
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria-dedup"))
    server.argv.append("-dedup.minScrapeInterval=1ms")
    server.start()
    yield server
    server.stop()


def make_reading(sensor: int, i: int) -> Reading:
    """Values with short decimal forms, which the server keeps exactly."""
    return Reading(
        sensor=sensor,
        name=f"meter-{sensor}",
        time=START + timedelta(seconds=2 * i, microseconds=sensor * 1000),
        monotonic_s=2.0 * i,
        watts=100.0 * sensor + (i % 17) * 0.25,
        va=110.0 * sensor + (i % 5) * 0.5,
        vrms=120.0 + (i % 3) * 0.125,
        irms=0.5 * sensor + (i % 7) * 0.0625,
        # A reading without power factor (no load) has no pf field.
        power_factor=None if i % 50 == 0 else 0.75 + (i % 4) * 0.0625,
        wh_total=1000.0 * sensor + i * 0.125,
        wh_delta=0.125,
        rssi_dbm=-40 - i % 9,
    )


def fill_store(path: Path) -> list[Reading]:
    readings = [make_reading(s, i) for i in range(PER_METER) for s in METERS]
    with Store.open(path) as store:
        store.add(readings)
    return readings


def make_config(
    tmp_path: Path, url: str, measurement: str, *, frame_hash: bool = False
) -> Config:
    return parse_config(
        f"state_dir: {json.dumps(str(tmp_path))}\n"
        "mqtt: {node_id: node-a}\n"
        f"influxdb: {{enabled: true, url: {json.dumps(url)}, org: home,"
        f" bucket: energy, token: t0ken, measurement: {measurement},"
        f" frame_hash: {json.dumps(frame_hash)}}}\n"
        "sensors:\n"
        "  - {address: 1, name: meter-1, rack: r1, customer: acme}\n"
        "  - {address: 2, name: meter-2, rack: r2, customer: globex}\n"
        "  - {address: 3, name: meter-3, rack: r2, customer: acme}\n"
    )


async def backfill(
    config: Config, *, restart: bool = False, **job: Any
) -> BackfillResult:
    target = InfluxTarget.from_config(config.influxdb)
    settings: dict[str, Any] = {
        "destination": target.describe(),
        "from_ns": 0,
        "until_ns": to_ns(datetime(2030, 1, 1, tzinfo=UTC)),
        **job,
    }
    spec = BackfillJob(**settings)
    checkpoint = Checkpoint.load(
        config.state_dir / "backfill.json", spec.key, restart=restart
    )
    writer = InfluxWriter(target)
    try:
        return await run_backfill(
            spec,
            store_path=config.store_path,
            encoder=PointEncoder.from_config(config),
            writer=writer,
            checkpoint=checkpoint,
        )
    finally:
        await writer.close()


def assert_each_reading_once(
    server: VictoriaMetrics, measurement: str, readings: list[Reading]
) -> None:
    """Every field of every reading is in the server once, as it was stored."""
    total = sum(
        1 for r in readings for f in FIELD_OF.values() if getattr(r, f) is not None
    )
    series = server.export_at_least(f'{{__name__=~"{measurement}_.*"}}', total)
    got = {
        (s["metric"]["__name__"], int(s["metric"]["sensor"])): list(
            zip(s["timestamps"], s["values"], strict=True)
        )
        for s in series
    }
    assert {name for name, _ in got} == {f"{measurement}_{f}" for f in FIELDS}
    for (name, sensor), samples in got.items():
        attr = FIELD_OF[name.removeprefix(f"{measurement}_")]
        expected = [
            (r.time_ns // 1_000_000, float(getattr(r, attr)))
            for r in readings
            if r.sensor == sensor and getattr(r, attr) is not None
        ]
        assert samples == expected, name
    assert sum(len(s) for s in got.values()) == total


def unique(request: pytest.FixtureRequest) -> str:
    name: str = request.node.name
    return "bf_" + name.replace("test_", "")[:40]


async def test_every_reading_arrives_once_with_its_tags(
    tmp_path: Path, dedup_victoria: VictoriaMetrics, request: pytest.FixtureRequest
) -> None:
    measurement = unique(request)
    config = make_config(tmp_path, dedup_victoria.url, measurement)
    readings = fill_store(config.store_path)
    result = await backfill(config, batch_points=1000)
    assert result.complete
    assert not result.resumed
    assert result.points_sent == len(readings)
    assert result.batches_sent == math.ceil(len(readings) / 1000)
    assert_each_reading_once(dedup_victoria, measurement, readings)
    tags = dedup_victoria.export(f'{measurement}_watts{{sensor="3"}}')[0]["metric"]
    assert tags == {
        "__name__": f"{measurement}_watts",
        "sensor": "3",
        "name": "meter-3",
        "rack": "r2",
        "customer": "acme",
        "node": "node-a",
    }

    again = await backfill(config)
    assert again.points_sent == 0
    assert again.complete
    restarted = await backfill(config, restart=True)
    assert restarted.points_sent == len(readings)
    assert_each_reading_once(dedup_victoria, measurement, readings)


async def test_an_interrupted_run_continues_where_it_stopped(
    tmp_path: Path, dedup_victoria: VictoriaMetrics, request: pytest.FixtureRequest
) -> None:
    measurement = unique(request)
    config = make_config(tmp_path, dedup_victoria.url, measurement)
    readings = fill_store(config.store_path)
    first = await backfill(config, batch_points=300, max_batches=3)
    assert not first.complete
    assert first.points_sent == 900
    saved = json.loads((tmp_path / "backfill.json").read_text())
    (entry,) = saved["ranges"].values()
    # Meter 1 was sent to the end (700), meter 2 up to its 200th reading.
    assert entry["sent_through_ns"] == {
        "1": readings[3 * (PER_METER - 1)].time_ns,
        "2": readings[3 * 199 + 1].time_ns,
    }
    rest = await backfill(config, batch_points=300)
    assert rest.complete
    assert rest.resumed
    # Nothing was sent twice: the checkpoint alone makes it exactly once.
    assert rest.points_sent == len(readings) - 900
    assert_each_reading_once(dedup_victoria, measurement, readings)


async def test_a_range_sends_only_its_readings(
    tmp_path: Path, dedup_victoria: VictoriaMetrics, request: pytest.FixtureRequest
) -> None:
    measurement = unique(request)
    config = make_config(tmp_path, dedup_victoria.url, measurement)
    readings = fill_store(config.store_path)
    lo, hi = START + timedelta(seconds=100), START + timedelta(seconds=300)
    inside = [r for r in readings if lo <= r.time < hi and r.sensor != 2]
    result = await backfill(
        config, from_ns=to_ns(lo), until_ns=to_ns(hi), sensors=[1, 3]
    )
    assert result.points_sent == len(inside)
    assert_each_reading_once(dedup_victoria, measurement, inside)


class Recorder(InfluxWriter):
    """A writer that keeps the bodies instead of sending them."""

    def __init__(self, target: InfluxTarget) -> None:
        super().__init__(target)
        self.bodies: list[bytes] = []

    async def write(self, body: bytes) -> None:
        await asyncio.sleep(0)
        self.bodies.append(body)


async def test_lines_are_the_sinks_own(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9", "power")
    readings = fill_store(config.store_path)
    unknown = make_reading(77, 1)
    with Store.open(config.store_path) as store:
        store.add([unknown])
    target = InfluxTarget.from_config(config.influxdb)
    recorder = Recorder(target)
    job = BackfillJob(destination="x", from_ns=0, until_ns=to_ns(START) + 10**13)
    checkpoint = Checkpoint.load(tmp_path / "cp.json", job.key)
    encoder = PointEncoder.from_config(config)
    await run_backfill(
        job,
        store_path=config.store_path,
        encoder=encoder,
        writer=recorder,
        checkpoint=checkpoint,
    )
    sent = b"\n".join(recorder.bodies).split(b"\n")
    fresh = PointEncoder.from_config(config)
    ordered = sorted([*readings, unknown], key=lambda r: (r.sensor, r.time_ns))
    assert sent == [fresh.encode(r) for r in ordered]


async def test_the_frame_hash_is_sent_as_the_sink_wrote_it(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9", "power", frame_hash=True)
    # The largest hash the pipeline makes, and a reading stored without one.
    hashed = [
        dataclasses.replace(make_reading(1, i), frame_hash=2**53 - 1 - i)
        for i in range(1, 4)
    ]
    unhashed = make_reading(1, 4)
    with Store.open(config.store_path) as store:
        store.add([*hashed, unhashed])
    target = InfluxTarget.from_config(config.influxdb)
    recorder = Recorder(target)
    job = BackfillJob(destination="x", from_ns=0, until_ns=to_ns(START) + 10**13)
    await run_backfill(
        job,
        store_path=config.store_path,
        encoder=PointEncoder.from_config(config),
        writer=recorder,
        checkpoint=Checkpoint.load(tmp_path / "cp.json", job.key),
    )
    sent = b"\n".join(recorder.bodies).split(b"\n")
    fresh = PointEncoder.from_config(config)
    assert sent == [fresh.encode(r) for r in [*hashed, unhashed]]
    assert b",frame_hash=9007199254740990i " in sent[0]
    assert b"frame_hash" not in sent[-1]


def test_a_stored_reading_comes_back_as_it_was(tmp_path: Path) -> None:
    original = make_reading(2, 50)
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add([original])
        (stored,) = store.readings(0, to_ns(START) + 10**13)
    back = stored_to_reading(stored)
    assert back.time_ns == original.time_ns
    assert back.power_factor is None
    assert back.frame_hash is None
    for attr in ("sensor", "name", "watts", "va", "vrms", "irms", "wh_total"):
        assert getattr(back, attr) == getattr(original, attr), attr


def test_a_damaged_checkpoint_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "backfill.json"
    path.write_text("{not json")
    checkpoint = Checkpoint.load(path, "k")
    assert checkpoint.sent_ns == {}
    assert any(p.name.startswith("backfill.json.corrupt-") for p in tmp_path.iterdir())
    assert not path.exists()
    checkpoint.sent_ns[1] = 5
    checkpoint.save()
    assert Checkpoint.load(path, "k").sent_ns == {1: 5}
    assert Checkpoint.load(path, "other").sent_ns == {}
    assert Checkpoint.load(path, "k", restart=True).sent_ns == {}
