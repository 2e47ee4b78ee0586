"""The write side of the sinks that send through the durable spool (MQTT, InfluxDB).

A :class:`SpooledFrontEnd` takes each batch the daemon hands to
``Sink.write``, optionally folds it into per-meter interval means
(:mod:`wattd.core.aggregate`), encodes what is ready into spool rows and
appends them to the sink's stream. The sink's own background task sends the
stream and removes rows only once the server confirmed them.

Nothing is lost on the way in:

* Without aggregation a batch the spool refuses raises
  :class:`~wattd.errors.SinkUnavailable`, so the daemon keeps it and writes it
  again.
* With aggregation the batch is already counted in the open intervals, so a
  second write of it would count it twice. Rows of closed intervals that the
  spool refuses are held in memory instead and go in first, ahead of any later
  batch; until they do, later batches are refused (and so kept by the daemon).
* Intervals left open by silence (a radio unplugged) are closed by
  :meth:`SpooledFrontEnd.expire_idle`; a flush, a stop and a reload that
  changes the interval close them all.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, TypeAlias

from wattd.core.aggregate import ReadingAggregator
from wattd.errors import SinkUnavailable, SpoolError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from wattd.core.readings import Reading
    from wattd.storage.spool import AsyncSpool

__all__ = ["SpoolRow", "SpooledFrontEnd"]

SpoolRow: TypeAlias = tuple[int, bytes]
"""One row for the spool: the reading's time (ns since the epoch) and its payload."""


def _always() -> bool:
    return True


class SpooledFrontEnd:
    """Readings in, encoded rows into one spool stream, with nothing lost on the way.

    Args:
        sink: The sink's name, carried by the errors raised here.
        stream: The spool stream the rows go to.
        encode: Turns readings into spool rows (it may skip some).
        aggregate_s: The interval of the means; 0 passes readings through.
        spool: Returns the sink's open spool; raises SinkUnavailable before start.
        appended: Told how many rows went in, to wake the sender.
        log: The sink's logger, for rows that wait in memory.
        label: How the sink's log lines begin ("InfluxDB", "mqtt").
        what: How they name the rows ("points", "readings").
        spooled: False while rows should skip the spool (MQTT at QoS 0).
        keep: Takes the rows that skip the spool.
    """

    def __init__(
        self,
        *,
        sink: str,
        stream: str,
        encode: Callable[[Sequence[Reading]], list[SpoolRow]],
        aggregate_s: float,
        spool: Callable[[], AsyncSpool],
        appended: Callable[[int], None],
        log: logging.Logger,
        label: str,
        what: str,
        spooled: Callable[[], bool] = _always,
        keep: Callable[[Sequence[SpoolRow]], None] | None = None,
    ) -> None:
        self._sink = sink
        self._stream = stream
        self._encode = encode
        self._aggregator = ReadingAggregator(aggregate_s)
        self._spool = spool
        self._appended = appended
        self._log = log
        self._label = label
        self._what = what
        self._spooled = spooled
        self._keep = keep
        self._held: list[SpoolRow] = []
        """Rows of closed intervals that the spool refused; they go in first."""

    @property
    def held(self) -> int:
        """Rows waiting in memory for the spool to take them."""
        return len(self._held)

    @property
    def open_intervals(self) -> int:
        """Meters with an interval not yet closed."""
        return self._aggregator.pending

    async def write(self, readings: Sequence[Reading]) -> None:
        """Take one batch: encode and append it, or what of it closed an interval.

        Raises:
            SinkUnavailable: the batch was not taken; write it again later.
        """
        if self._spooled():
            # Recorded with the next append, so a restart never goes below them.
            self._spool().note_wh_totals(readings)
        # Rows of an earlier batch go first; until the spool takes them,
        # batches are refused (and so kept, and written again, by the daemon).
        await self._append_held()
        aggregator = self._aggregator
        rows = self._encode(aggregator.add(readings, time.monotonic()))
        if not aggregator.active:
            await self._append(rows)
            return
        # The aggregator has taken this batch, so a retry of it would count it
        # twice: what the spool refuses now waits here instead.
        await self._hold_and_append(rows)

    async def expire_idle(self) -> None:
        """Close the open intervals once every meter has gone quiet; never raises."""
        closed = self._aggregator.expire_idle(time.monotonic())
        if closed:
            await self._hold_and_append(self._encode(closed))

    def set_interval(self, aggregate_s: float) -> None:
        """Aggregate over ``aggregate_s`` from now on.

        A change closes the open intervals first, encoded as things stand, so
        call this before the encoding changes. Their rows are held until the
        next write, flush or stop appends them.
        """
        if aggregate_s == self._aggregator.interval_s:
            return
        self._held.extend(self._encode(self._aggregator.drain()))
        self._aggregator = ReadingAggregator(aggregate_s)

    async def spool_pending(self) -> None:
        """Close all open intervals, append what is held; never raises."""
        self._held.extend(self._encode(self._aggregator.drain()))
        await self._append_held_or_say(logging.ERROR, "are not spooled")

    async def _append(self, rows: Sequence[SpoolRow]) -> None:
        """Append ``rows`` to the stream (or hand them to ``keep``); wake the sender.

        Raises:
            SinkUnavailable: the spool could not take them.
        """
        if not rows:
            return
        if self._keep is not None and not self._spooled():
            self._keep(rows)
        else:
            try:
                await self._spool().append(self._stream, rows)
            except SpoolError as exc:
                msg = f"cannot spool {len(rows)} {self._what}: {exc}"
                raise SinkUnavailable(msg, sink=self._sink) from exc
        self._appended(len(rows))

    async def _append_held(self) -> None:
        """Append the held rows, keeping them held if that fails."""
        if not self._held:
            return
        # Swapped out first: a reload may add rows while this waits.
        held, self._held = self._held, []
        try:
            await self._append(held)
        except BaseException:
            self._held[:0] = held
            raise

    async def _hold_and_append(self, rows: list[SpoolRow]) -> None:
        """Append aggregated rows; what the spool refuses waits in memory."""
        self._held.extend(rows)
        await self._append_held_or_say(logging.WARNING, "wait in memory")

    async def _append_held_or_say(self, level: int, fate: str) -> None:
        """Append the held rows; if the spool refuses them, log their ``fate``."""
        try:
            await self._append_held()
        except SinkUnavailable as exc:
            self._log.log(
                level,
                "%s: %s; %d aggregated %s %s",
                self._label,
                exc,
                len(self._held),
                self._what,
                fate,
            )
