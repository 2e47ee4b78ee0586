"""The store first: other sinks get a reading only once the SQLite store holds it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tests.fixtures.daemon import meter_sensors, running_supervisor
from tests.fixtures.readings import steady_reading
from tests.fixtures.sinks import RecordingSink
from tests.fixtures.waiting import wait_until
from wattd.config import Config
from wattd.core.readings import Reading
from wattd.daemon.bus import Bus, SinkChannel
from wattd.daemon.handoff import HOLD_MAX_S, Handoff
from wattd.daemon.supervisor import Supervisor
from wattd.sinks.sqlite import SqliteSink
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator
from wattd.storage.store import Store

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from tests.fixtures.pty import Pty


def config(tmp_path: Path, **data: Any) -> Config:
    # A long flush interval: only the hand-off can make the store commit soon.
    settings = {"state_dir": str(tmp_path / "state"), "store": {"flush_interval_s": 60}}
    return Config.model_validate({**settings, **data})


def stored_keys(path: Path) -> set[tuple[int, int]]:
    if not path.exists():
        return set()
    with Store.open(path, readonly=True) as store:
        return {(r.sensor, r.time_ns) for r in store.readings(0, 1 << 62)}


class StoreChecker(RecordingSink):
    """Records, for each reading it gets, whether the store already held it."""

    def __init__(self, name: str, store_path: Path) -> None:
        super().__init__(name)
        self.store_path = store_path
        self.not_stored: list[Reading] = []

    async def write(self, readings: Sequence[Reading]) -> None:
        keys = stored_keys(self.store_path)
        self.not_stored += [r for r in readings if (r.sensor, r.time_ns) not in keys]
        await super().write(readings)


def wired(bus: Bus, handoff: Handoff, *sinks: Any) -> list[SinkChannel]:
    channels = []
    for sink in sinks:
        channel = SinkChannel(sink)
        bus.add(channel)
        handoff.attach(channel)
        channels.append(channel)
    return channels


async def test_other_sinks_get_a_reading_only_once_it_is_stored(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    other = StoreChecker("mqtt", cfg.store_path)
    bus = Bus()
    handoff = Handoff(bus)
    store_channel, other_channel = wired(bus, handoff, SqliteSink(cfg), other)
    assert handoff.store is store_channel
    async with asyncio.TaskGroup() as tg:
        store_channel.start(tg)
        other_channel.start(tg)
        for i in range(200):
            handoff.publish(steady_reading(i))
            if i % 7 == 0:
                await asyncio.sleep(0.002)
        # Well before the 60 s flush interval: the store commits for the others.
        await wait_until(lambda: len(other.received) == 200)
        await store_channel.close(5)
        await other_channel.close(5)
    assert other.not_stored == []
    assert [r.time for r in other.received] == [
        steady_reading(i).time for i in range(200)
    ]
    assert handoff.waiting == 0


async def test_store_trouble_does_not_hold_up_the_other_sinks(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cfg = config(tmp_path, store={"path": str(blocker / "wattd.sqlite")})
    other = RecordingSink("influx")
    bus = Bus()
    handoff = Handoff(bus)
    store_channel, other_channel = wired(bus, handoff, SqliteSink(cfg), other)
    async with asyncio.TaskGroup() as tg:
        store_channel.start(tg)
        other_channel.start(tg)
        for i in range(20):
            handoff.publish(steady_reading(i))
        # Released when the write fails, not after HOLD_MAX_S.
        await wait_until(lambda: len(other.received) == 20, timeout_s=HOLD_MAX_S / 2)
        handoff.publish(steady_reading(20))  # the store still fails: straight through
        await wait_until(lambda: len(other.received) == 21, timeout_s=HOLD_MAX_S / 2)
        await store_channel.close(1)
        await other_channel.close(5)
    assert [r.time for r in other.received] == [
        steady_reading(i).time for i in range(21)
    ]


def test_readings_that_wait_too_long_for_the_store_are_released(
    tmp_path: Path,
) -> None:
    now = [100.0]
    bus = Bus()
    handoff = Handoff(bus, clock=lambda: now[0])
    # Never started: this store commits nothing, like one stuck on a dead disk.
    store_channel, other_channel = wired(
        bus, handoff, SqliteSink(config(tmp_path)), RecordingSink("mqtt")
    )
    handoff.publish(steady_reading(0))
    now[0] += HOLD_MAX_S / 2
    handoff.publish(steady_reading(1))
    assert handoff.release_overdue() == 0
    assert len(other_channel.readings) == 0
    now[0] += HOLD_MAX_S / 2 + 0.1
    assert handoff.release_overdue() == 1
    assert [r.time for r in other_channel.readings.take(10)] == [steady_reading(0).time]
    assert len(store_channel.readings) == 2
    handoff.detach(store_channel)  # the rest goes now
    assert [r.time for r in other_channel.readings.take(10)] == [steady_reading(1).time]
    assert handoff.store is None
    handoff.publish(steady_reading(2))
    assert len(other_channel.readings) == 1


def test_a_store_alone_keeps_its_batching(tmp_path: Path) -> None:
    bus = Bus()
    handoff = Handoff(bus)
    (store_channel,) = wired(bus, handoff, SqliteSink(config(tmp_path)))
    handoff.publish(steady_reading(0))
    # Nobody waits, so nothing is held and the store need not commit early.
    assert handoff.waiting == 0
    assert len(store_channel.readings) == 1


async def test_daemon_hands_over_from_the_store_and_flushes_it_first_at_stop(
    tmp_path: Path, pty: Pty
) -> None:
    meter = MeterModel.with_quirks(5, ResistiveLoad(watts=200.0), seed=1)
    cfg = config(
        tmp_path,
        ports=[{"device": pty.path}],
        sensors=meter_sensors([meter]),
    )
    other = StoreChecker("mqtt", cfg.store_path)
    sup = Supervisor(cfg, sink_factory=lambda c: [SqliteSink(c), other])
    sim = Simulator([meter], seed=2)
    async with running_supervisor(sup):
        for _ in range(30):
            pty.write(sim.next_frame().data)
            await asyncio.sleep(0.005)
        await wait_until(lambda: sup.snapshot().readings_total == 30)
    # The stop flushed the store before the others, and they got everything.
    keys = sorted(stored_keys(cfg.store_path))
    assert len(keys) == 30
    assert [(r.sensor, r.time_ns) for r in other.received] == keys
    assert other.not_stored == []
