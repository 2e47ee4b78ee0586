"""Three real ``wattd run`` nodes, bridged brokers and one central VictoriaMetrics.

Each node reads its own simulated meters on a pty: two customers' meters on
every node, with the same radio addresses on all three. One more meter is in
range of two nodes' coordinators: both read the same frames, byte for byte,
and write them with ``influxdb.frame_hash``. Each publishes at
QoS 1 to a mosquitto of its own, which is bridged to one central broker
(``cleansession false``), and writes line protocol to the central
VictoriaMetrics (which keeps one sample per series and millisecond). Mid-run
the central VictoriaMetrics is down for a while, and then the central broker.
Afterwards every reading in each node's store must be in VictoriaMetrics once
and must have reached a subscriber of the central broker; the fleet report
from VictoriaMetrics must be the sum of the nodes' local reports, with the
double-heard meter counted once and named; and a backfill from every node into
an emptied VictoriaMetrics must restore every point, frame hashes included,
and with them the same bill and the same duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest

from tests.fixtures.cli import run_cli
from tests.fixtures.daemon import DaemonProcess, MeterFeed, meter_sensors, write_config
from tests.fixtures.pty import Pty
from tests.fixtures.services import (
    LOOPBACK,
    Mosquitto,
    VictoriaMetrics,
    bridged_mosquitto,
    env_without_proxies,
)
from tests.fixtures.waiting import wait_until
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(240)]

SPEED = 10.0
"""Simulated seconds per real second: each meter sends about every 0.2 s."""
OUTAGE_S = 20.0
"""How long the central VictoriaMetrics, and then the central broker, are down."""
TARIFFS: dict[str, Any] = {
    "timezone": "UTC",
    "default": "dc",
    "customers": {"globex": "flat"},
    "plans": {
        "dc": {"currency": "EUR", "price_per_kwh": 0.30},
        "flat": {"currency": "EUR", "price_per_kwh": 0.25},
    },
}
NODES: dict[str, dict[int, tuple[str, float]]] = {
    # address: (customer, watts); the same addresses on every node.
    "node-a": {1: ("acme", 400.0), 2: ("globex", 150.0)},
    "node-b": {1: ("globex", 900.0), 2: ("acme", 250.0)},
    "node-c": {1: ("acme", 600.0), 2: ("globex", 80.0)},
}
SHARED_ADDRESS = 3
"""A meter in range of two nodes' coordinators (one PAN ID): both hear it."""
SHARED_NODES = ("node-a", "node-b")
"""The nodes that hear it; the first keeps its energy in the fleet report."""
SHARED: tuple[str, float] = ("acme", 300.0)
"""Its customer and watts."""
SHARED_NAME = f"meter-{SHARED_ADDRESS}"
CUSTOMERS = ("acme", "globex")
BACKFILL = (sys.executable, "-m", "wattd", "backfill", "--to", "influxdb")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[str, int]
"""(node, radio address): a meter's identity in the fleet."""


@dataclass
class Node:
    """One wattd host: its pty, simulated meters, edge broker and daemon."""

    name: str
    workdir: Path
    pty: Pty
    edge: Mosquitto
    config_path: Path
    daemon: DaemonProcess
    feeds: list[MeterFeed]
    """The node's own meters, and the shared meter where the node hears it."""

    @property
    def store(self) -> Path:
        return self.workdir / "state" / "wattd.sqlite"

    @property
    def spool(self) -> Path:
        return self.workdir / "state" / "spool.sqlite"


@dataclass
class Subscriber:
    """A persistent session on the central broker, recording every state message."""

    broker: Mosquitto
    received: list[tuple[str, int, int]] = field(default_factory=list)
    """(node, sensor, time in ms) in arrival order, QoS 1 resends included."""
    connects: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            client = aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier="fleet-subscriber",
                clean_session=False,
                timeout=2,
            )
            try:
                async with client:
                    self.connects += 1
                    await client.subscribe("wattd/+/+/state", qos=1)
                    self.subscribed.set()
                    async for msg in client.messages:
                        doc = json.loads(bytes(msg.payload))
                        when = datetime.fromisoformat(doc["time"])
                        ms = (when - EPOCH) // timedelta(milliseconds=1)
                        self.received.append((doc["node"], int(doc["sensor"]), ms))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.1)

    def distinct(self) -> dict[Key, set[int]]:
        """Reading times per meter, each reading once."""
        out: dict[Key, set[int]] = collections.defaultdict(set)
        for node, sensor, ms in list(self.received):
            out[node, sensor].add(ms)
        return out


