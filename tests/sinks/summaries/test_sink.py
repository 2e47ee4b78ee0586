"""The summaries sink: the scheduler runs inside the daemon, never on readings."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from wattd.config import parse_config
from wattd.core.readings import Reading
from wattd.daemon.bus import SinkChannel
from wattd.sinks.registry import build_sinks
from wattd.sinks.summaries.sink import SummarySink

if TYPE_CHECKING:
    from pathlib import Path

CONFIG = """
state_dir: {state}
store:
  enabled: false
summaries:
  daily:
    period: day
    schedule: "0 8 * * *"
"""


def reading() -> Reading:
    return Reading(
        sensor=1,
        name="a",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        monotonic_s=0.0,
        watts=1.0,
        va=1.0,
        vrms=120.0,
        irms=0.01,
        power_factor=None,
        wh_total=0.0,
        wh_delta=0.0,
        rssi_dbm=-50,
    )


def test_registry_enables_it_only_with_summaries(tmp_path: Path) -> None:
    with_summaries = parse_config(CONFIG.format(state=tmp_path))
    assert [s.name for s in build_sinks(with_summaries)] == ["summaries"]
    without = parse_config(f"state_dir: {tmp_path}\nstore:\n  enabled: false\n")
    assert build_sinks(without) == []


async def test_it_takes_no_readings_and_stops_cleanly(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(state=tmp_path))
    sink = SummarySink(config)
    channel = SinkChannel(sink)
    for _ in range(100):
        channel.offer(reading())
    snap = channel.snapshot()
    assert snap.queue_depth == 0
    assert snap.dropped == 0
    task = asyncio.create_task(sink.run())
    await asyncio.sleep(0.05)
    assert not task.done()  # the scheduler sleeps until 08:00
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    newer = parse_config(CONFIG.format(state=tmp_path).replace("0 8", "30 9"))
    sink.reconfigure(newer)
    assert sink._service.config is newer
