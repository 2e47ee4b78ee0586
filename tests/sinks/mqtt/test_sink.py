"""The MQTT sink against real mosquitto brokers: topics, retain, will, discovery,
auth, TLS, and no loss across a broker outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest
from pydantic import ValidationError

from tests.fixtures.daemon import DaemonProcess, MeterFeed, meter_sensors, write_config
from tests.fixtures.services import Mosquitto, TestCa, mosquitto_password_file
from tests.fixtures.snapshots import daemon_snapshot, sensor_snapshot
from tests.fixtures.waiting import wait_until
from wattd.clients.mqtt import build_tls_context
from wattd.config import Config, MqttConfig, TlsConfig
from wattd.core.readings import Reading
from wattd.errors import SinkAuthError, SinkTlsError, SinkUnavailable
from wattd.sinks.mqtt import hass
from wattd.sinks.mqtt.sink import STREAM, MqttSink
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable, Iterable

    from tests.fixtures.pty import Pty

pytestmark = pytest.mark.services

BASE_TIME = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def reading(i: int, *, sensor: int = 1, name: str = "Desk lamp") -> Reading:
    return Reading(
        sensor=sensor,
        name=name,
        time=BASE_TIME + timedelta(seconds=2 * i),
        monotonic_s=1000.0 + 2 * i,
        watts=10.0 + i,
        va=12.0 + i,
        vrms=120.0,
        irms=0.1,
        power_factor=0.9,
        wh_total=0.5 * i,
        wh_delta=0.5,
        rssi_dbm=-60,
    )


def stamp(i: int) -> str:
    return (BASE_TIME + timedelta(seconds=2 * i)).isoformat().replace("+00:00", "Z")


def config_data(
    tmp_path: Path,
    broker: Mosquitto,
    *,
    node: str,
    sensors: Iterable[tuple[int, str]] = ((1, "Desk lamp"),),
    spool: dict[str, Any] | None = None,
    **mqtt: Any,
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "node_id": node,
        "base_topic": f"wattd-{node}",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
        "discovery": {"prefix": f"ha-{node}", "status_topic": f"ha-{node}/status"},
    }
    settings.update(mqtt)
    return {
        "state_dir": str(tmp_path / "state"),
        "spool": spool or {},
        "mqtt": settings,
        "sensors": [{"address": a, "name": n} for a, n in sensors],
    }


def make_config(tmp_path: Path, broker: Mosquitto, **kw: Any) -> Config:
    return Config.model_validate(config_data(tmp_path, broker, **kw))


@pytest.fixture
def node() -> str:
    """A node id of the test's own, so tests sharing a broker never meet."""
    return f"t{uuid.uuid4().hex[:8]}"


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Collector:
    """A subscriber that records every message; reconnects if the broker goes."""

    broker: Mosquitto
    topics: list[str]
    client_id: str | None = None
    persistent: bool = False
    tls: ssl.SSLContext | None = None
    messages: list[Seen] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, topic: str) -> list[Seen]:
        return [m for m in self.messages if m.topic == topic]

    async def run(self) -> None:
        while True:
            client = aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier=self.client_id,
                clean_session=not self.persistent,
                tls_context=self.tls,
                timeout=2,
            )
            try:
                async with client:
                    await client.subscribe([(t, 1) for t in self.topics])
                    self.subscribed.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self.messages.append(Seen(m.topic.value, payload, m.retain))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def collecting(
    broker: Mosquitto, topics: list[str], **kw: Any
) -> AsyncIterator[Collector]:
    collector = Collector(broker, topics, **kw)
    task = asyncio.create_task(collector.run())
    try:
        await asyncio.wait_for(collector.subscribed.wait(), 5)
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running(config: Config, *, connect: bool = True) -> AsyncIterator[MqttSink]:
    """A started sink with its run() task, stopped the way the daemon stops it."""
    sink = MqttSink(config)
    await sink.start()
    task = asyncio.create_task(sink.run())
    try:
        if connect:
            await wait_until(lambda: sink.connected, what="sink connected")
        yield sink
    finally:
        await sink.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish(
    broker: Mosquitto, topic: str, payload: bytes, *, retain: bool
) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


