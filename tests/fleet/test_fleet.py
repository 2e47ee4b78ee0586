"""Three real ``wattd run`` nodes, bridged brokers and one central VictoriaMetrics.

Each node reads its own simulated meters on a pty: two customers' meters on
every node, with the same radio addresses on all three. Each publishes at
QoS 1 to a mosquitto of its own, which is bridged to one central broker
(``cleansession false``), and writes line protocol to the central
VictoriaMetrics (which keeps one sample per series and millisecond). Mid-run
the central VictoriaMetrics is down for a while, and then the central broker.
Afterwards every reading in each node's store must be in VictoriaMetrics once
and must have reached a subscriber of the central broker; the fleet report
from VictoriaMetrics must be the sum of the nodes' local reports; and a
backfill from every node into an emptied VictoriaMetrics must give the same
report again.
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
OUTAGE_S = 12.0
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
    feed: MeterFeed

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


def node_config(
    name: str, workdir: Path, device: str, meters: list[MeterModel], edge: Mosquitto
) -> dict[str, Any]:
    sensors = [
        entry
        for m in meters
        for entry in meter_sensors([m], customer=NODES[name][m.address][0])
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
            config = node_config(name, workdir, pty.path, meters, edge)
            config["influxdb"]["url"] = tsdb.url
            path = write_config(workdir / "wattd.yaml", config)
            feed = MeterFeed(Simulator(meters, seed=n), pty.master, speed=SPEED)
            node = Node(name, workdir, pty, edge, path, DaemonProcess(path), feed)
            nodes.append(node)
            node.daemon.start()
        for node in nodes:
            node.daemon.wait_for_log("running:")
        yield nodes
    finally:
        for node in nodes:
            node.feed.stop()
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


def report(
    config: Path,
    start: datetime,
    end: datetime,
    capsys: pytest.CaptureFixture[str],
    *source: str,
) -> dict[str, dict[str, float]]:
    """``wattd report --by customer --format json``: figures per customer."""
    rc, out, err = run_cli(
        [
            "report",
            "-c",
            str(config),
            *source,
            "--by",
            "customer",
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
    return {g["group"]: g for g in json.loads(out)["groups"]}


def summed(reports: list[dict[str, dict[str, float]]], key: str) -> dict[str, float]:
    return {c: math.fsum(r[c][key] for r in reports if c in r) for c in CUSTOMERS}


def assert_same_bills(
    fleet_report: dict[str, dict[str, float]],
    local: list[dict[str, dict[str, float]]],
) -> None:
    assert sorted(fleet_report) == sorted(CUSTOMERS)
    for key in ("it_kwh", "energy_cost", "cost"):
        want = summed(local, key)
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
                node.feed.start()
            await run_with_outages(nodes, central, tsdb, sub)
            for node in nodes:
                node.feed.stop()
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
        assert set(in_store) == {(n, a) for n in NODES for a in NODES[n]}
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

        # The fleet bill from the central store is the sum of the local ones.
        end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)
        central_config = write_config(
            tmp_path / "central.yaml",
            {"state_dir": str(tmp_path / "central-state"), "tariffs": TARIFFS},
        )
        source = ("--source", f"victoriametrics={tsdb.url}")
        local = [report(c, start, end, capsys) for c in configs]
        fleet_bill = report(central_config, start, end, capsys, *source)
        assert_same_bills(fleet_bill, local)

        # An emptied central store, backfilled from every node, bills the same.
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
        assert report(central_config, start, end, capsys, *source) == fleet_bill
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
