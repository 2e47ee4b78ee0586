"""Fan-out: every reading to every sink, without one sink holding up another.

Each sink gets a :class:`SinkChannel`: a bounded queue of readings (and one of
raw frames if the sink wants them) plus a runner task that starts the sink,
takes whatever has queued up (at most ``batch_size``) and awaits
:meth:`~wattd.sinks.base.Sink.write`. The serial side only ever calls
:meth:`Bus.publish`, which appends to each queue and returns; so a slow or dead
sink can only fill its own queue. When that queue is full the *oldest* queued
reading is dropped (fresh data is worth more than stale data) and counted.

Write failures follow the error's class: :class:`~wattd.errors.SinkRejected`
drops the batch (retrying the same data will not help); any other
:class:`~wattd.errors.SinkError` keeps the batch and retries with capped
backoff (:mod:`wattd.support.backoff`); an unexpected exception is a bug in the
sink and the batch is retried a few times, then dropped. All of it is counted
and logged, rate-limited.

A sink that retries by itself (:attr:`~wattd.sinks.base.Sink.retries_itself`:
its ``write`` only appends to a durable spool and its ``run`` owns reconnects
and resends) gets no backoff loop here, which would only stack a third layer
of retries on its own two: a batch it refuses goes back to the head of its
queue, and is handed over again, with whatever queued meanwhile, when the next
reading arrives or at shutdown. Its bugs get the same few chances, counted
across those hand-overs. What is still refused at shutdown is dropped and
counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from wattd.core.snapshot import SinkSnapshot
from wattd.errors import SinkError, SinkRejected
from wattd.support.backoff import Backoff
from wattd.support.throttle import LogThrottle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from wattd.core.readings import FrameRecord, Reading
    from wattd.sinks.base import Sink

log = logging.getLogger(__name__)

RETRY_INITIAL_S: Final = 0.5
RETRY_MAX_S: Final = 30.0
# A sink that raises something other than SinkError has a bug; give it a few
# chances (it may be transient), then drop the batch rather than wedge forever.
UNEXPECTED_ERROR_ATTEMPTS: Final = 3
# Shutdown grace for a sink's own stop().
STOP_TIMEOUT_S: Final = 5.0

T = TypeVar("T")


class BoundedQueue(Generic[T]):
    """A FIFO that drops its oldest item when full and counts the drops."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            msg = f"queue capacity must be at least 1, got {capacity}"
            raise ValueError(msg)
        self.capacity = capacity
        self.dropped = 0
        self.enqueued = 0
        self._items: collections.deque[T] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Append; returns False if an old item had to be dropped for it."""
        self.enqueued += 1
        ok = True
        if len(self._items) >= self.capacity:
            self._items.popleft()
            self.dropped += 1
            ok = False
        self._items.append(item)
        return ok

    def put_many(self, items: Sequence[T]) -> int:
        """Append all, as :meth:`put` one by one would; returns how many dropped."""
        queue = self._items
        self.enqueued += len(items)
        queue.extend(items)
        return self._trim_oldest()

    def take(self, limit: int) -> list[T]:
        """Remove and return up to ``limit`` items, oldest first."""
        items = self._items
        n = min(limit, len(items))
        return [items.popleft() for _ in range(n)]

    def put_back(self, taken: Sequence[T]) -> int:
        """Return items from :meth:`take` to the front; returns how many dropped.

        What arrived meanwhile stays behind them. If there is not room for all,
        the oldest go, as :meth:`put` would have done.
        """
        self._items.extendleft(reversed(taken))
        return self._trim_oldest()

    def _trim_oldest(self) -> int:
        """Drop the oldest items beyond capacity (counted); returns how many."""
        over = len(self._items) - self.capacity
        for _ in range(over):
            self._items.popleft()
        self.dropped += max(over, 0)
        return max(over, 0)

    def discard_all(self) -> int:
        """Drop everything (counted); returns how many."""
        n = len(self._items)
        self._items.clear()
        self.dropped += n
        return n


class SinkChannel:
    """The queue(s) and runner in front of one sink."""

    def __init__(
        self,
        sink: Sink,
        *,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.readings: BoundedQueue[Reading] = BoundedQueue(max(1, sink.queue_size))
        self.frames: BoundedQueue[FrameRecord] = BoundedQueue(max(1, sink.queue_size))
        self.batch_size = max(1, sink.batch_size)
        self.started = False
        self.written = 0
        self.frames_written = 0
        self.rejected = 0
        self.errors = 0
        self.last_error: str | None = None
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._last_write: float | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._flushed = asyncio.Event()
        self._throttle = LogThrottle(clock=clock)
        self._drops_logged = 0
        self._run_task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._bugs: collections.Counter[str] = collections.Counter()
        """Unexpected errors in a row, per call (``write``, ``write_frames``)."""

    # -- producer side (never awaits) -----------------------------------------

    def offer(self, reading: Reading) -> None:
        """Queue a reading for this sink (unless it takes no readings)."""
        if not self.sink.wants_readings:
            return
        if not self.readings.put(reading):
            self._log_drops()
        self._wake.set()

    def offer_many(self, readings: Sequence[Reading]) -> None:
        """Queue readings for this sink, in order, as :meth:`offer` would each."""
        if not readings or not self.sink.wants_readings:
            return
        if self.readings.put_many(readings):
            self._log_drops()
        self._wake.set()

    def offer_frame(self, frame: FrameRecord) -> None:
        """Queue a raw frame (only for sinks that want frames)."""
        if not self.sink.wants_frames:
            return
        if not self.frames.put(frame):
            self._log_drops()
        self._wake.set()

    # -- runner ----------------------------------------------------------------

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Create the writer task (which starts the sink) in ``tg``."""
        self._writer_task = tg.create_task(
            self._writer(tg), name=f"wattd[sink:{self.name}].writer"
        )

    async def _writer(self, tg: asyncio.TaskGroup) -> None:
        """Start the sink, then write batches until closed."""
        if not await self._start():
            self._flushed.set()
            return
        self._run_task = tg.create_task(
            self._background(), name=f"wattd[sink:{self.name}].run"
        )
        while True:
            if not self.readings and not self.frames:
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            # Cleared first, so a reading or a close during the write is seen.
            self._wake.clear()
            closing = self._closing
            handed = True
            if self.readings:
                handed &= await self._deliver(
                    self.readings, self.sink.write, frames=False
                )
            if self.frames:
                handed &= await self._deliver(
                    self.frames, self.sink.write_frames, frames=True
                )
            if not handed:
                if closing:
                    break  # the try made after the close was the last one
                await self._wake.wait()
        if self.readings or self.frames:
            lost = self.readings.discard_all()
            lost_frames = self.frames.discard_all()
            log.error(
                "sink %s: still refused at shutdown; %d readings and %d frames dropped",
                self.name,
                lost,
                lost_frames,
            )
        try:
            await self.sink.flush()
        except Exception as exc:
            self._record_error("flush", exc)
        self._flushed.set()

    async def close(self, timeout_s: float) -> None:
        """Write what is queued, flush and stop the sink, within ``timeout_s``."""
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._flushed.wait()
        except TimeoutError:
            lost = self.readings.discard_all()
            lost_frames = self.frames.discard_all()
            log.error(
                "sink %s: not flushed within %.0f s; %d readings and %d frames"
                " dropped at shutdown",
                self.name,
                timeout_s,
                lost,
                lost_frames,
            )
        for task in (self._writer_task, self._run_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.started:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.sink.stop()
            except Exception as exc:
                self._record_error("stop", exc)

    # -- internals -----------------------------------------------------------

    def _backoff(self) -> Backoff:
        return Backoff(initial_s=self._retry_initial_s, max_s=self._retry_max_s)

    async def _start(self) -> bool:
        backoff = self._backoff()
        while not self._closing:
            try:
                await self.sink.start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._record_error("start", exc)
                with contextlib.suppress(TimeoutError):
                    # Closing interrupts the wait: no point starting a sink
                    # that is about to be stopped.
                    async with asyncio.timeout(backoff.next_delay()):
                        await self._wait_closing()
                continue
            self.started = True
            log.debug("sink %s: started", self.name)
            return True
        return False

    async def _wait_closing(self) -> None:
        while not self._closing:
            self._wake.clear()
            await self._wake.wait()

    async def _background(self) -> None:
        """Run the sink's own long-lived work, restarting it if it crashes."""
        backoff = self._backoff()
        while True:
            try:
                await self.sink.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._record_error("run", exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            return

    async def _deliver(
        self,
        queue: BoundedQueue[T],
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        frames: bool,
    ) -> bool:
        """Write one batch; False if a sink that retries itself kept it queued."""
        batch = queue.take(self.batch_size)
        what = "write_frames" if frames else "write"
        if self.sink.retries_itself:
            if await self._write_once(batch, write, what, frames=frames):
                return True
            if queue.put_back(batch):
                self._log_drops()
            return False
        backoff = self._backoff()
        while True:
            if await self._write_once(batch, write, what, frames=frames):
                return True
            await asyncio.sleep(backoff.next_delay())

    async def _write_once(
        self,
        batch: Sequence[T],
        write: Callable[[Sequence[T]], Awaitable[None]],
        what: str,
        *,
        frames: bool,
    ) -> bool:
        """One write; True once the batch is done with (taken, or dropped)."""
        try:
            await write(batch)
        except asyncio.CancelledError:
            raise
        except SinkRejected as exc:
            self._bugs[what] = 0
            self.rejected += len(batch)
            self._record_error(what, exc, dropped=len(batch))
            return True
        except SinkError as exc:
            self._record_error(what, exc)
            return False
        except Exception as exc:
            self._bugs[what] += 1
            if self._bugs[what] >= UNEXPECTED_ERROR_ATTEMPTS:
                self._bugs[what] = 0
                self.rejected += len(batch)
                self._record_error(what, exc, dropped=len(batch), trace=True)
                return True
            self._record_error(what, exc, trace=True)
            return False
        self._bugs[what] = 0
        if frames:
            self.frames_written += len(batch)
        else:
            self.written += len(batch)
        self._last_write = self._clock()
        return True

    def _record_error(
        self,
        what: str,
        exc: BaseException,
        *,
        dropped: int = 0,
        trace: bool = False,
    ) -> None:
        self.errors += 1
        text = str(exc) or type(exc).__name__
        self.last_error = f"{what}: {text}"
        suppressed = self._throttle.allow((what, type(exc)))
        if suppressed is None:
            return
        more = f" ({suppressed} similar errors not logged)" if suppressed else ""
        tail = f"; {dropped} items dropped" if dropped else ""
        if trace:
            log.error(
                "sink %s: %s failed unexpectedly: %s%s%s",
                self.name,
                what,
                text,
                tail,
                more,
                exc_info=exc,
            )
        else:
            log.warning("sink %s: %s failed: %s%s%s", self.name, what, text, tail, more)

    def _log_drops(self) -> None:
        suppressed = self._throttle.allow("drops")
        if suppressed is None:
            return
        total = self.readings.dropped + self.frames.dropped
        log.warning(
            "sink %s: queue full (%d readings); dropped %d items so far,"
            " oldest first; the sink is too slow or down",
            self.name,
            self.readings.capacity,
            total,
        )

    def snapshot(self) -> SinkSnapshot:
        """Counters for the daemon snapshot."""
        try:
            extra = {str(k): float(v) for k, v in self.sink.stats().items()}
        except Exception:  # a broken stats() must not break monitoring
            extra = {}
        age = None if self._last_write is None else self._clock() - self._last_write
        return SinkSnapshot(
            name=self.name,
            started=self.started,
            queue_depth=len(self.readings),
            queue_capacity=self.readings.capacity,
            frame_queue_depth=len(self.frames),
            written=self.written,
            frames_written=self.frames_written,
            dropped=self.readings.dropped,
            frames_dropped=self.frames.dropped,
            rejected=self.rejected,
            errors=self.errors,
            last_error=self.last_error,
            last_write_age_s=age,
            extra=extra,
        )


class Bus:
    """Hands each reading and frame to every sink channel."""

    def __init__(self) -> None:
        self._channels: dict[str, SinkChannel] = {}

    @property
    def channels(self) -> tuple[SinkChannel, ...]:
        """The channels, in the order they were added."""
        return tuple(self._channels.values())

    def add(self, channel: SinkChannel) -> None:
        """Attach a channel; its name must be unique."""
        if channel.name in self._channels:
            msg = f"two sinks are named {channel.name!r}; sink names must be unique"
            raise ValueError(msg)
        self._channels[channel.name] = channel

    def remove(self, name: str) -> SinkChannel | None:
        """Detach a channel (it then receives nothing more)."""
        return self._channels.pop(name, None)

    def publish(self, reading: Reading) -> None:
        """Queue a reading for every sink; never blocks."""
        for channel in self._channels.values():
            channel.offer(reading)

    def publish_frame(self, frame: FrameRecord) -> None:
        """Queue a raw frame for the sinks that archive frames."""
        for channel in self._channels.values():
            if channel.sink.wants_frames:
                channel.offer_frame(frame)


__all__ = ["BoundedQueue", "Bus", "SinkChannel"]
