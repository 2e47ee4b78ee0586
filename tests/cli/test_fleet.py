"""``wattd fleet status`` against a running fleet and its central VictoriaMetrics.

Three ``wattd run`` nodes write to one VictoriaMetrics. node-a hears its
meters on two ports, and the second port goes idle; node-a and node-b both
hear one more meter (the same frames); node-c is stopped. The store also
holds, written beforehand, half an hour of a meter of node-a with a known
outage. The status must show node-c down and the others up, the idle port's
meter and node-c's meter stale, the double-heard meter named, the configured
meters absent from the store as never seen, and completeness figures that
match the local stores and the known outage.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.cli import run_cli
from tests.fixtures.daemon import write_config
from tests.fixtures.fleetnodes import (
    FleetNode,
    MeterPlan,
    influx_settings,
    past_points,
    start_node,
    stored_minutes,
)
from tests.fixtures.services import Influxd, VictoriaMetrics, post
from tests.fixtures.waiting import block_until
from wattd.cli import main
from wattd.clients.tsdb import open_reader

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

SHARED = "shared"
METERS = {
    "node-a": [
        MeterPlan(1, 400.0, "acme", "r1"),
        MeterPlan(2, 150.0, "globex", "r2"),
        MeterPlan(3, 300.0, "acme", "r9", seed=SHARED),
        MeterPlan(4, 120.0, "globex", "r4", port=1),
    ],
    "node-b": [
        MeterPlan(1, 900.0, "globex", "r3"),
        MeterPlan(3, 300.0, "acme", "r9", seed=SHARED),
    ],
    "node-c": [MeterPlan(1, 250.0, "acme", "r1")],
}
IDLE = ("node-a", 4)
"""The meter on node-a's second port, which goes idle."""
STOPPED = "node-c"
GHOST_MINUTES = 30
GHOST_OUTAGE = range(10, 15)
"""Of the 30 minutes before the last 5, these had no point."""
STALE_AFTER_S = 4
DOWN_AFTER_S = 6
TARIFFS = {"timezone": "UTC", "plans": {"flat": {"price_per_kwh": 0.3}}}
NEVER_SEEN = {"node-a/9", "pdu-77"}


@dataclass
class Fleet:
    victoria: VictoriaMetrics
    nodes: dict[str, FleetNode]
    config: Path
    status: dict[str, Any]
    ghost_minutes: list[int]
    """Start (epoch s) of each minute the ghost meter has points in."""


def ghost_history(now_s: float) -> tuple[bytes, list[int]]:
    """Points of meter node-a/7 (customer initech) with a five-minute outage."""
    tags = "customer=initech,name=meter-7,node=node-a,rack=r7,sensor=7,site=hall1"
    return past_points(
        now_s, tags, minutes=GHOST_MINUTES, outage=GHOST_OUTAGE, ended_min=5
    )