def customer_of(name: str, address: int) -> str:
    if address == SHARED_ADDRESS:
        return SHARED[0]
    return NODES[name][address][0]


def shared_meter() -> MeterModel:
    """The meter two nodes hear: one unit, so the same quirks for both."""
    return MeterModel.with_quirks(
        SHARED_ADDRESS, ResistiveLoad(watts=SHARED[1]), seed="shared"
    )


def node_config(
    name: str, workdir: Path, device: str, meters: list[MeterModel], edge: Mosquitto
) -> dict[str, Any]:
    sensors = [
        entry
        for m in meters
        for entry in meter_sensors([m], customer=customer_of(name, m.address))
    ]
    return {
        "node": name,
        "state_dir": str(workdir / "state"),
        "save_interval_s": 2,
        "ports": [{"device": device, "name": "xbee"}],
        "sensors": sensors,
        "mqtt": {
            "enabled": True,
            "host": LOOPBACK,
            "port": edge.port,
            "qos": 1,
            "topic_layout": "node",
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "discovery": {"enabled": False},
        },
        "influxdb": {
            "enabled": True,
            "url": "",  # set by the caller
            "org": "fleet",
            "bucket": "fleet",
            "token": "fleet",
            "flush_interval_s": 0.2,
            "max_backoff_s": 1,
            "timeout_s": 2,
            "frame_hash": True,
        },
        "tariffs": TARIFFS,
        "logging": {"level": "info"},
    }


@contextlib.contextmanager
def fleet(
    tmp_path: Path, central: Mosquitto, tsdb: VictoriaMetrics
) -> Iterator[list[Node]]:
    """Three nodes with started edge brokers and daemons (feeds not started)."""
    nodes: list[Node] = []
    try:
        for n, name in enumerate(NODES):
            workdir = tmp_path / name
            edge = bridged_mosquitto(
                workdir / "edge", central, client_id=f"edge-{name}"
            )
            edge.start()
            pty = Pty()
            meters = [
                MeterModel.with_quirks(a, ResistiveLoad(watts=w), seed=f"{name}/{a}")
                for a, (_, w) in NODES[name].items()
            ]
            feeds = [MeterFeed(Simulator(meters, seed=n), pty.master, speed=SPEED)]
            if name in SHARED_NODES:
                # Same model and seed: the same frames, byte for byte, on both.
                shared = shared_meter()
                meters.append(shared)
                sim = Simulator([shared], seed="shared")
                feeds.append(MeterFeed(sim, pty.master, speed=SPEED))
            config = node_config(name, workdir, pty.path, meters, edge)
            config["influxdb"]["url"] = tsdb.url
            path = write_config(workdir / "wattd.yaml", config)
            node = Node(name, workdir, pty, edge, path, DaemonProcess(path), feeds)
            nodes.append(node)
            node.daemon.start()
        for node in nodes:
            node.daemon.wait_for_log("running:")
        yield nodes
    finally:
        for node in nodes:
            for feed in node.feeds:
                feed.stop()
            node.daemon.stop(5)
            node.edge.stop()
            node.pty.close()