async def retained(broker: Mosquitto, topic_filter: str) -> dict[str, bytes]:
    """Every retained message under ``topic_filter`` right now."""
    async with collecting(broker, [topic_filter]) as c:
        # A private round trip marks the end of the retained burst.
        marker = f"mark/{uuid.uuid4().hex}"
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe(marker, qos=1)
            await client.publish(marker, b"x", qos=1)
            async for _ in client.messages:
                break
        await asyncio.sleep(0.1)
        return {m.topic: m.payload for m in c.messages if m.retain}


# -- topics, payloads, retain ---------------------------------------------------


async def test_state_json_is_retained_and_keeps_the_reading_time(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    config = make_config(tmp_path, mosquitto, node=node)
    topic = f"wattd-{node}/desk_lamp/state"
    async with collecting(mosquitto, [topic]) as live, running(config) as sink:
        await sink.write([reading(i) for i in range(3)])
        await wait_until(lambda: len(live.on(topic)) == 3)
    docs = [json.loads(m.payload) for m in live.on(topic)]
    assert [d["time"] for d in docs] == [stamp(0), stamp(1), stamp(2)]
    assert [d["watts"] for d in docs] == [10.0, 11.0, 12.0]
    assert docs[2]["kwh_total"] == pytest.approx(0.001)
    assert docs[2]["wh_total"] == pytest.approx(1.0)
    assert {"va", "vrms", "irms", "pf", "rssi_dbm", "flags"} <= set(docs[0])
    # A late subscriber still gets the last state: it is retained.
    kept = await retained(mosquitto, topic)
    assert json.loads(kept[topic])["time"] == stamp(2)


async def test_per_field_topics_carry_plain_numbers(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    config = make_config(tmp_path, mosquitto, node=node, per_field_topics=True)
    async with (
        collecting(mosquitto, [f"wattd-{node}/desk_lamp/+"]) as live,
        running(config) as sink,
    ):
        await sink.write([reading(4)])
        await wait_until(lambda: len(live.messages) >= 1 + len(hass.FIELD_KEYS))
    by_topic = {m.topic.rsplit("/", 1)[1]: m.payload.decode() for m in live.messages}
    assert set(by_topic) == {"state", *hass.FIELD_KEYS}
    assert float(by_topic["watts"]) == 14.0
    assert float(by_topic["wh_total"]) == 2.0
    assert float(by_topic["kwh_total"]) == pytest.approx(0.002)
    assert by_topic["rssi_dbm"] == "-60"


async def test_status_online_while_running_and_offline_after_stop(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    config = make_config(tmp_path, mosquitto, node=node)
    status = f"wattd-{node}/{node}/status"
    async with running(config):
        assert (await retained(mosquitto, status))[status] == b"online"
    assert (await retained(mosquitto, status))[status] == b"offline"


async def test_wattd_run_publishes_reloads_and_its_will_reports_a_kill(
    mosquitto: Mosquitto, tmp_path: Path, pty: Pty, node: str
) -> None:
    """The real daemon: meters on a pty in, MQTT out; SIGHUP; then kill -9."""
    meters = [
        MeterModel.with_quirks(1, ResistiveLoad(watts=500.0), seed=5),
        MeterModel.with_quirks(2, ResistiveLoad(watts=60.0), seed=6),
    ]
    cfg: dict[str, Any] = {
        "ports": [{"device": pty.path, "name": "sim"}],
        "sensors": meter_sensors(meters),
        "state_dir": str(tmp_path / "state"),
        "mqtt": config_data(tmp_path, mosquitto, node=node)["mqtt"],
    }
    path = write_config(tmp_path / "wattd.yaml", cfg)
    status = f"wattd-{node}/{node}/status"
    one, two = f"wattd-{node}/meter-1/state", f"wattd-{node}/meter-2/state"
    prefix = f"ha-{node}"
    daemon = DaemonProcess(path)
    feed = MeterFeed(Simulator(meters, seed=5), pty.master, speed=8)
    async with collecting(mosquitto, [f"wattd-{node}/#", f"{prefix}/#"]) as c:
        try:
            daemon.start()
            await asyncio.to_thread(daemon.wait_for_log, "running")
            feed.start()
            await wait_until(
                lambda: len(c.on(one)) >= 3 and len(c.on(two)) >= 3, timeout_s=20
            )
            power = json.loads(c.on(one)[-1].payload)["watts"]
            assert power == pytest.approx(500.0, rel=0.1)
            meter2 = {m.topic for m in c.messages if "_0002_" in m.topic}
            assert len(meter2) == len(hass.METER_ENTITIES)
            # Remove meter 2 from the config: SIGHUP clears its entities.
            cfg["sensors"] = cfg["sensors"][:1]
            write_config(path, cfg)
            daemon.signal(signal.SIGHUP)
            await wait_until(
                lambda: {m.topic for m in c.messages if m.payload == b""} == meter2,
                timeout_s=10,
            )
            assert c.on(status)[-1].payload == b"online"
            daemon.kill9()  # no cleanup code runs: only the will can say offline
            await wait_until(lambda: c.on(status)[-1].payload == b"offline")
        finally:
            feed.stop()
            daemon.stop()
    assert (await retained(mosquitto, status))[status] == b"offline"


async def test_wattd_run_sigterm_publishes_offline_itself(
    mosquitto: Mosquitto, tmp_path: Path, pty: Pty, node: str
) -> None:
    """A clean stop fires no will, so the daemon must say offline itself."""
    cfg: dict[str, Any] = {
        "ports": [{"device": pty.path, "name": "sim"}],
        "state_dir": str(tmp_path / "state"),
        "mqtt": config_data(tmp_path, mosquitto, node=node)["mqtt"],
    }
    daemon = DaemonProcess(write_config(tmp_path / "wattd.yaml", cfg))
    status = f"wattd-{node}/{node}/status"
    async with collecting(mosquitto, [status]) as c:
        try:
            daemon.start()
            await wait_until(lambda: [m.payload for m in c.messages] == [b"online"])
            daemon.signal(signal.SIGTERM)
            assert await asyncio.to_thread(daemon.wait) == 0
            await wait_until(lambda: len(c.messages) == 2)
        finally:
            daemon.stop()
    assert [m.payload for m in c.messages] == [b"online", b"offline"]


# -- no loss ------------------------------------------------------------------------


async def test_broker_outage_loses_nothing_and_keeps_order(
    tmp_path: Path, make_broker: Callable[..., Mosquitto]
) -> None:
    # Persistence keeps the subscriber's session (and its queue) across the
    # restart, as a real deployment would.
    store = tmp_path / "broker-data"
    store.mkdir()
    broker = make_broker(
        extra_conf=f"user root\npersistence true\npersistence_location {store}/"
    )
    broker.start()
    node = "outage"
    config = make_config(tmp_path, broker, node=node)
    topic_filter = f"wattd-{node}/+/state"
    async with (
        collecting(broker, [topic_filter], client_id="sub", persistent=True) as sub,
        running(config) as sink,
    ):
        # Phase 1: a burst, and the broker is stopped while it is in flight.
        await sink.write([reading(i) for i in range(1000)])
        await wait_until(lambda: len(sub.messages) >= 10)
        await asyncio.to_thread(broker.stop)
        # Phase 2: readings keep coming while the broker is down.
        for i in range(1000, 1100):
            await sink.write([reading(i)])
            await asyncio.sleep(0.002)
        await wait_until(lambda: not sink.connected)
        assert sink.stats()["backlog"] >= 100
        # Phase 3: the broker returns; wattd was never restarted.
        await asyncio.to_thread(broker.start)
        for i in range(1100, 1200):
            await sink.write([reading(i)])
        await wait_until(
            lambda: len({m.payload for m in sub.messages}) >= 1200, timeout_s=20
        )
        await wait_until(lambda: sink.stats()["backlog"] == 0)
        stats = sink.stats()
    # Retained copies come from the test's own re-subscription, not the stream.
    times = [json.loads(m.payload)["time"] for m in sub.messages if not m.retain]
    first_seen = list(dict.fromkeys(times))
    assert first_seen == [stamp(i) for i in range(1200)]  # all, in order
    index = {stamp(i): i for i in range(1200)}
    repeated: list[int] = []
    seen: set[str] = set()
    for t in times:
        if t in seen:
            repeated.append(index[t])
        seen.add(t)
    # QoS 1 allows duplicates, and they are counted: only readings that were
    # in flight at the cut (phase 1) may come twice, by the broker re-sending
    # what the subscriber had not acknowledged or by wattd re-sending what it
    # had no PUBACK for. Nothing spooled during the outage is repeated.
    assert len(times) == 1200 + len(repeated)
    assert all(i < 1000 for i in repeated)
    assert len(repeated) >= stats["duplicates"]
    assert stats["connects"] >= 2
    assert stats["published"] >= 1200


async def test_qos0_bypasses_the_spool(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    config = make_config(tmp_path, mosquitto, node=node, qos=0)
    topic = f"wattd-{node}/desk_lamp/state"
    async with collecting(mosquitto, [topic]) as live, running(config) as sink:
        await sink.write([reading(i) for i in range(5)])
        await wait_until(lambda: len(live.on(topic)) == 5)
        assert sink._spool is not None
        assert (await sink._spool.stats(STREAM)).appended == 0


async def test_full_spool_drops_oldest_and_keeps_going(
    tmp_path: Path, node: str, make_broker: Callable[..., Mosquitto]
) -> None:
    broker = make_broker()  # not started yet: wattd starts first
    config = make_config(tmp_path, broker, node=node, spool={"max_items": 100})
    topic = f"wattd-{node}/desk_lamp/state"
    async with running(config, connect=False) as sink:
        await sink.write([reading(i) for i in range(150)])  # must not raise
        await wait_until(lambda: isinstance(sink.last_error, SinkUnavailable))
        spool = sink._spool
        assert spool is not None
        queued = await spool.peek(STREAM, 1000)
        assert [json.loads(q.payload)["time"] for q in queued] == [
            stamp(i) for i in range(50, 150)
        ]
        assert (await spool.stats(STREAM)).dropped == 50
        assert sink.stats()["backlog"] == 100
        assert sink.stats()["spool_dropped"] == 50
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: sink.stats()["backlog"] == 0, timeout_s=10)
        kept = await retained(broker, topic)
        assert sink.counters["published"] == 100
    assert json.loads(kept[topic])["time"] == stamp(149)


async def test_corrupt_spool_is_reported_and_replaced(
    mosquitto: Mosquitto,
    tmp_path: Path,
    node: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tmp_path, mosquitto, node=node)
    config.spool_path.parent.mkdir(parents=True)
    config.spool_path.write_bytes(b"this is not an sqlite file" * 100)
    topic = f"wattd-{node}/desk_lamp/state"
    with caplog.at_level(logging.ERROR, logger="wattd"):
        async with collecting(mosquitto, [topic]) as live, running(config) as sink:
            await sink.write([reading(1)])
            await wait_until(lambda: len(live.on(topic)) == 1)
    assert any("spool" in r.getMessage() for r in caplog.records)
    assert list(config.spool_path.parent.glob("spool.sqlite.corrupt-*"))


async def test_frame_errors_are_counted_per_meter_and_in_node_stats(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    config = make_config(tmp_path, mosquitto, node=node)
    sink = MqttSink(config)
    topic = f"wattd-{node}/desk_lamp/state"
    fridge = f"wattd-{node}/fridge/state"
    stats_topic = f"wattd-{node}/{node}/stats"
    # The daemon counts rejected frames, and which meter a corrupt frame claimed.
    base = daemon_snapshot()
    claimed = replace(
        base,
        ports=(replace(base.ports[0], rejected={"bad_checksum": 2}),),
        sensors=(
            sensor_snapshot(sensor=1, bad_checksum=1),
            sensor_snapshot(sensor=2, bad_checksum=4),
        ),
    )
    sink.attach(lambda: claimed)
    async with collecting(mosquitto, [topic, fridge, stats_topic]) as live:
        await sink.start()
        task = asyncio.create_task(sink.run())
        try:
            await sink.write([reading(0), reading(1, sensor=2, name="Fridge")])
            await wait_until(lambda: bool(live.on(fridge) and live.on(stats_topic)))
        finally:
            await sink.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert json.loads(live.on(topic)[0].payload)["frame_errors"] == 1
    assert json.loads(live.on(fridge)[0].payload)["frame_errors"] == 4
    assert json.loads(live.on(stats_topic)[0].payload)["frame_errors"] == 2


# -- aggregation ---------------------------------------------------------------------


async def test_aggregation_publishes_open_intervals_when_every_meter_falls_silent(
    mosquitto: Mosquitto, tmp_path: Path, node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wattd.core.aggregate.IDLE_MIN_S", 0.5)
    config = make_config(
        tmp_path, mosquitto, node=node, sensors=[(1, "Desk lamp")], aggregate_s=1
    )
    lamp = f"wattd-{node}/desk_lamp/state"
    async with collecting(mosquitto, [lamp]) as live, running(config) as sink:
        # reading(i) is 2i s after a whole minute: one interval per reading.
        await sink.write([reading(0)])
        await asyncio.sleep(0.5)
        assert live.on(lamp) == []
        # No flush, no further reading: the silence closes the interval.
        await wait_until(lambda: len(live.on(lamp)) == 1, timeout_s=10)
        assert sink.stats()["aggregate_open"] == 0
    state = json.loads(live.on(lamp)[0].payload)
    assert (state["time"], state["watts"]) == (stamp(0), reading(0).watts)


async def test_aggregation_publishes_one_mean_per_meter_per_interval(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    discovery = {
        "prefix": f"ha-{node}",
        "status_topic": f"ha-{node}/status",
        "expire_after_s": 20,
    }
    config = make_config(
        tmp_path,
        mosquitto,
        node=node,
        sensors=[(1, "Desk lamp"), (2, "Fridge")],
        aggregate_s=10,
        discovery=discovery,
    )
    lamp, fridge = f"wattd-{node}/desk_lamp/state", f"wattd-{node}/fridge/state"
    # reading(i) is at 08:00:00 + 2i s with 10 + i watts: intervals of 10 s
    # hold i = 0..4, 5..9, 10..14. The fridge falls silent after i = 6.
    batch: list[Reading] = []
    for i in range(12):
        batch.append(reading(i))
        if i <= 6:
            batch.append(reading(i, sensor=2, name="Fridge"))

    def states(topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in live.on(topic)]

    async with collecting(mosquitto, [lamp, fridge]) as live:
        async with running(config) as sink:
            await sink.write(batch[:9])
            await sink.write(batch[9:])
            await wait_until(lambda: len(live.on(lamp)) == 2 == len(live.on(fridge)))
            await asyncio.sleep(0.3)  # nothing more until an interval closes
            assert [(d["time"], d["watts"]) for d in states(lamp)] == [
                (stamp(4), 12.0),
                (stamp(9), 17.0),
            ]
            # The silent fridge's interval was closed by the lamp's next one.
            assert [(d["time"], d["watts"]) for d in states(fridge)] == [
                (stamp(4), 12.0),
                (stamp(6), 15.5),
            ]
            assert [d["wh_total"] for d in states(lamp)] == [2.0, 4.5]
            assert states(lamp)[0]["pf"] == pytest.approx(12.0 / 14.0, abs=1e-4)
            assert sink.stats()["aggregate_open"] == 1
            # Shutdown (flush, then stop) publishes the open interval.
            await sink.flush()
            await wait_until(lambda: len(live.on(lamp)) == 3)
            assert sink.stats()["aggregate_open"] == 0
            # A stop without a flush (the flush timed out) spools the open
            # interval, and the next start publishes it.
            await sink.write([reading(12)])
        assert sink.stats()["aggregate_open"] == 0
        async with running(config):
            await wait_until(lambda: states(lamp)[-1]["time"] == stamp(12))
    # The last one may come twice (in flight at the stop), as QoS 1 allows.
    seen = list(dict.fromkeys((d["time"], d["watts"]) for d in states(lamp)))
    assert seen[2:] == [(stamp(11), 20.5), (stamp(12), 22.0)]
    assert len(states(fridge)) == 2
    configs = await retained(mosquitto, f"ha-{node}/sensor/{node}/+/config")
    power = json.loads(
        configs[f"ha-{node}/sensor/{node}/wattd_{node}_0001_power/config"]
    )
    assert power["expire_after"] == 30  # three intervals, not the configured 20


# -- Home Assistant discovery --------------------------------------------------------


def config_topics(config: Config) -> set[str]:
    return set(hass.discovery_messages(config.mqtt, config.sensors, version="x"))


async def test_discovery_is_retained_and_republished_on_ha_birth(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    config = make_config(tmp_path, mosquitto, node=node, sensors=[(1, "A"), (2, "B")])
    wanted = config_topics(config)
    prefix = config.mqtt.discovery.prefix
    birth = config.mqtt.discovery.status_topic
    # A retained birth from an earlier Home Assistant start is stale news: the
    # sink announces on connect anyway and must not announce twice for it.
    await publish(mosquitto, birth, b"online", retain=True)
    try:
        async with running(config) as sink:
            await wait_until(lambda: sink.counters["discovery_announcements"] >= 1)
            await asyncio.sleep(0.3)
            assert sink.counters["discovery_announcements"] == 1
            async with collecting(mosquitto, [f"{prefix}/+/{node}/+/config"]) as ha:
                await wait_until(lambda: {m.topic for m in ha.messages} == wanted)
                assert all(m.retain for m in ha.messages)
                # A live birth (Home Assistant restarted) gets everything again.
                await publish(mosquitto, birth, b"online", retain=False)
                await wait_until(
                    lambda: {m.topic for m in ha.messages if not m.retain} == wanted
                )
            assert sink.counters["ha_births"] == 1
            assert sink.counters["discovery_announcements"] == 2
    finally:
        await publish(mosquitto, birth, b"", retain=True)


async def test_removing_a_sensor_on_reconfigure_clears_its_discovery(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    both = make_config(tmp_path, mosquitto, node=node, sensors=[(1, "A"), (2, "B")])
    one = make_config(tmp_path, mosquitto, node=node, sensors=[(1, "A")])
    prefix = both.mqtt.discovery.prefix
    gone = config_topics(both) - config_topics(one)
    assert len(gone) == len(hass.METER_ENTITIES)
    async with running(both) as sink:
        await wait_until(lambda: sink.counters["discovery_announcements"] >= 1)
        async with collecting(mosquitto, [f"{prefix}/+/{node}/+/config"]) as ha:
            sink.reconfigure(one)
            await wait_until(
                lambda: {m.topic for m in ha.messages if m.payload == b""} == gone
            )
        assert sink.connected  # no reconnect needed for a sensor change
        assert sink.counters["connects"] == 1
    left = await retained(mosquitto, f"{prefix}/+/{node}/+/config")
    assert set(left) == config_topics(one)


async def test_sensors_removed_while_stopped_are_cleared_at_startup(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    both = make_config(tmp_path, mosquitto, node=node, sensors=[(1, "A"), (2, "B")])
    one = make_config(tmp_path, mosquitto, node=node, sensors=[(2, "B")])
    prefix = both.mqtt.discovery.prefix
    async with running(both) as sink:
        await wait_until(lambda: sink.counters["discovery_announcements"] >= 1)
    async with running(one) as sink:
        await wait_until(lambda: sink.counters["discovery_announcements"] >= 1)
        assert sink.counters["discovery_cleared"] == len(hass.METER_ENTITIES)
    left = await retained(mosquitto, f"{prefix}/+/{node}/+/config")
    assert set(left) == config_topics(one)
    assert all(json.loads(p)["unique_id"] for p in left.values())


async def test_discovery_off_publishes_no_configs(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    config = make_config(
        tmp_path,
        mosquitto,
        node=node,
        discovery={"enabled": False, "prefix": f"ha-{node}"},
    )
    async with collecting(mosquitto, [f"ha-{node}/#"]) as ha, running(config) as sink:
        await sink.write([reading(0)])
        await wait_until(lambda: sink.counters["published"] == 1)
        await asyncio.sleep(0.2)
    assert ha.messages == []


# -- connection: auth, TLS, reconnect ---------------------------------------------


async def test_auth_failure_is_a_clear_error_and_not_a_tight_loop(
    tmp_path: Path,
    node: str,
    caplog: pytest.LogCaptureFixture,
    make_broker: Callable[..., Mosquitto],
) -> None:
    passwords = mosquitto_password_file(tmp_path / "passwd", {"meter": "right horse"})
    broker = make_broker(
        extra_conf=f"user root\npassword_file {passwords}",
        anonymous=False,
    )
    broker.start()
    wrong = make_config(
        tmp_path,
        broker,
        node=node,
        username="meter",
        password="wrong-guess",
        reconnect_max_s=1.0,
    )
    secret_file = tmp_path / "mqtt.secret"
    secret_file.write_text("right horse\n")
    right = make_config(
        tmp_path,
        broker,
        node=node,
        username="meter",
        password_file=str(secret_file),
    )
    with caplog.at_level(logging.DEBUG, logger="wattd"):
        async with running(wrong, connect=False) as sink:
            await wait_until(lambda: sink.last_error is not None)
            await asyncio.sleep(2.0)
            error = sink.last_error
            attempts = sink.counters["connect_attempts"]
            sink.reconfigure(right)  # fixing the config needs no restart
            await wait_until(lambda: sink.connected, timeout_s=5)
            assert sink.last_error is None
    assert isinstance(error, SinkAuthError)
    text = str(error)
    assert "meter" in text
    assert "password" in text
    assert "wrong-guess" not in text
    assert f"{broker.host}:{broker.port}" in text
    # Auth failures wait reconnect_max_s (0.8-1.0 s here), not the 50 ms minimum.
    assert 2 <= attempts <= 4
    errors = [
        r
        for r in caplog.records
        if r.name == "wattd.sinks.mqtt.sink" and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 1  # repeats of the same refusal go to debug
    assert "wrong-guess" not in caplog.text
    assert "right horse" not in caplog.text


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ca"))


async def test_tls_with_a_client_certificate(
    tmp_path: Path, node: str, test_ca: TestCa, make_broker: Callable[..., Mosquitto]
) -> None:
    broker = make_broker(extra_conf=test_ca.mosquitto_conf(require_certificate=True))
    broker.start()
    tls = {
        "ca_file": str(test_ca.ca_cert),
        "cert_file": str(test_ca.client_cert),
        "key_file": str(test_ca.client_key),
    }
    config = make_config(tmp_path, broker, node=node, tls=tls)
    topic = f"wattd-{node}/desk_lamp/state"
    context = build_tls_context(TlsConfig.model_validate(tls))
    async with (
        collecting(broker, [topic], tls=context) as live,
        running(config) as sink,
    ):
        await sink.write([reading(7)])
        await wait_until(lambda: len(live.on(topic)) == 1)
    assert json.loads(live.on(topic)[0].payload)["time"] == stamp(7)


async def test_tls_with_an_untrusted_ca_is_a_clear_error(
    tmp_path: Path, node: str, test_ca: TestCa, make_broker: Callable[..., Mosquitto]
) -> None:
    other = TestCa(tmp_path / "other-ca", name="some other CA")
    broker = make_broker(extra_conf=test_ca.mosquitto_conf())
    broker.start()
    config = make_config(
        tmp_path, broker, node=node, tls={"ca_file": str(other.ca_cert)}
    )
    async with running(config, connect=False) as sink:
        await wait_until(lambda: sink.last_error is not None)
        error = sink.last_error
    assert isinstance(error, SinkTlsError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert "ca_file" in str(error)


def test_tls_context_reports_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SinkTlsError, match="ca_file"):
        build_tls_context(TlsConfig(ca_file=tmp_path / "nope.pem"))
    with pytest.raises(SinkTlsError, match="client certificate"):
        build_tls_context(TlsConfig(cert_file=tmp_path / "nope.crt"))
    insecure = build_tls_context(TlsConfig(insecure=True))
    assert not insecure.check_hostname


async def test_connection_refused_is_reported_and_retried_with_backoff(
    tmp_path: Path, node: str, make_broker: Callable[..., Mosquitto]
) -> None:
    broker = make_broker()  # never started: nothing listens
    config = make_config(tmp_path, broker, node=node, reconnect_max_s=0.4)
    async with running(config, connect=False) as sink:
        await wait_until(lambda: sink.last_error is not None)
        await asyncio.sleep(1.5)
        attempts = sink.counters["connect_attempts"]
        error = sink.last_error
    assert isinstance(error, SinkUnavailable)
    assert "refused" in str(error)
    assert "listening" in str(error)
    # 50 ms doubling up to 400 ms (with jitter): a handful, not hundreds.
    assert 3 <= attempts <= 20


async def test_changed_base_topic_reconnects_with_the_new_layout(
    mosquitto: Mosquitto, tmp_path: Path, node: str
) -> None:
    config = make_config(tmp_path, mosquitto, node=node)
    moved = make_config(tmp_path, mosquitto, node=node, base_topic=f"moved-{node}")
    async with running(config) as sink:
        sink.reconfigure(moved)
        await wait_until(lambda: sink.counters["connects"] == 2 and sink.connected)
        await sink.write([reading(3)])
        await wait_until(lambda: sink.counters["published"] == 1)
        new_status = f"moved-{node}/{node}/status"
        old_status = f"wattd-{node}/{node}/status"
        kept = await retained(mosquitto, f"+/{node}/status")
    assert kept[new_status] == b"online"
    assert kept[old_status] == b"offline"


# -- config ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"node_id": "has space"}, "node_id"),
        ({"base_topic": "wattd/#"}, "wildcards"),
        ({"base_topic": "/wattd"}, "leading"),
        ({"discovery": {"prefix": "ha/+"}}, "wildcards"),
        ({"password": "x"}, "username"),
        ({"tls": {"key_file": "k.pem"}}, "cert_file"),
        ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "reconnect_min_s"),
    ],
)
def test_invalid_mqtt_settings_are_rejected(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        MqttConfig.model_validate(settings)
