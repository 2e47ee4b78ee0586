"""Replay pacing: speed 0, speed N, recordings and raw captures, with a fake clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.clocks import SleepClock
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.errors import CaptureError, ConfigError
from wattd.sources.recording import (
    RAW_FRAME_INTERVAL_S,
    RecordingWriter,
    load_capture,
    wall_to_ns,
)
from wattd.sources.replay import ReplayChunk, default_speed, replay_capture, replay_file
from wattd.sources.simulate import Simulator, varied_meters

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def make_recording(
    path: Path, *, seconds: float = 40.0, meters: int = 3
) -> list[tuple[float, bytes]]:
    """A recording of simulated traffic; returns (offset, bytes) per chunk."""
    sim = Simulator(varied_meters(meters, seed=4), seed=4)
    written = []
    with RecordingWriter(
        path,
        port="/dev/ttyUSB1",
        api_mode=1,
        start_wall_ns=wall_to_ns(T0),
        start_monotonic_s=0.0,
    ) as rec:
        for frame in sim.advance(seconds):
            # Split each frame like a USB adapter might.
            for part in (frame.data[:30], frame.data[30:]):
                rec.write(
                    part,
                    monotonic_s=frame.time_s,
                    wall_ns=wall_to_ns(T0) + round(frame.time_s * 1e9),
                )
                written.append((round(frame.time_s, 6), part))
    return written


async def collect(gen: AsyncIterator[ReplayChunk]) -> list[ReplayChunk]:
    return [chunk async for chunk in gen]


async def test_recording_at_speed_zero_is_immediate_with_recorded_times(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rec.jsonl"
    written = make_recording(path)
    clock = SleepClock(500.0)
    capture = load_capture(path)
    assert default_speed(capture) == 1.0
    out = await collect(
        replay_capture(capture, speed=0, clock=clock, sleep=clock.sleep)
    )
    assert clock.sleeps == []
    assert [c.data for c in out] == [d for _, d in written]
    assert [c.monotonic_s for c in out] == pytest.approx(
        [t for t, _ in written], abs=1e-6
    )
    for chunk in out:
        since = (chunk.wall_time - T0).total_seconds()
        assert since == pytest.approx(chunk.monotonic_s, abs=1.5e-6)
    wall, mono, data = out[0]  # unpacks as (wall_time, monotonic_s, bytes)
    assert (wall, mono, data) == (out[0].wall_time, out[0].monotonic_s, out[0].data)


@pytest.mark.parametrize("speed", [1.0, 5.0])
async def test_recording_paced_at_speed_n(tmp_path: Path, speed: float) -> None:
    path = tmp_path / "rec.jsonl"
    make_recording(path)
    clock = SleepClock(500.0)
    capture = load_capture(path)
    first = capture.chunks[0].offset_s
    seen = [
        (clock.now, chunk)
        async for chunk in replay_capture(
            capture, speed=speed, clock=clock, sleep=clock.sleep
        )
    ]
    assert len(seen) == len(capture.chunks)
    for real, chunk in seen:
        # Each chunk comes out exactly when its scaled offset is due.
        assert real - 500.0 == pytest.approx(
            (chunk.monotonic_s - first) / speed, abs=1e-9
        )
    assert sum(clock.sleeps) == pytest.approx((capture.duration_s - first) / speed)


async def test_default_speed_of_a_recording_is_real_time(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    make_recording(path, seconds=10)
    clock = SleepClock(500.0)
    capture = load_capture(path)
    out = await collect(replay_capture(capture, clock=clock, sleep=clock.sleep))
    assert len(out) == len(capture.chunks)
    assert clock.now - 500.0 == pytest.approx(
        capture.duration_s - capture.chunks[0].offset_s
    )


async def test_a_slow_consumer_is_not_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    make_recording(path, seconds=20)
    clock = SleepClock(500.0)
    capture = load_capture(path)
    count = 0
    async for _ in replay_capture(capture, speed=1.0, clock=clock, sleep=clock.sleep):
        count += 1
        clock.now += 100.0  # the consumer takes ages per chunk
    assert count == len(capture.chunks)
    assert clock.sleeps == []


async def test_monotonic_base_shifts_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    make_recording(path, seconds=5)
    capture = load_capture(path)
    base = await collect(replay_capture(capture, speed=0))
    shifted = await collect(replay_capture(capture, speed=0, monotonic_base_s=1e4))
    assert [b.monotonic_s + 1e4 for b in base] == [s.monotonic_s for s in shifted]


async def test_raw_capture_defaults_to_speed_zero_with_a_synthetic_clock(
    tmp_path: Path,
) -> None:
    sim = Simulator(varied_meters(1, seed=2), seed=2)
    frames = sim.advance(30.0)
    path = tmp_path / "raw.bin"
    path.write_bytes(b"".join(f.data for f in frames))
    clock = SleepClock(500.0)
    out = await collect(
        replay_file(path, start_wall=T0, clock=clock, sleep=clock.sleep)
    )
    assert clock.sleeps == []
    assert len(out) == len(frames)
    assert [c.data for c in out] == [f.data for f in frames]
    for k, chunk in enumerate(out):
        assert chunk.monotonic_s == pytest.approx(k * RAW_FRAME_INTERVAL_S)
        assert chunk.wall_time == T0 + timedelta(seconds=k * RAW_FRAME_INTERVAL_S)


async def test_raw_capture_paced_at_one_frame_per_interval_over_speed(
    tmp_path: Path,
) -> None:
    sim = Simulator(varied_meters(1, seed=2), seed=2, api_mode=2)
    path = tmp_path / "raw.ap2.bin"
    path.write_bytes(b"".join(f.data for f in sim.advance(20.0)))
    clock = SleepClock(500.0)
    emitted = []
    async for chunk in replay_file(
        path, speed=4.0, start_wall=T0, clock=clock, sleep=clock.sleep
    ):
        emitted.append(clock.now)
        assert len(FrameDecoder(2).feed(chunk.data)) == 1
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(emitted)}
    assert gaps == {round(RAW_FRAME_INTERVAL_S / 4.0, 9)}


async def test_real_capture_replays_every_frame(captures_dir: Path) -> None:
    path = captures_dir / "Noisy_Zeros4.ap2.bin"
    dec = FrameDecoder(2)
    frames = 0
    last = -1.0
    async for chunk in replay_file(path, speed=0, start_wall=T0):
        assert chunk.monotonic_s >= last
        last = chunk.monotonic_s
        frames += sum(isinstance(e, IoSampleFrame) for e in dec.feed(chunk.data))
    assert frames == 158
    assert dec.stats.rejected == 0


async def test_bad_inputs(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    make_recording(path, seconds=3)
    with pytest.raises(ConfigError, match="speed"):
        await collect(replay_capture(load_capture(path), speed=-1))
    with pytest.raises(CaptureError, match="cannot open"):
        await collect(replay_file(tmp_path / "missing.jsonl"))
