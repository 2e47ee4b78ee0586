"""Pacing: a simulator's frames handed out at their simulated times.

In real time, N times faster, or as fast as the consumer takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable

from wattd.errors import ConfigError
from wattd.sources.simulate.simulator import SimFrame, Simulator


@dataclasses.dataclass(slots=True)
class SimRunStats:
    """What a paced run produced."""

    frames: int = 0
    dropped: int = 0
    corrupted: int = 0
    bytes_written: int = 0
    overrun_bytes: int = 0
    """Bytes discarded because nobody read the port (real-time runs only)."""
    sim_time_s: float = 0.0

    def add(self, frame: SimFrame) -> None:
        """Count one frame."""
        self.frames += 1
        self.dropped += frame.dropped
        self.corrupted += frame.corrupted
        self.bytes_written += len(frame.data)
        self.sim_time_s = frame.time_s


Sleep = Callable[[float], Awaitable[None]]


async def pace_frames(
    sim: Simulator,
    emit: Callable[[SimFrame], Awaitable[None]],
    *,
    speed: float = 1.0,
    until_s: float | None = None,
    max_frames: int | None = None,
    stop_event: asyncio.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep | None = None,
) -> SimRunStats:
    """Hand frames to ``emit`` at their simulated times, scaled by ``speed``.

    ``speed`` 1 is real time, N is N times faster, 0 is as fast as ``emit``
    goes. Stops at ``until_s`` of simulated time (waiting it out when paced),
    after ``max_frames`` frames (dropped ones count), or when ``stop_event`` is
    set. ``clock`` and ``sleep`` can be replaced to test pacing without waiting.
    """
    if speed < 0:
        raise ConfigError(f"speed must be >= 0, got {speed:g}")
    stats = SimRunStats()
    start_real = clock()
    start_sim = sim.now_s

    async def pause(delay: float) -> None:
        if sleep is not None:
            await sleep(delay)
        elif stop_event is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop_event.wait()

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    while not stopped():
        if max_frames is not None and stats.frames >= max_frames:
            break
        t_next = sim.next_time_s()
        if t_next is None or (until_s is not None and t_next > until_s):
            if until_s is not None and speed > 0:
                delay = start_real + (until_s - start_sim) / speed - clock()
                if delay > 0:
                    await pause(delay)
            break
        if speed > 0:
            delay = start_real + (t_next - start_sim) / speed - clock()
            if delay > 0:
                await pause(delay)
                continue  # re-check the stop event and the clock
        elif stats.frames % 32 == 0:
            await asyncio.sleep(0)  # let the reader run when going flat out
        frame = sim.next_frame()
        await emit(frame)
        stats.add(frame)
    return stats
