from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.sinks import RecordingSink
from tests.fixtures.waiting import wait_until
from wattd.core.readings import FrameRecord, Reading
from wattd.daemon.bus import BoundedQueue, Bus, SinkChannel
from wattd.errors import SinkRejected, SinkUnavailable
from wattd.support.throttle import LogThrottle

if TYPE_CHECKING:
    from wattd.sinks.base import Sink

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def reading(i: int, sensor: int = 1) -> Reading:
    return Reading(
        sensor=sensor,
        name=f"s{sensor}",
        time=T0 + timedelta(seconds=2 * i),
        monotonic_s=2.0 * i,
        watts=float(i),
        va=float(i),
        vrms=120.0,
        irms=i / 120,
        power_factor=1.0,
        wh_total=i / 10,
        wh_delta=0.1,
        rssi_dbm=-40,
    )


def frame(i: int) -> FrameRecord:
    return FrameRecord(
        time=T0, port="p", api_mode=1, kind="io", raw=bytes([0x7E, i % 256])
    )


def fast_channel(sink: Sink) -> SinkChannel:
    return SinkChannel(sink, retry_initial_s=0.01, retry_max_s=0.05)


def test_bounded_queue_drops_oldest_and_counts() -> None:
    q: BoundedQueue[int] = BoundedQueue(3)
    results = [q.put(i) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert q.dropped == 2
    assert q.enqueued == 5
    assert q.take(10) == [2, 3, 4]
    assert len(q) == 0
    with pytest.raises(ValueError, match="at least 1"):
        BoundedQueue(0)


def test_put_back_returns_a_batch_ahead_of_newer_items() -> None:
    q: BoundedQueue[int] = BoundedQueue(3)
    q.put(1)
    q.put(2)
    batch = q.take(2)
    q.put(3)
    q.put(4)
    # No room for all four: the oldest goes, as a put would have dropped it.
    assert q.put_back(batch) == 1
    assert q.dropped == 1
    assert q.enqueued == 4
    assert q.take(10) == [2, 3, 4]


def test_log_throttle_counts_suppressed_lines() -> None:
    now = [0.0]
    throttle = LogThrottle(interval_s=10, clock=lambda: now[0])
    assert throttle.allow("k") == 0
    assert throttle.allow("k") is None
    assert throttle.allow("k") is None
    assert throttle.allow("other") == 0
    now[0] = 10.5
    assert throttle.allow("k") == 2
    assert throttle.allow("k") is None


async def test_readings_reach_every_sink_in_order_and_batched() -> None:
    a = RecordingSink("a", batch_size=7)
    b = RecordingSink("b")
    bus = Bus()
    async with asyncio.TaskGroup() as tg:
        for sink in (a, b):
            ch = fast_channel(sink)
            bus.add(ch)
            ch.start(tg)
        for i in range(100):
            bus.publish(reading(i))
        await wait_until(lambda: len(a.received) == 100 and len(b.received) == 100)
        for ch in bus.channels:
            await ch.close(5)
    assert [r.watts for r in a.received] == [float(i) for i in range(100)]
    assert [r.watts for r in b.received] == [float(i) for i in range(100)]
    assert max(len(batch) for batch in a.batches) <= 7
    assert a.events == ["start", "flush", "stop"]
    snap = bus.channels[0].snapshot()
    assert snap.written == 100
    assert snap.dropped == 0


async def test_duplicate_sink_names_are_refused() -> None:
    bus = Bus()
    bus.add(fast_channel(RecordingSink("x")))
    with pytest.raises(ValueError, match="unique"):
        bus.add(fast_channel(RecordingSink("x")))


async def test_slow_sink_does_not_stall_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = RecordingSink("slow", queue_size=50, batch_size=10)
    slow.gate.clear()  # its write never returns until the gate opens
    fast = RecordingSink("fast")
    bus = Bus()
    async with asyncio.TaskGroup() as tg:
        channels = {}
        for sink in (slow, fast):
            ch = fast_channel(sink)
            bus.add(ch)
            ch.start(tg)
            channels[sink.name] = ch
        with caplog.at_level(logging.WARNING, logger="wattd.daemon.bus"):
            for i in range(1000):
                bus.publish(reading(i))
                if i % 100 == 0:
                    await asyncio.sleep(0)  # let the writers run between bursts
            await wait_until(lambda: len(fast.received) == 1000)
        snap = channels["slow"].snapshot()
        # The slow sink holds one batch inside write() and a full queue; the
        # rest was dropped, oldest first, and counted.
        assert snap.queue_depth == 50
        assert snap.dropped > 900
        assert snap.written == 0
        drop_lines = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(drop_lines) == 1  # rate-limited, not one per reading
        slow.gate.set()
        await wait_until(lambda: channels["slow"].snapshot().queue_depth == 0)
        await wait_until(lambda: len(slow.received) + snap.dropped == 1000)
        for ch in bus.channels:
            await ch.close(5)
    # Nothing is lost silently: written + dropped accounts for every reading,
    # and what survived is the newest data, in order.
    after = channels["slow"].snapshot()
    assert after.written + after.dropped == 1000
    kept = [int(r.watts) for r in slow.received]
    assert kept == sorted(kept)
    assert kept[-50:] == list(range(950, 1000))
    assert [int(r.watts) for r in fast.received] == list(range(1000))


async def test_unavailable_sink_keeps_the_batch_and_retries() -> None:
    sink = RecordingSink("flaky")
    sink.fail_next = [SinkUnavailable("down", sink="flaky")] * 3
    ch = fast_channel(sink)
    async with asyncio.TaskGroup() as tg:
        ch.start(tg)
        for i in range(5):
            ch.offer(reading(i))
        await wait_until(lambda: len(sink.received) == 5)
        await ch.close(5)
    assert [int(r.watts) for r in sink.received] == [0, 1, 2, 3, 4]
    snap = ch.snapshot()
    assert snap.errors == 3
    assert snap.rejected == 0
    assert snap.written == 5
    assert "down" in (snap.last_error or "")


async def test_rejected_batch_is_dropped_not_retried() -> None:
    sink = RecordingSink("picky", batch_size=2)
    sink.fail_next = [SinkRejected("bad point", sink="picky")]
    ch = fast_channel(sink)
    async with asyncio.TaskGroup() as tg:
        ch.start(tg)
        for i in range(4):
            ch.offer(reading(i))
        await wait_until(lambda: ch.snapshot().rejected + len(sink.received) == 4)
        await ch.close(5)
    assert [int(r.watts) for r in sink.received] == [2, 3]
    assert ch.snapshot().rejected == 2


async def test_sink_bug_is_retried_a_few_times_then_batch_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RecordingSink("buggy", batch_size=1)
    sink.fail_next = [RuntimeError("oops")] * 3
    ch = fast_channel(sink)
    with caplog.at_level(logging.ERROR, logger="wattd.daemon.bus"):
        async with asyncio.TaskGroup() as tg:
            ch.start(tg)
            ch.offer(reading(0))
            ch.offer(reading(1))
            await wait_until(lambda: len(sink.received) == 1)
            await ch.close(5)
    assert [int(r.watts) for r in sink.received] == [1]
    snap = ch.snapshot()
    assert snap.rejected == 1
    assert snap.errors == 3
    assert any(r.exc_info for r in caplog.records)  # a bug gets a traceback


async def test_failing_start_is_retried_while_readings_queue() -> None:
    sink = RecordingSink("late")
    sink.start_failures = 2
    ch = fast_channel(sink)
    async with asyncio.TaskGroup() as tg:
        ch.start(tg)
        for i in range(3):
            ch.offer(reading(i))
        await wait_until(lambda: len(sink.received) == 3)
        await ch.close(5)
    assert sink.events[0] == "start"
    assert ch.snapshot().errors == 2


async def test_close_gives_up_after_timeout_and_counts_the_loss() -> None:
    sink = RecordingSink("stuck", batch_size=2)
    sink.gate.clear()
    ch = fast_channel(sink)
    async with asyncio.TaskGroup() as tg:
        ch.start(tg)
        for i in range(6):
            ch.offer(reading(i))
        await asyncio.sleep(0.05)
        await ch.close(0.2)
    snap = ch.snapshot()
    assert snap.dropped == 4  # the batch in flight is not counted as queued
    assert sink.events == ["start", "stop"]  # never flushed, still stopped


async def test_frames_go_only_to_sinks_that_want_them() -> None:
    archive = RecordingSink("archive", wants_frames=True)
    plain = RecordingSink("plain")
    bus = Bus()
    async with asyncio.TaskGroup() as tg:
        for sink in (archive, plain):
            ch = fast_channel(sink)
            bus.add(ch)
            ch.start(tg)
        for i in range(10):
            bus.publish_frame(frame(i))
        await wait_until(lambda: sum(len(b) for b in archive.frame_batches) == 10)
        for ch in bus.channels:
            await ch.close(5)
    assert [f.raw[1] for b in archive.frame_batches for f in b] == list(range(10))
    assert plain.frame_batches == []


async def test_crashing_background_task_is_restarted() -> None:
    class Crashy(RecordingSink):
        runs = 0

        async def run(self) -> None:
            self.runs += 1
            if self.runs < 3:
                raise RuntimeError("background died")
            await asyncio.Event().wait()

    sink = Crashy("crashy")
    ch = fast_channel(sink)
    async with asyncio.TaskGroup() as tg:
        ch.start(tg)
        await wait_until(lambda: sink.runs == 3)
        ch.offer(reading(1))
        await wait_until(lambda: len(sink.received) == 1)
        await ch.close(5)
    assert ch.snapshot().errors == 2


class SpooledSink(RecordingSink):
    """Stands in for the MQTT and InfluxDB sinks: its write only spools."""

    retries_itself = True


def test_the_spooled_sinks_retry_by_themselves() -> None:
    from wattd.sinks.influx.sink import InfluxSink
    from wattd.sinks.mqtt.sink import MqttSink

    assert MqttSink.retries_itself
    assert InfluxSink.retries_itself
    assert not RecordingSink.retries_itself


async def test_refused_batch_of_a_self_retrying_sink_waits_for_the_next_reading() -> (
    None
):
    sink = SpooledSink("spooled")
    sink.fail_next = [SinkUnavailable("spool full", sink="spooled")]
    ch = fast_channel(sink)
    async with asyncio.TaskGroup() as tg:
        ch.start(tg)
        for i in range(3):
            ch.offer(reading(i))
        await wait_until(lambda: ch.snapshot().errors == 1)
        # Many backoff steps of the other sinks pass: no retry loop here.
        await asyncio.sleep(0.2)
        assert sink.received == []
        assert ch.snapshot().queue_depth == 3
        ch.offer(reading(3))
        await wait_until(lambda: len(sink.received) == 4)
        await ch.close(5)
    assert [int(r.watts) for r in sink.received] == [0, 1, 2, 3]
    snap = ch.snapshot()
    assert snap.errors == 1
    assert snap.written == 4
    assert snap.dropped == 0
    assert snap.rejected == 0
    assert "spool full" in (snap.last_error or "")


async def test_refused_batch_of_a_self_retrying_sink_is_tried_once_more_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = SpooledSink("spooled")
    sink.fail_next = [SinkUnavailable("spool full", sink="spooled")]
    ch = fast_channel(sink)
    async with asyncio.TaskGroup() as tg:
        ch.start(tg)
        ch.offer(reading(0))
        await wait_until(lambda: ch.snapshot().errors == 1)
        await ch.close(5)
    assert [int(r.watts) for r in sink.received] == [0]
    assert sink.events == ["start", "flush", "stop"]

    stuck = SpooledSink("stuck")
    stuck.fail_next = [SinkUnavailable("disk full", sink="stuck")] * 100
    ch = fast_channel(stuck)
    with caplog.at_level(logging.ERROR, logger="wattd.daemon.bus"):
        async with asyncio.TaskGroup() as tg:
            ch.start(tg)
            ch.offer(reading(0))
            ch.offer(reading(1))
            await wait_until(lambda: ch.snapshot().errors == 1)
            await ch.close(5)
    snap = ch.snapshot()
    assert snap.errors == 2  # the first try and the one after the close
    assert snap.dropped == 2  # counted, not lost silently
    assert stuck.events == ["start", "flush", "stop"]
    assert any("refused at shutdown" in r.getMessage() for r in caplog.records)


async def test_bug_in_a_self_retrying_sink_gets_a_few_chances_then_is_dropped() -> None:
    sink = SpooledSink("buggy", batch_size=1)
    sink.fail_next = [RuntimeError("oops")] * 3
    ch = fast_channel(sink)
    async with asyncio.TaskGroup() as tg:
        ch.start(tg)
        # Each refusal waits for the next reading before the batch goes again.
        ch.offer(reading(0))
        await wait_until(lambda: ch.snapshot().errors == 1)
        ch.offer(reading(1))
        await wait_until(lambda: ch.snapshot().errors == 2)
        ch.offer(reading(2))
        await wait_until(lambda: len(sink.received) == 2)
        await ch.close(5)
    assert [int(r.watts) for r in sink.received] == [1, 2]
    snap = ch.snapshot()
    assert snap.rejected == 1
    assert snap.errors == 3
