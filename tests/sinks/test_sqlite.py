"""The SQLite sink: batching, the store thread, trouble with the file, retention."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.readings import steady_reading
from tests.fixtures.waiting import wait_until
from wattd.config import Config, StoreConfig
from wattd.core.readings import FrameRecord
from wattd.daemon.bus import SinkChannel
from wattd.errors import SinkUnavailable
from wattd.sinks.sqlite import SqliteSink
from wattd.storage.store import WRITER_HEARTBEAT_KEY, Store, to_ns

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def frame(i: int) -> FrameRecord:
    return FrameRecord(
        time=T0 + timedelta(seconds=2 * i),
        port="/dev/ttyUSB0",
        api_mode=1,
        kind="io",
        raw=bytes([0x7E, 0, 1, i % 256]),
        sensor=1,
    )


def config(tmp_path: Path, **store: object) -> Config:
    settings = {"flush_interval_s": 60.0, "batch_size": 500, **store}
    return Config(state_dir=tmp_path, store=StoreConfig.model_validate(settings))


def make_sink(
    cfg: Config, *, now: datetime | None = None, **kwargs: object
) -> SqliteSink:
    """A sink whose wall clock sits just after the test data (or at ``now``)."""
    moment = now or T0 + timedelta(hours=1)
    return SqliteSink(cfg, wall_clock_ns=lambda: to_ns(moment), **kwargs)  # type: ignore[arg-type]


def stored(cfg: Config) -> tuple[int, int]:
    with Store.open(cfg.store_path, readonly=True) as s:
        return s.count("readings"), s.count("frames")


async def test_writes_readings_frames_and_rollups(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sink = make_sink(cfg)
    assert sink.wants_frames
    await sink.start()
    await sink.write([steady_reading(i) for i in range(40)])
    await sink.write_frames([frame(i) for i in range(40)])
    await sink.flush()
    assert stored(cfg) == (40, 40)
    with Store.open(cfg.store_path, readonly=True) as s:
        minutes = s.rollups("1m", 0, 1 << 62)
        assert sum(m.n_readings for m in minutes) == 40
        assert sum(m.wh for m in minutes) == pytest.approx(60.0 * 78 / 3600)
        assert s.last_wh_totals() == {1: pytest.approx(60.0 * 78 / 3600)}
        assert s.meta(WRITER_HEARTBEAT_KEY) is not None
    stats = sink.stats()
    assert stats["readings_written"] == 40
    assert stats["frames_written"] == 40
    assert stats["store_ok"] == 1.0
    await sink.stop()
    with Store.open(cfg.store_path, readonly=True) as s:
        assert s.meta(WRITER_HEARTBEAT_KEY) is None  # a clean stop clears the heartbeat


async def test_batches_wait_for_batch_size(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_size=10)
    sink = make_sink(cfg)
    assert sink.batch_size == 10
    await sink.start()
    await sink.write([steady_reading(i) for i in range(6)])
    await sink.write_frames([frame(i) for i in range(3)])
    assert stored(cfg) == (0, 0)
    assert sink.stats()["buffered_readings"] == 6
    await sink.write([steady_reading(i) for i in range(6, 8)])  # 8 + 3 >= 10: one batch
    assert stored(cfg) == (8, 3)
    assert sink.stats()["flushes"] == 1
    await sink.write([steady_reading(8)])
    assert stored(cfg) == (8, 3)
    await sink.stop()
    assert stored(cfg) == (9, 3)


async def test_run_flushes_on_the_interval(tmp_path: Path) -> None:
    cfg = config(tmp_path, flush_interval_s=0.05)
    sink = make_sink(cfg)
    await sink.start()
    runner = asyncio.create_task(sink.run())
    try:
        await sink.write([steady_reading(i) for i in range(3)])
        await wait_until(lambda: stored(cfg)[0] >= 3, timeout_s=5)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await sink.stop()


async def test_locked_store_is_retried_with_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, batch_size=4)
    sink = make_sink(cfg, busy_timeout_s=0.05)
    await sink.start()
    blocker = sqlite3.connect(cfg.store_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        await sink.write(
            [steady_reading(i) for i in range(4)]
        )  # full batch; flush fails
        assert "locked" in caplog.text
        stats = sink.stats()
        assert stats["flush_errors"] >= 1
        assert stats["store_ok"] == 0.0
        assert stats["buffered_readings"] == 4
        # The buffer is full: further batches are handed back to the bus.
        with pytest.raises(SinkUnavailable, match="locked"):
            await sink.write([steady_reading(4)])
        with pytest.raises(SinkUnavailable, match=str(cfg.store_path)):
            await sink.flush()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await sink.write([steady_reading(4)])
    assert stored(cfg)[0] >= 4
    await sink.flush()
    assert stored(cfg)[0] == 5
    assert sink.stats()["store_ok"] == 1.0
    with Store.open(cfg.store_path, readonly=True) as s:
        assert [r.time_ns for r in s.readings(0, 1 << 62)] == [
            steady_reading(i).time_ns for i in range(5)
        ]
    await sink.stop()


async def test_corrupt_store_is_set_aside_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path)
    cfg.store_path.parent.mkdir(parents=True, exist_ok=True)
    junk = b"definitely not sqlite " * 300
    cfg.store_path.write_bytes(junk)
    sink = make_sink(cfg, now=datetime.fromtimestamp(1_700_000_000, UTC))
    await sink.start()
    aside = sorted(tmp_path.glob("wattd.sqlite.corrupt-*"))
    assert [p.name for p in aside] == ["wattd.sqlite.corrupt-20231114T221320Z"]
    assert aside[0].read_bytes() == junk
    assert "corrupt" in caplog.text
    assert sink.stats()["corrupt_set_aside"] == 1
    await sink.write([steady_reading(0), steady_reading(1)])
    await sink.flush()
    assert stored(cfg) == (2, 0)
    await sink.stop()


async def test_unopenable_store_keeps_the_sink_running(tmp_path: Path) -> None:
    # The store's directory is a file: nothing can be created there.
    (tmp_path / "blocked").write_text("")
    cfg = Config(
        state_dir=tmp_path, store=StoreConfig(path=tmp_path / "blocked" / "w.sqlite")
    )
    sink = make_sink(cfg)
    await sink.start()  # logs, does not raise
    assert sink.stats()["store_ok"] == 0.0
    await sink.write([steady_reading(0)])
    with pytest.raises(SinkUnavailable, match="state directory"):
        await sink.flush()
    await sink.stop()


async def test_run_applies_retention(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        flush_interval_s=0.05,
        readings_retention_days=1,
        frames_retention_days=1,
    )
    now = T0 + timedelta(days=3)
    sink = make_sink(cfg, now=now)
    await sink.start()
    await sink.write([steady_reading(i) for i in range(10)])
    await sink.write_frames([frame(i) for i in range(10)])
    await sink.flush()
    assert stored(cfg) == (10, 10)
    runner = asyncio.create_task(sink.run())
    try:
        await wait_until(lambda: stored(cfg) == (0, 0), timeout_s=5)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert sink.stats()["retention_deleted"] == 20
    with Store.open(cfg.store_path, readonly=True) as s:
        assert s.last_wh_totals()[1] == pytest.approx(steady_reading(9).wh_total)
        assert len(s.rollups("1m", 0, 1 << 62)) > 0  # kept 90 days by default
    await sink.stop()


async def test_reconfigure_to_a_new_path_reopens(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sink = make_sink(cfg)
    await sink.start()
    await sink.write([steady_reading(0)])
    await sink.flush()
    other = Config(state_dir=tmp_path / "elsewhere", store=cfg.store)
    sink.reconfigure(other)
    await sink.write([steady_reading(1)])
    await sink.flush()
    await sink.stop()
    assert stored(cfg) == (1, 0)
    assert stored(other) == (1, 0)


async def test_through_the_bus(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_size=7)
    sink = make_sink(cfg)
    channel = SinkChannel(sink)
    async with asyncio.TaskGroup() as tg:
        channel.start(tg)
        for i in range(50):
            channel.offer(steady_reading(i))
            channel.offer_frame(frame(i))
            if i % 10 == 0:
                await asyncio.sleep(0)
        await channel.close(10.0)
    assert stored(cfg) == (50, 50)
    assert channel.written == 50
    assert channel.frames_written == 50
    assert os.path.exists(cfg.store_path)
