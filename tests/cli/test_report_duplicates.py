"""``wattd report --source``: a meter heard by two coordinators is counted once.

Nodes ``hall1-a`` and ``hall1-b`` share a PAN ID, so both hear every frame of
meter 1 and write it (with ``influxdb.frame_hash``) under their own node tag.
``hall1-b`` also has a meter 2 of its own. The fleet report, from a real
VictoriaMetrics and a real influxd 1.x, must count meter 1 once, keep it as
``hall1-a/1`` (the lexically first node) and name the meter and both nodes.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.services import (
    Influxd,
    VictoriaMetrics,
    post,
    running,
    source_args,
)
from wattd.cli import main
from wattd.config import parse_config
from wattd.core.readings import Reading
from wattd.sinks.influx.lineprotocol import PointEncoder

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

START = datetime(2025, 5, 6, 8, tzinfo=UTC)
END = START + timedelta(hours=2)
FRAME_S = 2.0
METER_1_W, METER_2_W = 200.0, 100.0
DATABASE = "fleet"


def lines() -> list[bytes]:
    """Both nodes' points of meter 1 (the same frames) and node b's meter 2."""
    rng = random.Random(14)
    out: list[bytes] = []
    encoders = {
        node: PointEncoder.from_config(
            parse_config(f"mqtt: {{node_id: {node}}}\ninfluxdb: {{frame_hash: true}}\n")
        )
        for node in ("hall1-a", "hall1-b")
    }
    frames = int((END - START).total_seconds() / FRAME_S) + 600
    t0 = START - timedelta(minutes=10)
    for k in range(frames):
        t = t0 + timedelta(seconds=k * FRAME_S)
        one = rng.getrandbits(53)
        for node, delay_ms, total in (("hall1-a", 0, 10.0), ("hall1-b", 35, 900.0)):
            point = reading(1, t + timedelta(milliseconds=delay_ms), METER_1_W, k)
            line = encoders[node].encode(
                _with(point, wh_total=total + point.wh_total, frame_hash=one)
            )
            assert line is not None
            out.append(line)
        two = reading(2, t + timedelta(milliseconds=700), METER_2_W, k)
        line = encoders["hall1-b"].encode(_with(two, frame_hash=rng.getrandbits(53)))
        assert line is not None
        out.append(line)
    return out


def reading(sensor: int, t: datetime, watts: float, k: int) -> Reading:
    return Reading(
        sensor=sensor,
        name=f"web-{sensor}",
        time=t,
        monotonic_s=0.0,
        watts=watts,
        va=watts,
        vrms=230.0,
        irms=watts / 230,
        power_factor=1.0,
        wh_total=watts * k * FRAME_S / 3600,
        wh_delta=0.0,
        rssi_dbm=-60,
        labels={"customer": "acme"},
    )


def _with(r: Reading, **changes: Any) -> Reading:
    import dataclasses

    return dataclasses.replace(r, **changes)


@pytest.fixture(scope="module")
def points() -> list[bytes]:
    return lines()


@pytest.fixture(scope="module")
def victoria(
    points: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VictoriaMetrics]:
    with running(VictoriaMetrics(tmp_path_factory.mktemp("vm"))) as server:
        post(f"{server.url}/api/v2/write?precision=ns", b"\n".join(points))
        server.export_at_least('{__name__="power_frame_hash"}', len(points))
        yield server


@pytest.fixture(scope="module")
def influxd(
    points: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Influxd]:
    with running(Influxd(tmp_path_factory.mktemp("influxd"))) as server:
        server.create_database(DATABASE)
        post(f"{server.url}/write?db={DATABASE}&precision=ns", b"\n".join(points))
        yield server


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "wattd.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "tariffs: {timezone: UTC, plans: {dc: {currency: EUR, price_per_kwh: 0.3}},"
        " default: dc}\n"
    )
    return path


def source(kind: str, request: pytest.FixtureRequest) -> list[str]:
    store = "victoria" if kind == "victoriametrics" else "influxd"
    server: VictoriaMetrics | Influxd = request.getfixturevalue(store)
    return source_args(kind, server.url, DATABASE)


def report(
    config: Path, args: list[str], fmt: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    command = ["report", "-c", str(config), *args, "--by", "sensor"]
    command += ["--from", START.isoformat(), "--to", END.isoformat()]
    assert main([*command, "--format", fmt]) == 0
    out, err = capsys.readouterr()
    return out, err


@pytest.mark.parametrize("kind", ["victoriametrics", "influxdb"])
def test_a_meter_heard_by_two_coordinators_is_counted_once(
    kind: str,
    config: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, err = report(config, source(kind, request), "json", capsys)
    data: dict[str, Any] = json.loads(out)
    groups = {g["group"]: g for g in data["groups"]}
    assert set(groups) == {"hall1-a/1", "hall1-b/2"}
    hours = (END - START).total_seconds() / 3600
    assert groups["hall1-a/1"]["it_kwh"] == pytest.approx(
        METER_1_W * hours / 1000, rel=1e-3
    )
    # Both nodes' copies would make it 0.4 + 0.4 + 0.2.
    assert data["total"]["it_kwh"] == pytest.approx(
        (METER_1_W + METER_2_W) * hours / 1000, rel=1e-3
    )
    (dup,) = data["duplicates"]
    assert dup["meter"] == "hall1-a/1"
    assert dup["duplicate"] == "hall1-b/1"
    assert dup["nodes"] == ["hall1-a", "hall1-b"]
    assert dup["matched_minutes"] > dup["minutes"] / 2
    assert "meter hall1-a/1 is also reported as hall1-b/1" in err
    assert "nodes hall1-a, hall1-b" in err


def test_the_table_report_warns_on_stderr(
    config: Path,
    victoria: VictoriaMetrics,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--source", f"victoriametrics={victoria.url}"]
    out, err = report(config, args, "table", capsys)
    assert "hall1-a/1" in out
    assert "hall1-b/1" not in out
    assert "meter hall1-a/1 is also reported as hall1-b/1" in err
    assert "--pan-id" in err
    assert len(err.strip().splitlines()) == 1
