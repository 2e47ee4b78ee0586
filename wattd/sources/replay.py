"""Replay a capture as a byte source, paced like the original traffic.

Each item is ``(wall_time, monotonic_s, data)``: the arrival times the pipeline
should use, whatever the replay speed.

* Recordings: ``wall_time`` is the recorded wall time and ``monotonic_s`` the
  recorded offset plus ``monotonic_base_s``, so energy integrates over the
  recorded time. Default speed 1 (real time).
* Raw captures carry no timing. They get a synthetic clock (one frame per
  sensor every 2.08 s from ``start_wall``, see
  :func:`wattd.sources.recording.split_raw_capture`). Default speed 0.

Speed 1 waits out the recorded gaps, N is N times faster, 0 is as fast as the
consumer takes the chunks. A consumer that falls behind is not waited for: the
next chunks come at once until the schedule is caught up.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, NamedTuple

from wattd.errors import ConfigError
from wattd.sources.recording import RAW_FRAME_INTERVAL_S, Capture, load_capture
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable
    from datetime import datetime
    from pathlib import Path

# At full speed, hand control back to the event loop this often so a replay
# does not starve the tasks consuming it.
_YIELD_EVERY: Final = 64


class ReplayChunk(NamedTuple):
    """Bytes with the arrival times the pipeline should stamp them with."""

    wall_time: datetime
    monotonic_s: float
    data: bytes


def default_speed(capture: Capture) -> float:
    """Real time for recordings, flat out for raw captures."""
    return 1.0 if capture.timed else 0.0


async def replay_capture(
    capture: Capture,
    *,
    speed: float | None = None,
    monotonic_base_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[ReplayChunk, None]:
    """Yield the capture's chunks at their (scaled) times.

    ``clock`` and ``sleep`` pace the replay; tests pass fakes to check the
    schedule without waiting.

    Raises:
        ConfigError: if ``speed`` is negative.
    """
    pace = default_speed(capture) if speed is None else speed
    if pace < 0:
        raise ConfigError(f"replay speed must be >= 0, got {pace:g}")
    if not capture.chunks:
        return
    first = capture.chunks[0].offset_s
    start = clock()
    for n, (offset_s, wall_time, data) in enumerate(capture.chunks):
        if pace > 0:
            delay = start + (offset_s - first) / pace - clock()
            if delay > 0:
                await sleep(delay)
        elif n % _YIELD_EVERY == _YIELD_EVERY - 1:
            await asyncio.sleep(0)
        yield ReplayChunk(wall_time, monotonic_base_s + offset_s, data)


async def replay_file(
    path: Path | str,
    *,
    speed: float | None = None,
    start_wall: datetime | None = None,
    frame_interval_s: float = RAW_FRAME_INTERVAL_S,
    monotonic_base_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[ReplayChunk, None]:
    """Load a recording or raw capture and replay it (see :func:`replay_capture`).

    Raises:
        CaptureError: if the file is unreadable or malformed.
    """
    # Parsing a capture allocates all of it at once, the case the one worker
    # is for; nothing waits behind it, as replays do not run in the daemon.
    capture = await run_blocking(
        load_capture, path, start_wall=start_wall, frame_interval_s=frame_interval_s
    )
    async for chunk in replay_capture(
        capture,
        speed=speed,
        monotonic_base_s=monotonic_base_s,
        clock=clock,
        sleep=sleep,
    ):
        yield chunk


__all__ = ["ReplayChunk", "default_speed", "replay_capture", "replay_file"]
