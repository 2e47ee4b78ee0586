"""The :class:`AsyncSpool`: a :class:`Spool` on its own thread, for coroutines.

Every call is queued to the spool's thread in order, so coroutines never block
on fsync. Sinks share one :class:`AsyncSpool` per file through
:meth:`AsyncSpool.shared`.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, TypeVar

from wattd.errors import SpoolError
from wattd.storage.spool.handle import Spool
from wattd.storage.spool.model import StreamStats
from wattd.support.worker import DedicatedThread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from wattd.config import Config
    from wattd.core.readings import Reading
    from wattd.storage.spool.gaps import MeterOf
    from wattd.storage.spool.model import DeadLetter, SpoolItem

__all__ = ["AsyncSpool"]

T = TypeVar("T")


class AsyncSpool:
    """A :class:`Spool` on its own thread, so coroutines never wait on fsync.

    Every call is queued to one worker thread in order. :meth:`stats_now` answers
    from figures cached after each call, without waiting.
    """

    _shared: dict[Path, AsyncSpool] = {}  # noqa: RUF012 - process-wide registry by design
    _shared_lock = threading.Lock()

    def __init__(
        self,
        path: Path | None,
        *,
        max_items: int = 2_000_000,
        max_bytes: int = 512 << 20,
    ) -> None:
        self.path = path
        self._thread = DedicatedThread("wattd-spool")
        self._opened = self._thread.submit(
            Spool, path, max_items=max_items, max_bytes=max_bytes
        )
        self._cache: dict[str, StreamStats] = {}
        self._unrecorded: dict[int, float] = {}
        self._refs = 1
        self._closed = False

    @classmethod
    def shared(cls, path: Path, *, max_items: int, max_bytes: int) -> AsyncSpool:
        """The process-wide spool for ``path``; every caller must :meth:`close` it."""
        key = path.absolute()
        with cls._shared_lock:
            spool = cls._shared.get(key)
            if spool is not None and not spool._closed:
                spool._refs += 1
                return spool
            spool = cls(key, max_items=max_items, max_bytes=max_bytes)
            cls._shared[key] = spool
            return spool

    @classmethod
    def for_config(cls, config: Config) -> AsyncSpool:
        """The shared spool described by ``config.spool``."""
        return cls.shared(
            config.spool_path,
            max_items=config.spool.max_items,
            max_bytes=config.spool.max_bytes,
        )

    def note_wh_totals(self, readings: Iterable[Reading]) -> None:
        """Remember the readings' energy totals; the next append records them.

        A sink calls this with every reading it takes, before it appends any
        payload made from them: whatever stream's append comes next then
        records the totals in its transaction, so every payload on disk is
        covered. Recording a total early is harmless (it is one the daemon has
        reached); recording it late is what would let a restart go below it.
        """
        pending = self._unrecorded
        for reading in readings:
            wh = reading.wh_total
            if wh > pending.get(reading.sensor, -math.inf) and math.isfinite(wh):
                pending[reading.sensor] = wh

    async def append(
        self, stream: str, items: Iterable[tuple[int, bytes]]
    ) -> StreamStats:
        """See :meth:`Spool.append`; also records the noted energy totals."""
        rows = list(items)
        totals, self._unrecorded = self._unrecorded, {}
        try:
            stats = await self._run(lambda s: s.append(stream, rows, wh_totals=totals))
        except BaseException:
            for sensor, wh in totals.items():
                if wh > self._unrecorded.get(sensor, -math.inf):
                    self._unrecorded[sensor] = wh
            raise
        self._cache[stream] = stats
        return stats

    async def track_gaps(self, stream: str, meter_of: MeterOf) -> None:
        """See :meth:`Spool.track_gaps`."""
        await self._run(lambda s: s.track_gaps(stream, meter_of))

    async def peek(
        self, stream: str, limit: int, *, after_id: int = 0
    ) -> list[SpoolItem]:
        """See :meth:`Spool.peek`."""
        return await self._run(lambda s: s.peek(stream, limit, after_id=after_id))

    async def ack(self, stream: str, ids: Iterable[int]) -> StreamStats:
        """See :meth:`Spool.ack`."""
        id_list = list(ids)
        stats = await self._run(lambda s: s.ack(stream, id_list))
        self._cache[stream] = stats
        return stats

    async def dead_letter(
        self, stream: str, items: Sequence[SpoolItem], reason: str
    ) -> StreamStats:
        """See :meth:`Spool.dead_letter`."""
        stats = await self._run(lambda s: s.dead_letter(stream, items, reason))
        self._cache[stream] = stats
        return stats

    async def dead_letters(self, stream: str, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`Spool.dead_letters`."""
        return await self._run(lambda s: s.dead_letters(stream, limit))

    async def stats(self, stream: str) -> StreamStats:
        """See :meth:`Spool.stats`; also refreshes :meth:`stats_now`."""
        stats = await self._run(lambda s: s.stats(stream))
        self._cache[stream] = stats
        return stats

    async def depth(self, stream: str) -> int:
        """See :meth:`Spool.depth`."""
        return (await self.stats(stream)).depth

    async def oldest_time_ns(self, stream: str) -> int | None:
        """See :meth:`Spool.oldest_time_ns`."""
        return (await self.stats(stream)).oldest_time_ns

    def stats_now(self, stream: str) -> StreamStats:
        """Figures as of the last call on ``stream`` (no waiting, may lag slightly)."""
        return self._cache.get(stream, StreamStats())

    @property
    def durable(self) -> bool:
        """False once the spool had to fall back to memory."""
        return not self._opened.done() or self._opened.result().durable

    @property
    def problems(self) -> list[SpoolError]:
        """Corrupt or unreadable files met so far (see :attr:`Spool.problems`)."""
        return list(self._opened.result().problems) if self._opened.done() else []

    async def close(self) -> None:
        """Release this reference; the last one closes the file and the thread."""
        with self._shared_lock:
            self._refs -= 1
            if self._refs > 0 or self._closed:
                return
            self._closed = True
            if self.path is not None and self._shared.get(self.path) is self:
                del self._shared[self.path]
        try:
            await self._run(lambda s: s.close(), closing=True)
        finally:
            self._thread.close(wait=False)

    async def _run(self, call: Callable[[Spool], T], *, closing: bool = False) -> T:
        if self._closed and not closing:
            msg = f"spool {self.path or '(in memory)'} is closed"
            raise SpoolError(msg)
        return await self._thread.run(lambda: call(self._opened.result()))
