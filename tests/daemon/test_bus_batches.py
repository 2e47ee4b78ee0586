"""Handing readings over in batches leaves each queue as one-by-one offers would."""

from __future__ import annotations

import pytest

from tests.fixtures.readings import steady_reading
from tests.fixtures.sinks import RecordingSink
from wattd.daemon.bus import BoundedQueue, SinkChannel


@pytest.mark.parametrize(
    ("capacity", "before", "batch"), [(5, 0, 3), (5, 4, 3), (3, 2, 10)]
)
def test_put_many_keeps_and_counts_what_single_puts_would(
    capacity: int, before: int, batch: int
) -> None:
    one: BoundedQueue[int] = BoundedQueue(capacity)
    many: BoundedQueue[int] = BoundedQueue(capacity)
    for i in range(before):
        one.put(i)
        many.put(i)
    items = list(range(100, 100 + batch))
    for item in items:
        one.put(item)
    dropped = many.put_many(items)
    assert many.take(100) == one.take(100)
    assert (many.dropped, many.enqueued) == (one.dropped, one.enqueued)
    assert dropped == max(0, before + batch - capacity)


def test_offer_many_queues_in_order_for_sinks_that_take_readings() -> None:
    channel = SinkChannel(RecordingSink("mqtt"))
    readings = [steady_reading(i) for i in range(4)]
    channel.offer_many(readings[:2])
    channel.offer_many([])
    channel.offer_many(readings[2:])
    assert channel.readings.take(10) == readings
