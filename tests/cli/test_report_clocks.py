"""``wattd report --source``: each node's clock, seen against the store's receive time.

Three nodes report into a real VictoriaMetrics and a real influxd 1.x:
``hall1-a`` through a real InfluxSink (whose clock probe goes with its
points), ``hall1-b`` with a probe written by hand 5 s ahead of the clock, and
``hall1-c`` with points but no probe. The report must name ``hall1-b`` (and
only it) in a warning, and list every node's clock in its JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
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
from wattd.sinks.influx.sink import InfluxSink, clock_line

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DATABASE = "fleet"
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(minutes=20)
END = NOW + timedelta(minutes=10)
AHEAD_MS = 5_000


def readings(sensor: int) -> list[Reading]:
    """Ten minutes of one meter at 120 W, a frame every 2 s, up to now."""
    t0 = NOW - timedelta(minutes=10)
    return [
        Reading(
            sensor=sensor,
            name=f"web-{sensor}",
            time=t0 + timedelta(seconds=2 * k),
            monotonic_s=2.0 * k,
            watts=120.0,
            va=120.0,
            vrms=230.0,
            irms=120 / 230,
            power_factor=1.0,
            wh_total=120 * 2 * k / 3600,
            wh_delta=0.0,
            rssi_dbm=-60,
            labels={"customer": "acme"},
        )
        for k in range(300)
    ]


def hand_written() -> list[bytes]:
    """``hall1-b``'s points and a probe 5 s ahead; ``hall1-c``'s points only."""
    out = []
    for node in ("hall1-b", "hall1-c"):
        encoder = PointEncoder.from_config(parse_config(f"node: {node}\n"))
        out += [line for r in readings(2) if (line := encoder.encode(r))]
    out.append(clock_line("hall1-b", None, time.time_ns() // 1_000_000 + AHEAD_MS))
    return out


def through_the_sink(tmp_path: Path, influx: dict[str, str]) -> None:
    """``hall1-a``'s readings through a real InfluxSink, which sends the probe."""
    settings = {"enabled": True, "url": "", "flush_interval_s": 0.05, **influx}
    config = parse_config(
        f"state_dir: {json.dumps(str(tmp_path))}\nnode: hall1-a\n"
        f"influxdb: {json.dumps(settings)}\n"
    )

    async def send() -> None:
        sink = InfluxSink(config)
        await sink.start()
        try:
            await sink.write(readings(1))
            await sink.flush()
            assert sink.stats()["points_written"] == 300
        finally:
            await sink.stop()

    asyncio.run(send())


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    with running(VictoriaMetrics(tmp_path_factory.mktemp("vm"))) as server:
        through_the_sink(
            tmp_path_factory.mktemp("node-a"),
            {"url": server.url, "org": "o", "bucket": "b", "token": "t"},
        )
        post(f"{server.url}/api/v2/write?precision=ns", b"\n".join(hand_written()))
        server.export_at_least('{__name__="wattd_clock_sent_ms"}', 2)
        server.export_at_least('{__name__="power_wh_total"}', 900)
        yield server


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    with running(Influxd(tmp_path_factory.mktemp("influxd"))) as server:
        server.create_database(DATABASE)
        through_the_sink(
            tmp_path_factory.mktemp("node-a"),
            {"url": server.url, "database": DATABASE},
        )
        post(
            f"{server.url}/write?db={DATABASE}&precision=ns", b"\n".join(hand_written())
        )
        yield server


def source(kind: str, request: pytest.FixtureRequest) -> list[str]:
    store = "victoria" if kind == "victoriametrics" else "influxd"
    server: VictoriaMetrics | Influxd = request.getfixturevalue(store)
    return source_args(kind, server.url, DATABASE)


def report(
    tmp_path: Path, args: list[str], fmt: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    path = tmp_path / "wattd.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "tariffs: {timezone: UTC, plans: {dc: {currency: EUR, price_per_kwh: 0.3}},"
        " default: dc}\n"
    )
    span = ["--from", START.isoformat(), "--to", END.isoformat()]
    assert main(["report", "-c", str(path), *args, *span, "--format", fmt]) == 0
    out, err = capsys.readouterr()
    return out, err


@pytest.mark.parametrize("kind", ["victoriametrics", "influxdb"])
def test_a_node_5_s_ahead_is_named_and_every_clock_is_listed(
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, err = report(tmp_path, source(kind, request), "json", capsys)
    data: dict[str, Any] = json.loads(out)
    clocks = {c["node"]: c for c in data["clocks"]}
    assert list(clocks) == ["hall1-a", "hall1-b", "hall1-c"]
    a, b, c = clocks["hall1-a"], clocks["hall1-b"], clocks["hall1-c"]
    # The sink's own probe: this host's clock against the store's.
    assert abs(a["offset_s"]) < 1.0
    assert a["status"] == "ok"
    assert 4.0 < b["offset_s"] <= AHEAD_MS / 1000
    assert b["status"] == "off"
    for clock in (a, b):
        measured = datetime.fromisoformat(clock["measured_at"])
        assert START <= measured <= datetime.now(UTC)
    assert c == {
        "node": "hall1-c",
        "offset_s": None,
        "measured_at": None,
        "status": "clock not measured",
    }
    (warning,) = err.strip().splitlines()
    assert "hall1-b (+5.0 s)" in warning or "hall1-b (+4.9 s)" in warning
    assert "more than 1 s off" in warning
    assert "chrony" in warning
    assert "hall1-a" not in warning
    assert "hall1-c" not in warning
    # The probes are no meters: only the three nodes' power series are billed.
    assert {row["group"] for row in data["groups"]} == {
        "hall1-a/1",
        "hall1-b/2",
        "hall1-c/2",
    }


def test_the_table_report_warns_too(
    tmp_path: Path,
    victoria: VictoriaMetrics,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--source", f"victoriametrics={victoria.url}"]
    out, err = report(tmp_path, args, "table", capsys)
    assert "hall1-b" in out
    assert "clock of node(s) hall1-b (+" in err
