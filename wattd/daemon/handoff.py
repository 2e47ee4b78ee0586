"""Readings reach the other sinks only after the local store has committed them.

Why: the store is the system of record, and after a ``kill -9`` two things
must hold. Every reading that any sink delivered (MQTT, InfluxDB, the
dashboard) must be in the store; and the store's last totals, read at the next
start as the energy floor, must be at least every total any sink was given.
Both follow from one rule: a reading is handed to the other sinks only once it
is durable in the store. Whatever moment the process dies at, the store then
holds everything the others hold, and more.

How: the supervisor publishes through a :class:`Handoff`. While a store sink
is attached and writing, a reading goes to the store's queue only and waits
here, in order. The store commits promptly while readings wait (see
:mod:`wattd.sinks.sqlite`) and reports each commit with the last reading it
wrote; every waiting reading up to that one is then offered to the other
sinks. The order of readings is the same in every sink.

Trouble with the store must not stop the other sinks. When the store reports a
failed write (locked, disk full, corrupt), everything waiting is released at
once and readings go to every sink directly until the store commits again;
readings that wait longer than :data:`HOLD_MAX_S` (a store stuck on a dying
disk) are released too. The MQTT and InfluxDB spool records the totals of
what it takes (:meth:`wattd.storage.spool.AsyncSpool.note_wh_totals`), so energy stays
monotonic through such a stretch even though the store may lack readings.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Final

from wattd.sinks.base import RecordsReadings
from wattd.support.throttle import LogThrottle

if TYPE_CHECKING:
    from collections.abc import Callable

    from wattd.core.readings import Reading
    from wattd.daemon.bus import Bus, SinkChannel

log = logging.getLogger(__name__)

__all__ = ["HOLD_MAX_S", "Handoff"]

HOLD_MAX_S: Final = 10.0
"""A reading waits at most this long for the store before the others get it."""


class Handoff:
    """Publishes readings to the store first, to the other sinks once stored."""

    def __init__(
        self, bus: Bus, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._store: SinkChannel | None = None
        self._waiting: collections.deque[tuple[float, Reading]] = collections.deque()
        self._waiting_ids: set[int] = set()
        self._gated = False
        self._throttle = LogThrottle(clock=clock)

    @property
    def store(self) -> SinkChannel | None:
        """The store's channel, while one is attached."""
        return self._store

    @property
    def waiting(self) -> int:
        """Readings held back from the other sinks until the store has them."""
        return len(self._waiting)

    def attach(self, channel: SinkChannel) -> bool:
        """Make ``channel`` the store readings wait for, if its sink is one."""
        sink = channel.sink
        if not isinstance(sink, RecordsReadings) or not sink.wants_readings:
            return False
        if self._store is not None:
            self.detach()
        self._store = channel
        self._gated = True
        sink.set_commit_listener(self)
        return True

    def detach(self, channel: SinkChannel | None = None) -> None:
        """Stop waiting for the store (``channel``, if given, must be it).

        Everything still waiting goes to the other sinks now.
        """
        store = self._store
        if store is None or (channel is not None and channel is not store):
            return
        self._release(len(self._waiting))
        self._store = None
        self._gated = False
        sink = store.sink
        if isinstance(sink, RecordsReadings):
            sink.set_commit_listener(None)

    def publish(self, reading: Reading) -> None:
        """Queue a reading for the store, or for every sink while it has trouble."""
        store = self._store
        if store is None or not self._gated or not self._others_want(store):
            self._bus.publish(reading)
            return
        store.offer(reading)
        self._waiting.append((self._clock(), reading))
        self._waiting_ids.add(id(reading))

    def release_overdue(self) -> int:
        """Give the other sinks readings that waited too long; returns how many."""
        limit = self._clock() - HOLD_MAX_S
        count = 0
        for since, _reading in self._waiting:
            if since > limit:
                break
            count += 1
        if count:
            self._release(count)
            if (suppressed := self._throttle.allow("overdue")) is not None:
                more = f" ({suppressed} times more)" if suppressed else ""
                log.warning(
                    "store: %d readings not written within %.0f s; the other sinks"
                    " got them first, so after a crash now the store may lack"
                    " them%s",
                    count,
                    HOLD_MAX_S,
                    more,
                )
        return count

    # -- CommitListener -----------------------------------------------------------

    def committed(self, last: Reading | None) -> None:
        """Release every waiting reading up to ``last``; wait again from now on."""
        if last is not None and id(last) in self._waiting_ids:
            # The store writes in publishing order, so ``last`` is preceded only
            # by readings that are stored too (or that its full queue dropped).
            count = 0
            for _since, reading in self._waiting:
                count += 1
                if reading is last:
                    break
            self._release(count)
        self._gated = self._store is not None

    def failed(self) -> None:
        """Release everything waiting; publish directly until the next commit."""
        self._release(len(self._waiting))
        self._gated = False

    # -- internals ----------------------------------------------------------------

    def _others_want(self, store: SinkChannel) -> bool:
        # With the store alone there is nobody to wait for it, and it keeps
        # its own batching (fewer, larger transactions).
        return any(c is not store and c.sink.wants_readings for c in self._bus.channels)

    def _release(self, count: int) -> None:
        if not count:
            return
        others = [c for c in self._bus.channels if c is not self._store]
        waiting = self._waiting
        ids = self._waiting_ids
        released = [waiting.popleft()[1] for _ in range(count)]
        for reading in released:
            ids.discard(id(reading))
        # One hand-over per sink (and one wake-up), not one per reading.
        for channel in others:
            channel.offer_many(released)