def status(config: Path, url: str) -> dict[str, Any]:
    """``wattd fleet status --json`` in-process (a fixture has no capsys)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(
            [
                "fleet",
                "status",
                "-c",
                str(config),
                "--source",
                f"victoriametrics={url}",
                "--stale-after",
                str(STALE_AFTER_S),
                "--down-after",
                str(DOWN_AFTER_S),
                "--json",
            ]
        )
    assert rc == 0
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def series_count(victoria: VictoriaMetrics, metric: str) -> int:
    return len(victoria.export(f'{{__name__="{metric}"}}'))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-status")
    victoria = VictoriaMetrics(
        tmp / "victoria", extra_args=["-dedup.minScrapeInterval=1ms"]
    )
    nodes: dict[str, FleetNode] = {}
    config = write_config(
        tmp / "central.yaml",
        {
            "state_dir": str(tmp / "central-state"),
            "tariffs": TARIFFS,
            "sensors": [
                {"address": 1, "labels": {"node": "node-a"}},
                {"address": 9, "labels": {"node": "node-a"}},
                {"address": 5, "labels": {"id": "pdu-77"}},
            ],
        },
    )
    try:
        victoria.start()
        body, minutes = ghost_history(time.time())
        post(f"{victoria.url}/write?precision=ns", body)
        for name, meters in METERS.items():
            nodes[name] = start_node(
                name, tmp / name, meters, influx_settings(victoria.url)
            )
        for node in nodes.values():
            node.daemon.wait_for_log("running:")
        # Together, so that both nodes hear the shared meter's frames at once.
        for node in nodes.values():
            node.start_feeds()
        block_until(
            lambda: (
                series_count(victoria, "power_wh_total") >= 8
                and series_count(victoria, "wattd_node_uptime_s") >= 3
            ),
            timeout_s=60,
            interval_s=0.5,
            what="every meter's points and every node's probe in VictoriaMetrics",
        )
        # The shared meter falls silent on both at once, so that both nodes'
        # last minute holds the same frames too.
        for name in ("node-a", "node-b"):
            nodes[name].feeds[3].pause()
        nodes[IDLE[0]].feeds[IDLE[1]].stop()
        nodes[STOPPED].stop()

        def settled() -> bool:
            doc = status(config, victoria.url)
            down = {n["node"] for n in doc["nodes"] if n["status"] == "down"}
            stale = {m["meter"] for m in doc["stale_meters"]}
            return STOPPED in down and {"node-a/3", "node-a/4", "node-c/1"} <= stale

        block_until(
            settled, timeout_s=30, interval_s=0.5, what="node-c down, idle meters stale"
        )
        doc = status(config, victoria.url)
        yield Fleet(victoria, nodes, config, doc, minutes)
    finally:
        for node in nodes.values():
            node.stop()
        victoria.stop()


def test_a_stopped_node_is_down_and_the_others_are_up(fleet: Fleet) -> None:
    nodes = {n["node"]: n for n in fleet.status["nodes"]}
    assert sorted(nodes) == sorted(METERS)
    assert {name: n["status"] for name, n in nodes.items()} == {
        "node-a": "up",
        "node-b": "up",
        "node-c": "down",
    }
    assert nodes[STOPPED]["age_s"] > DOWN_AFTER_S
    for name in ("node-a", "node-b"):
        node = nodes[name]
        # Each node's latest probe: its own clock, its drained spool.
        assert abs(node["clock_offset_s"]) < 1, node
        assert node["spool_depth"] is not None
        assert node["readings_per_s"] > 0, node
        # Feeds share a pty, so a frame may rarely be cut by another's write.
        assert node["decode_errors_total"] >= 0, node


def test_the_idle_port_and_the_stopped_node_leave_their_meters_stale(
    fleet: Fleet,
) -> None:
    stale = {m["meter"]: m for m in fleet.status["stale_meters"]}
    # The meter written beforehand stopped five minutes ago, and the shared
    # one (counted once) was silenced.
    assert sorted(stale) == ["node-a/3", "node-a/4", "node-a/7", "node-c/1"]
    assert stale["node-a/4"]["customer"] == "globex"
    assert stale["node-a/7"]["age_s"] > 5 * 60


def test_the_meter_two_nodes_hear_is_named(fleet: Fleet) -> None:
    (duplicate,) = fleet.status["duplicates"]
    assert duplicate["meter"] == "node-a/3"
    assert duplicate["duplicate"] == "node-b/3"
    assert duplicate["nodes"] == ["node-a", "node-b"]


def test_configured_meters_missing_from_the_store_are_never_seen(
    fleet: Fleet,
) -> None:
    assert {m["meter"] for m in fleet.status["never_seen"]} == NEVER_SEEN


def test_completeness_matches_the_stores_and_the_known_outage(fleet: Fleet) -> None:
    windows = {
        w["name"]: (
            int(datetime_s(w["start"])),
            int(datetime_s(w["end"])),
        )
        for w in fleet.status["windows"]
    }
    rows = {(c["customer"], c["window"]): c for c in fleet.status["completeness"]}
    for window, (start_s, end_s) in windows.items():
        minutes = (end_s - start_s) // 60
        # The meter with the outage is initech's only meter.
        ghost = sum(1 for m in fleet.ghost_minutes if start_s <= m < end_s)
        initech = rows["initech", window]
        assert initech["meters"] == 1
        assert initech["minutes_with_data"] == ghost
        assert initech["minutes_expected"] == minutes
        if minutes:
            assert initech["completeness"] == pytest.approx(ghost / minutes, abs=1e-4)
        # The live meters, as their nodes' stores hold them; node-b's copy
        # of the shared meter is left out.
        per_node = {
            name: stored_minutes(node, start_s, end_s)
            for name, node in fleet.nodes.items()
        }
        for customer in ("acme", "globex"):
            keys = [
                (name, plan.address)
                for name, plans in METERS.items()
                for plan in plans
                if plan.customer == customer and (name, plan.address) != ("node-b", 3)
            ]
            want = sum(per_node[name].get(address, 0) for name, address in keys)
            got = rows[customer, window]
            assert got["meters"] == len(keys)
            assert got["minutes_expected"] == len(keys) * minutes
            # A point on a minute's very first millisecond counts to the one before.
            assert abs(got["minutes_with_data"] - want) <= len(keys), (customer, window)
        unassigned = rows["(unassigned)", window]
        assert (unassigned["meters"], unassigned["minutes_with_data"]) == (2, 0)


def datetime_s(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_the_table_shows_the_same(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run_cli(
        [
            "fleet",
            "status",
            "-c",
            str(fleet.config),
            "--source",
            f"victoriametrics={fleet.victoria.url}",
            "--stale-after",
            "4",
            "--down-after",
            "6",
        ],
        capsys,
    )
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "Nodes: 3, 1 down"
    (row,) = [line for line in lines if line.startswith("node-c ")]
    assert row.split()[1] == "DOWN"
    assert "Heard by two nodes today: 1" in out
    assert "meter node-a/3 is also reported as node-b/3" in out
    assert any(line.strip().startswith("node-a/4 (customer globex)") for line in lines)
    assert "Never seen (configured, absent this month): 2" in out


def test_the_source_is_required(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run_cli(["fleet", "status", "-c", str(fleet.config)], capsys)
    assert rc == 2
    assert "--source" in err


# -- the readers, on InfluxDB 1.x ------------------------------------------------


def test_influxql_reads_node_probes_and_minutes(influxd: Influxd) -> None:
    """The same rows from InfluxDB 1.x as from VictoriaMetrics."""
    database = "fleetstatus"
    influxd.create_database(database)
    body, minutes = ghost_history(time.time())
    probe = b"wattd_node,node=node-a,site=hall1 readings_per_s=4.5,spool_depth=12.0"
    post(f"{influxd.url}/write?db={database}&precision=ns", body + b"\n" + probe)
    reader = open_reader(
        "influxdb", influxd.url, measurement="power", database=database
    )
    start_s, end_s = minutes[0] - 600, minutes[-1] + 600
    (row,) = reader.minutes_with_data(start_s, end_s)
    assert dict(row.labels)["sensor"] == "7"
    assert row.minutes == len(minutes)
    now_s = int(time.time())
    (node,) = reader.node_probes(now_s - 600, now_s + 60)
    assert node.node == "node-a"
    assert node.fields == {"readings_per_s": 4.5, "spool_depth": 12.0}
    assert abs(node.stored_s - time.time()) < 60