def stored(node: Node) -> dict[Key, set[int]]:
    """Reading times (ms) per meter in a node's store."""
    uri = f"file:{node.store}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        rows = conn.execute("SELECT sensor, time_ns FROM readings").fetchall()
    out: dict[Key, set[int]] = collections.defaultdict(set)
    for sensor, ns in rows:
        out[node.name, int(sensor)].add(int(ns) // 1_000_000)
    return out


def spool_empty(node: Node) -> bool:
    uri = f"file:{node.spool}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0]) == 0


def exported(tsdb: VictoriaMetrics, points: int) -> dict[Key, list[int]]:
    """Every ``wh_total`` sample's time (ms) per meter, repeats kept."""
    out: dict[Key, list[int]] = collections.defaultdict(list)
    for row in tsdb.export_at_least('{__name__="power_wh_total"}', points):
        key = (row["metric"]["node"], int(row["metric"]["sensor"]))
        out[key].extend(row["timestamps"])
    return out


Bill = dict[str, dict[str, float]]
"""A JSON report's figures per group."""


def report_json(
    config: Path,
    start: datetime,
    end: datetime,
    capsys: pytest.CaptureFixture[str],
    *source: str,
    by: str = "customer",
) -> tuple[Bill, dict[str, Any]]:
    """``wattd report --by BY --format json``: figures per group, and the document."""
    rc, out, err = run_cli(
        [
            "report",
            "-c",
            str(config),
            *source,
            "--by",
            by,
            "--format",
            "json",
            "--from",
            start.isoformat(),
            "--to",
            end.isoformat(),
        ],
        capsys,
    )
    assert rc == 0, err
    doc: dict[str, Any] = json.loads(out)
    return {g["group"]: g for g in doc["groups"]}, doc


def report(
    config: Path,
    start: datetime,
    end: datetime,
    capsys: pytest.CaptureFixture[str],
    *source: str,
) -> Bill:
    """``wattd report --by customer --format json``: figures per customer."""
    return report_json(config, start, end, capsys, *source)[0]


FIGURES = ("it_kwh", "energy_cost", "cost")


def summed(reports: list[Bill], key: str) -> dict[str, float]:
    return {c: math.fsum(r[c][key] for r in reports if c in r) for c in CUSTOMERS}


def assert_same_bills(
    fleet_report: Bill, local: list[Bill], less: Bill | None = None
) -> None:
    """The fleet bill is the sum of the local ones, ``less`` a copy counted twice."""
    assert sorted(fleet_report) == sorted(CUSTOMERS)
    for key in FIGURES:
        want = summed(local, key)
        for customer, figures in (less or {}).items():
            want[customer] -= figures[key]
        got = {c: fleet_report[c][key] for c in CUSTOMERS}
        assert got == pytest.approx(want, rel=1e-3), key
        assert all(v > 0 for v in got.values()), key


async def test_fleet_survives_central_outages_and_bills_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    central = Mosquitto(tmp_path / "central", persistent=True)
    tsdb = VictoriaMetrics(
        tmp_path / "victoria", extra_args=["-dedup.minScrapeInterval=1ms"]
    )
    sub = Subscriber(central)
    sub_task = asyncio.create_task(sub.run())
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    try:
        central.start()
        tsdb.start()
        await asyncio.wait_for(sub.subscribed.wait(), 10)
        with fleet(tmp_path, central, tsdb) as nodes:
            for node in nodes:
                for feed in node.feeds:
                    feed.start()
            await run_with_outages(nodes, central, tsdb, sub)
            for node in nodes:
                for feed in node.feeds:
                    feed.stop()
            heard = [
                [s.data for _, s in node.feeds[-1].frames_sent()]
                for node in nodes
                if node.name in SHARED_NODES
            ]
            # Everything spooled is delivered before the daemons stop.
            for node in nodes:
                await wait_until(
                    lambda: spool_empty(node),  # noqa: B023
                    what=f"{node.name}'s spool drained",
                    timeout_s=60,
                    interval_s=0.1,
                    off_loop=True,
                )
            for node in nodes:
                assert await asyncio.to_thread(node.daemon.stop) == 0, node.daemon.log
            in_store: dict[Key, set[int]] = {}
            for node in nodes:
                in_store |= stored(node)
            configs = [node.config_path for node in nodes]

            # Every node's readings reached the central broker's subscriber.
            def all_received() -> bool:
                got = sub.distinct()
                return all(got.get(k) == times for k, times in in_store.items())

            await wait_until(
                all_received,
                what=lambda: (
                    "every stored reading at the central subscriber: "
                    + ", ".join(
                        f"{k}: {len(sub.distinct().get(k, ()))}/{len(v)}"
                        for k, v in sorted(in_store.items())
                    )
                ),
                timeout_s=30,
                interval_s=0.1,
            )
        assert sub.connects >= 2, "the subscriber never saw the central outage"
        assert set(in_store) == {(n, a) for n in NODES for a in NODES[n]} | {
            (n, SHARED_ADDRESS) for n in SHARED_NODES
        }
        # Both coordinators heard the same transmissions, byte for byte.
        sent = min(len(frames) for frames in heard)
        assert sent > 100
        assert heard[0][:sent] == heard[1][:sent]
        assert all(len(times) > 100 for times in in_store.values()), {
            k: len(v) for k, v in in_store.items()
        }
        assert set(sub.distinct()) == set(in_store)

        # Every stored reading is in VictoriaMetrics, once.
        points = sum(len(v) for v in in_store.values())
        in_tsdb = await asyncio.to_thread(exported, tsdb, points)
        assert set(in_tsdb) == set(in_store)
        for key, times in in_store.items():
            assert len(in_tsdb[key]) == len(times), key
            assert set(in_tsdb[key]) == times, key

        # The fleet bill from the central store is the sum of the local ones,
        # with the meter both coordinators heard counted once.
        end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)
        central_config = write_config(
            tmp_path / "central.yaml",
            {"state_dir": str(tmp_path / "central-state"), "tariffs": TARIFFS},
        )
        source = ("--source", f"victoriametrics={tsdb.url}")
        local = [report(c, start, end, capsys) for c in configs]
        fleet_bill, doc = report_json(central_config, start, end, capsys, *source)
        kept, copy = (f"{n}/{SHARED_ADDRESS}" for n in SHARED_NODES)
        (dup,) = doc["duplicates"]
        assert dup["meter"] == kept
        assert dup["duplicate"] == copy
        assert dup["nodes"] == list(SHARED_NODES)
        assert dup["matched_minutes"] > dup["minutes"] / 2, dup
        kept_local, copy_local = (
            report_json(config, start, end, capsys, by="sensor")[0][SHARED_NAME]
            for node, config in zip(nodes, configs, strict=True)
            if node.name in SHARED_NODES
        )
        assert copy_local["it_kwh"] > 0
        # The same frames give both nodes about the same energy.
        assert copy_local["it_kwh"] == pytest.approx(kept_local["it_kwh"], rel=0.02)
        assert_same_bills(fleet_bill, local, less={SHARED[0]: copy_local})
        # Counted once, not left out: the kept copy bills as its node does.
        by_meter, _ = report_json(
            central_config, start, end, capsys, *source, by="sensor"
        )
        assert copy not in by_meter
        for figure in FIGURES:
            assert by_meter[kept][figure] == pytest.approx(kept_local[figure], rel=1e-3)

        # An emptied central store, backfilled from every node, holds every
        # point again and bills the same. The local stores keep each reading's
        # frame hash, so the double-heard meter is still counted once.
        await asyncio.to_thread(tsdb.wipe)
        assert await asyncio.to_thread(tsdb.export) == []
        for config in configs:
            # As on each host: the command, in a process of its own.
            done = await asyncio.to_thread(
                subprocess.run,
                [*BACKFILL, "-c", str(config)],
                capture_output=True,
                text=True,
                env=env_without_proxies(),
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        again = await asyncio.to_thread(exported, tsdb, points)
        assert {k: sorted(v) for k, v in again.items()} == {
            k: sorted(v) for k, v in in_store.items()
        }
        refilled, again_doc = report_json(central_config, start, end, capsys, *source)
        assert again_doc["duplicates"] == doc["duplicates"]
        assert sorted(refilled) == sorted(fleet_bill)
        for figure in FIGURES:
            assert {c: refilled[c][figure] for c in CUSTOMERS} == pytest.approx(
                {c: fleet_bill[c][figure] for c in CUSTOMERS}, rel=1e-3
            ), figure
    finally:
        sub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub_task
        tsdb.stop()
        central.stop()


async def run_with_outages(
    nodes: list[Node],
    central: Mosquitto,
    tsdb: VictoriaMetrics,
    sub: Subscriber,
) -> None:
    """Feed the meters through an outage of the TSDB, then of the central broker."""

    async def readings_flow(what: str) -> None:
        base = len(sub.received)
        await wait_until(
            lambda: len(sub.received) >= base + 30,
            what=f"readings at the central broker {what}",
            timeout_s=30,
        )

    await readings_flow("before the outages")
    await asyncio.to_thread(tsdb.stop)
    await _hold(OUTAGE_S)
    await asyncio.to_thread(tsdb.start)
    await readings_flow("after VictoriaMetrics returned")
    await asyncio.to_thread(central.stop)
    await _hold(OUTAGE_S)
    await asyncio.to_thread(central.start)
    await readings_flow("after the central broker returned")
    for node in nodes:
        assert node.daemon.proc is not None
        assert node.daemon.proc.poll() is None, node.daemon.log[-3000:]


async def _hold(seconds: float) -> None:
    """Keep a server down for ``seconds`` while the meters keep sending."""
    until = time.monotonic() + seconds
    await wait_until(
        lambda: time.monotonic() >= until,
        what="the outage to last",
        timeout_s=seconds + 5,
        interval_s=0.2,
    )
