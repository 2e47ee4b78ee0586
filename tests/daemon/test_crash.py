"""``kill -9`` at random moments: no total goes backwards, and no reading is lost.

A real ``wattd run`` reads simulated meters on a pty and writes to the SQLite
store, to a real mosquitto at QoS 1 and to VictoriaMetrics over the InfluxDB
API. It is killed with SIGKILL again and again, once while the broker and the
time-series database are both down, and started again each time. Then, per
meter: ``wh_total`` never decreases in the store, in what an MQTT subscriber
received, or in VictoriaMetrics; and every reading that MQTT or VictoriaMetrics
holds is in the store too. A reading that QoS 1 delivers twice (its broker ack
came, the kill came before the spool noted it) counts once, at its first
arrival: it is the same reading, with the same time, not a new total.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import sqlite3
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest

from tests.fixtures.daemon import DaemonProcess, MeterFeed, meter_sensors, write_config
from tests.fixtures.services import LOOPBACK, Mosquitto, VictoriaMetrics, running
from tests.fixtures.waiting import wait_until
from wattd.sources.simulate import MeterModel, Simulator, varied_meters

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from tests.fixtures.pty import Pty

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(240)]

METERS = 3
SPEED = 20.0
"""Simulated seconds per real second: each meter sends about every 0.1 s."""
KILLS = 6
OUTAGE_AT = 3
"""The run that is killed while the broker and the TSDB are both down."""
TOPIC = "crash"
MARKER = f"{TOPIC}/marker/state"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Subscriber:
    """A persistent MQTT session that records every state message in arrival order."""

    broker: Mosquitto
    received: list[tuple[int, int, float]] = field(default_factory=list)
    """(sensor, time in ms, wh_total) as they arrived, resends included."""
    markers: set[str] = field(default_factory=set)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            client = aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier="crash-subscriber",
                clean_session=False,
                timeout=2,
            )
            try:
                async with client:
                    await client.subscribe(f"{TOPIC}/+/state", qos=1)
                    self.subscribed.set()
                    async for msg in client.messages:
                        self._take(msg.payload)
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)

    def _take(self, payload: Any) -> None:
        doc = json.loads(payload)
        if "marker" in doc:
            self.markers.add(str(doc["marker"]))
            return
        self.received.append(
            (int(doc["sensor"]), _iso_ms(doc["time"]), doc["wh_total"])
        )


def _iso_ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - EPOCH) // timedelta(milliseconds=1)


def stored(path: Path) -> list[tuple[int, int, float]]:
    """(sensor, time in ms, wh_total) of every stored reading, by sensor and time."""
    if not path.exists():
        return []
    uri = f"file:{path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT sensor, time_ns, wh_total FROM readings ORDER BY sensor, time_ns"
        ).fetchall()
    return [(int(s), int(t) // 1_000_000, float(wh)) for s, t, wh in rows]


def exported(tsdb: VictoriaMetrics) -> dict[int, list[tuple[int, float]]]:
    """(time in ms, wh_total) per sensor in VictoriaMetrics, by time."""
    out: dict[int, list[tuple[int, float]]] = collections.defaultdict(list)
    for row in tsdb.export('{__name__="power_wh_total"}'):
        sensor = int(row["metric"]["sensor"])
        out[sensor].extend(zip(row["timestamps"], row["values"], strict=True))
    return {s: sorted(set(v)) for s, v in out.items()}


def decreases(series: Iterable[tuple[int, float]]) -> list[tuple[float, float]]:
    """Each step down (before, after) in a sequence of (key, total)."""
    out = []
    previous: float | None = None
    for _, total in series:
        if previous is not None and total < previous:
            out.append((previous, total))
        previous = total
    return out


def daemon_config(
    workdir: Path,
    device: str,
    meters: list[MeterModel],
    broker: Mosquitto,
    tsdb: VictoriaMetrics,
) -> dict[str, Any]:
    return {
        "state_dir": str(workdir / "state"),
        "save_interval_s": 2,
        "ports": [{"device": device, "name": "crash"}],
        "sensors": meter_sensors(meters),
        "mqtt": {
            "enabled": True,
            "host": LOOPBACK,
            "port": broker.port,
            "base_topic": TOPIC,
            "node_id": "crash",
            "qos": 1,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "discovery": {"enabled": False},
        },
        "influxdb": {
            "enabled": True,
            "url": tsdb.url,
            "org": "crash",
            "bucket": "crash",
            "token": "crash",
            "flush_interval_s": 0.2,
            "max_backoff_s": 1,
            "timeout_s": 2,
        },
        "logging": {"level": "info"},
    }


async def test_kill_9_loop_keeps_totals_rising_and_the_store_complete(
    tmp_path: Path, pty: Pty
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    context = f"(seed {seed})"
    with (
        running(Mosquitto(tmp_path / "mosquitto", persistent=True)) as broker,
        running(VictoriaMetrics(tmp_path / "victoria")) as tsdb,
    ):
        problems = await kill_9_loop(tmp_path, pty, broker, tsdb, seed)
    assert problems == [], f"{context}:\n" + "\n".join(problems)


async def kill_9_loop(
    tmp_path: Path, pty: Pty, broker: Mosquitto, tsdb: VictoriaMetrics, seed: int
) -> list[str]:
    """Run the loop; what went wrong, per sensor."""
    rng = random.Random(seed)
    context = f"(seed {seed})"
    meters = varied_meters(METERS, seed=seed % 1000)
    sim = Simulator(meters, seed=seed % 1000)
    config = daemon_config(tmp_path, pty.path, meters, broker, tsdb)
    daemon = DaemonProcess(write_config(tmp_path / "wattd.yaml", config))
    store_path = tmp_path / "state" / "wattd.sqlite"
    sub = Subscriber(broker)
    sub_task = asyncio.create_task(sub.run())
    feed = MeterFeed(sim, pty.master, speed=SPEED)
    runs = 0
    feeding = False

    async def start() -> None:
        nonlocal runs
        runs += 1
        daemon.start()
        await asyncio.to_thread(daemon.wait_for_log, "running:", count=runs)

    old_umask = os.umask(0o022)
    try:
        await asyncio.wait_for(sub.subscribed.wait(), 10)
        feed.start()
        feeding = True
        for kill in range(KILLS):
            await start()
            if kill == OUTAGE_AT:
                await asyncio.to_thread(broker.stop)
                await asyncio.to_thread(tsdb.stop)
                # Readings keep coming into the store while neither server is up.
                base = len(stored(store_path))
                more = rng.randint(5, 40)
                await wait_until(
                    lambda: len(stored(store_path)) >= base + more,  # noqa: B023
                    what=f"store growing during the outage {context}",
                    timeout_s=30,
                    interval_s=0.05,
                    off_loop=True,
                )
                await asyncio.to_thread(daemon.kill9)
                await start()
                await asyncio.to_thread(tsdb.start)
                await asyncio.to_thread(broker.start)
            # A random moment: after a random number of fresh MQTT messages
            # (none at all for the first run: killed as soon as it runs).
            base = len(sub.received)
            more = 0 if kill == 0 else rng.randint(1, 40)
            await wait_until(
                lambda: len(sub.received) >= base + more,  # noqa: B023
                what=f"MQTT messages after start {runs} {context}",
                timeout_s=30,
            )
            await asyncio.to_thread(daemon.kill9)
        # The last run delivers every backlog, then stops cleanly.
        await start()
        base = len(sub.received)
        await wait_until(
            lambda: len(sub.received) >= base + 30,
            what=f"MQTT after the loop {context}",
            timeout_s=30,
        )
        feed.stop()
        state_dir = tmp_path / "state"
        spool = state_dir / "spool.sqlite"
        await wait_until(
            lambda: _spool_empty(spool),
            what=f"spool drained {context}",
            timeout_s=60,
            interval_s=0.05,
            off_loop=True,
        )
        # Private without systemd's UMask= (this process has umask 022).
        modes = {p.name: _mode(p) for p in state_dir.iterdir() if p.is_file()}
        assert _mode(state_dir) == 0o700
        assert {"wattd.sqlite-wal", "spool.sqlite-wal"} <= set(modes)
        assert set(modes.values()) == {0o600}, modes
        assert await asyncio.to_thread(daemon.stop) == 0, daemon.log[-3000:]
        assert _mode(state_dir / "state.json") == 0o600
        # Messages reach a subscriber in order: once a marker sent now arrives,
        # everything wattd published has arrived.
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(MARKER, json.dumps({"marker": "end"}), qos=1)
        await wait_until(
            lambda: "end" in sub.markers,
            what="the end marker",
            timeout_s=30,
        )
    finally:
        os.umask(old_umask)
        if feeding:
            feed.stop()
        sub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub_task
        daemon.stop(5)
    influx = await asyncio.to_thread(exported, tsdb)

    assert daemon.log.count("running:") == KILLS + 2, daemon.log[-3000:]
    rows = stored(store_path)
    in_store: dict[int, list[tuple[int, float]]] = collections.defaultdict(list)
    for sensor, ms, wh in rows:
        in_store[sensor].append((ms, wh))
    first_seen: dict[int, dict[int, float]] = collections.defaultdict(dict)
    for sensor, ms, wh in sub.received:
        first_seen[sensor].setdefault(ms, wh)  # a QoS 1 resend is no new total
    assert set(in_store) == {m.address for m in meters}, context
    problems: list[str] = []
    for sensor, series in sorted(in_store.items()):
        keys = {ms for ms, _ in series}
        mqtt = list(first_seen[sensor].items())
        tsdb_series = influx.get(sensor, [])
        # Enough of each to mean something (VictoriaMetrics may lag a little).
        assert len(mqtt) > 20, f"sensor {sensor}: {len(mqtt)} MQTT messages {context}"
        assert len(tsdb_series) > 20, f"sensor {sensor}: {len(tsdb_series)} points"
        for sink, totals in (
            ("store", series),
            ("MQTT", mqtt),
            ("InfluxDB", tsdb_series),
        ):
            if down := decreases(totals):
                problems.append(f"sensor {sensor}: {sink} total went down {down}")
        for sink, times in (("MQTT", mqtt), ("InfluxDB", tsdb_series)):
            if extra := sorted({ms for ms, _ in times} - keys):
                problems.append(
                    f"sensor {sensor}: {len(extra)} {sink} readings not stored"
                )
    return problems


def _spool_empty(path: Path) -> bool:
    uri = f"file:{path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0]) == 0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
