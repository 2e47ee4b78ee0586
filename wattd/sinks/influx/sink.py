"""The InfluxDB sink: readings to line protocol, through the spool, to the server.

Zero loss: :meth:`InfluxSink.write` only encodes and appends to the durable
spool. :meth:`InfluxSink.run` drains the spool in batches (by size and by
interval) and removes points only after a 2xx. Network errors, timeouts, 5xx
and 429 are retried with capped, jittered exponential backoff; a 4xx that
refuses data (bad point, body too large) bisects the batch until the refused
point(s) are found, which go to the spool's dead-letter table with the server's
message while the good points go through. What is dead-lettered or dropped
from a full spool is noted per meter in the spool's ``gaps`` table, for
``wattd backfill --gaps``. Re-sending a point is harmless:
InfluxDB identifies a point by series and timestamp, so a retry overwrites it.

The points are already line protocol in the spool, so they go out as one body
without being parsed again, through :mod:`wattd.clients.influx`.

With ``aggregate_s`` set, ``write()`` first folds readings into per-meter
interval means (:mod:`wattd.sinks.spooled`) and spools only closed intervals;
``flush()``, ``stop()`` and a reload that changes the interval spool the open
ones too.

With ``clock_probe`` on (the default), a drain that delivered points is followed,
at most once a minute, by one more small request: a ``wattd_clock`` point
without a timestamp holding this host's wall clock, so that fleet reports can
measure the host's clock against the store's receive time
(:mod:`wattd.costing.clocks`). It is built at send time and never spooled, so
a backlog sent late still measures now, and a refused probe is logged, never
retried or dead-lettered. With the daemon's snapshot attached, the same request
carries the node's health and one line per meter
(:mod:`wattd.sinks.influx.health`), and it also goes once a minute while no
meter sends, so an idle node still shows as up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Final

from wattd.clients.influx import (
    SINK_NAME,
    InfluxBusy,
    InfluxRejected,
    InfluxTarget,
    InfluxWriter,
)
from wattd.costing.clocks import CLOCK_FIELD, CLOCK_MEASUREMENT
from wattd.errors import SinkError, SinkUnavailable, SpoolError
from wattd.sinks.base import Sink
from wattd.sinks.influx.health import BacklogPeak, ReadingRate, health_lines
from wattd.sinks.influx.lineprotocol import PointEncoder, escape_measurement, escape_tag
from wattd.sinks.spooled import SpooledFrontEnd, SpoolRow
from wattd.storage.spool import AsyncSpool, SpoolItem, StreamStats
from wattd.support.backoff import backoff_delay

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from wattd.config import Config
    from wattd.core.readings import Reading
    from wattd.core.snapshot import DaemonSnapshot

__all__ = [
    "CLOCK_PROBE_INTERVAL_S",
    "STREAM",
    "InfluxSink",
    "clock_line",
    "sensor_of_line",
]

log = logging.getLogger(__name__)

STREAM: Final = "influx"
"""The spool stream this sink owns."""
BASE_BACKOFF_S: Final = 1.0
"""The first retry waits up to this; the ceiling doubles up to ``max_backoff_s``."""
BACKOFF_JITTER: Final = 0.5
"""Each wait is drawn from the upper half of the ceiling, so that many daemons
restarted together spread out."""
CLOCK_PROBE_INTERVAL_S: Final = 60.0
"""The clock probe goes out at most this often."""


_SENSOR_TAG: Final = b",sensor="


def sensor_of_line(line: bytes) -> int | None:
    """The ``sensor`` tag of one line of the sink's line protocol, or None.

    The spool notes a dropped or refused point under this meter, so that
    ``wattd backfill --gaps`` re-sends just that meter's range.
    """
    at = line.find(_SENSOR_TAG)
    # An escaped comma belongs to a label key, not to the tag separator.
    while at > 0 and line[at - 1] == ord("\\"):
        at = line.find(_SENSOR_TAG, at + 1)
    if at < 0:
        return None
    start = at + len(_SENSOR_TAG)
    end = start
    while end < len(line) and 48 <= line[end] <= 57:  # ASCII digits
        end += 1
    if end == start or (end < len(line) and line[end] not in b", "):
        return None
    return int(line[start:end])


def clock_line(node: str, site: str | None, sent_ms: int) -> bytes:
    """The clock probe: no timestamp, so the store stamps it on receipt."""
    tags = f",node={escape_tag(node)}"
    if site:
        tags += f",site={escape_tag(site)}"
    measurement = escape_measurement(CLOCK_MEASUREMENT)
    # A float field, as every field wattd writes, so the type never changes.
    return f"{measurement}{tags} {CLOCK_FIELD}={sent_ms}.0".encode()


class InfluxSink(Sink):
    """Writes readings to InfluxDB through the durable spool."""

    name = SINK_NAME
    queue_size = 20_000
    batch_size = 1_000
    retries_itself = True

    def __init__(
        self,
        config: Config,
        *,
        spool: AsyncSpool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._influx = config.influxdb
        self._target = InfluxTarget.from_config(config.influxdb)
        self._encoder = PointEncoder.from_config(config)
        self._front = SpooledFrontEnd(
            sink=self.name,
            stream=STREAM,
            encode=self._encode,
            aggregate_s=config.influxdb.aggregate_s,
            spool=self._require_spool,
            appended=self._appended,
            log=log,
            label="InfluxDB",
            what="points",
        )
        self._config = config
        self._spool = spool
        self._own_spool = spool is None
        self._rng = rng or random.Random()
        self._writer: InfluxWriter | None = None
        self._wake = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._unsent = 0
        self._points_written = 0
        self._retries = 0
        self._skipped = 0
        self._last_error: str | None = None
        self._last_error_unix_s = 0.0
        self._failing_since: float | None = None
        self._probed_at: float | None = None
        self._probe_refused = False
        self._snapshot: Callable[[], DaemonSnapshot] | None = None
        self._created_at = time.monotonic()
        self._backlog = BacklogPeak()
        self._rate = ReadingRate()

    # -- Sink interface ---------------------------------------------------------

    def attach(self, snapshot: Callable[[], DaemonSnapshot]) -> None:
        """Keep the daemon's status provider for the node health probe."""
        self._snapshot = snapshot

    async def start(self) -> None:
        """Open the shared spool and the HTTP session."""
        if self._spool is None:
            self._spool = AsyncSpool.for_config(self._config)
        try:
            # Points dropped or refused from now on are noted for backfill.
            await self._spool.track_gaps(STREAM, sensor_of_line)
            stats = await self._spool.stats(STREAM)
        except SpoolError as exc:
            raise SinkUnavailable(str(exc), sink=self.name) from None
        if stats.depth:
            log.info(
                "InfluxDB: %d point(s) from before the restart wait in the spool",
                stats.depth,
            )
        self._writer = InfluxWriter(self._target)
        await self._writer.open()

    async def write(self, readings: Sequence[Reading]) -> None:
        """Encode and append to the spool; the network work happens in :meth:`run`.

        With ``aggregate_s`` set, only the per-meter means of closed intervals.

        Raises:
            SinkUnavailable: the spool could not take them.
        """
        await self._front.write(readings)

    async def run(self) -> None:
        """Drain the spool forever: batch, send, ack; back off while it fails."""
        attempt = 0
        while True:
            if attempt == 0:
                await self._wait_for_work()
            await self._front.expire_idle()
            try:
                async with self._send_lock:
                    await self._drain()
            except SinkError as exc:
                attempt += 1
                await self._note_failure(exc)
                delay = backoff_delay(
                    attempt,
                    initial_s=BASE_BACKOFF_S,
                    max_s=self._influx.max_backoff_s,
                    jitter=BACKOFF_JITTER,
                    rng=self._rng,
                )
                if isinstance(exc, InfluxBusy) and exc.retry_after_s is not None:
                    hinted = min(exc.retry_after_s, self._influx.max_backoff_s)
                    delay = max(delay, hinted)
                await self._sleep_unless_retry_now(delay)
                continue
            if attempt:
                self._note_recovery()
            attempt = 0

    def reconfigure(self, config: Config) -> None:
        """Apply new tags at once; new connection settings before the next send."""
        # Open intervals are closed (and encoded) under the old settings; they
        # are spooled ahead of the next batch, or by flush/stop.
        self._front.set_interval(config.influxdb.aggregate_s)
        self._config = config
        self._influx = config.influxdb
        self._encoder = PointEncoder.from_config(config)
        target = InfluxTarget.from_config(config.influxdb)
        if target != self._target:
            self._target = target
            self._retry_now.set()
            self._wake.set()

    async def flush(self) -> None:
        """Spool open intervals; one attempt to send what is pending."""
        if self._spool is None:
            return
        await self._front.spool_pending()
        try:
            async with self._send_lock:
                await self._drain()
        except SinkError as exc:
            depth = self._require_spool().stats_now(STREAM).depth
            log.info(
                "InfluxDB: %d point(s) stay in the spool for the next start (%s)",
                depth,
                exc,
            )

    async def stop(self) -> None:
        """Close the HTTP session and release the spool."""
        if self._spool is not None:
            # Also here, for a stop that came without a flush (flush timed out).
            await self._front.spool_pending()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        spool = self._spool
        if spool is not None and self._own_spool:
            self._spool = None
            await spool.close()

    def stats(self) -> dict[str, float]:
        """Spool depth, oldest pending age, points written, retries, dead letters."""
        if self._spool is None:
            return {}
        spool = self._spool.stats_now(STREAM)
        oldest = spool.oldest_time_ns
        age_s = max(0.0, (time.time_ns() - oldest) / 1e9) if oldest is not None else 0.0
        return {
            "spool_depth": float(spool.depth),
            "spool_bytes": float(spool.bytes),
            "oldest_pending_age_s": age_s,
            "points_written": float(self._points_written),
            "retries": float(self._retries),
            "dead_letters": float(spool.dead_lettered),
            "dropped": float(spool.dropped),
            "skipped": float(self._skipped),
            "failing": 1.0 if self._failing_since is not None else 0.0,
            "last_error_unix_s": self._last_error_unix_s,
            "spool_durable": 1.0 if self._spool.durable else 0.0,
            "aggregate_open": float(self._front.open_intervals),
        }

    @property
    def last_error(self) -> str | None:
        """The latest delivery error (no secrets), or None if there was none."""
        return self._last_error

    # -- spooling ----------------------------------------------------------------

    def _encode(self, readings: Sequence[Reading]) -> list[SpoolRow]:
        """Spool rows (time, line) for ``readings``; fieldless ones are skipped."""
        rows: list[SpoolRow] = []
        encode = self._encoder.encode
        for reading in readings:
            line = encode(reading)
            if line is None:
                self._skipped += 1
            else:
                rows.append((reading.time_ns, line))
        return rows

    def _appended(self, count: int) -> None:
        """Wake the sender once a batch is full."""
        self._unsent += count
        if self._unsent >= self._influx.batch_size:
            self._wake.set()

    # -- draining ----------------------------------------------------------------

    async def _wait_for_work(self) -> None:
        try:
            async with asyncio.timeout(self._influx.flush_interval_s):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def _sleep_unless_retry_now(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._retry_now.wait()
        except TimeoutError:
            pass
        self._retry_now.clear()

    async def _drain(self) -> None:
        """Send batches until the spool is empty; raises on a retryable failure."""
        spool = self._require_spool()
        writer = await self._current_writer()
        written = self._points_written
        self._note_backlog()
        while True:
            self._unsent = 0
            batch = self._influx.batch_size
            try:
                items = await spool.peek(STREAM, batch)
            except SpoolError as exc:
                raise SinkUnavailable(str(exc), sink=self.name) from None
            if items:
                await self._deliver(writer, items)
            if len(items) < batch:
                break
        await self._probe_clock(writer, idle=self._points_written == written)

    async def _probe_clock(self, writer: InfluxWriter, *, idle: bool) -> None:
        """Send the clock probe, at most once a minute; a failure is only logged.

        It goes as a request of its own, so a server that refuses it never
        holds up, bisects or dead-letters a real point. After a drain that
        delivered nothing (``idle``) it goes only with the daemon attached,
        a minute after the previous probe or the start, so an idle node
        still shows as up.
        """
        now = time.monotonic()
        node = self._encoder.node
        if not self._influx.clock_probe or not node:
            return
        last = self._probed_at
        if idle:
            if self._snapshot is None:
                return
            last = self._created_at if last is None else last
        if last is not None and now - last < CLOCK_PROBE_INTERVAL_S:
            return
        self._probed_at = now
        line = clock_line(node, self._encoder.site, time.time_ns() // 1_000_000)
        if self._snapshot is not None:
            line = b"\n".join([line, *self._health(node, self._snapshot)])
        try:
            await writer.write(line)
        except InfluxRejected as exc:
            if not self._probe_refused:
                self._probe_refused = True
                log.warning(
                    "InfluxDB refused the clock probe (%s); fleet reports will not"
                    " see this host's clock (set influxdb.clock_probe: false to stop"
                    " sending it)",
                    exc,
                )
        except SinkError as exc:
            # The next delivered batch tries again; the points are what count.
            log.debug("InfluxDB: clock probe not sent: %s", exc)

    def _note_backlog(self) -> None:
        """Remember the backlog a drain starts with, for the next health probe."""
        if self._snapshot is not None:
            stats = self.stats()
            self._backlog.note(stats["spool_depth"], stats["oldest_pending_age_s"])

    def _health(self, node: str, snapshot: Callable[[], DaemonSnapshot]) -> list[bytes]:
        """The node's health lines; none when the snapshot fails."""
        try:
            snap = snapshot()
        except Exception:  # the probe must never stop the sink
            log.debug("InfluxDB: no snapshot for the health probe", exc_info=True)
            return []
        return health_lines(
            snap,
            node=node,
            site=self._encoder.site,
            backlog=self._backlog.take(),
            readings_per_s=self._rate.per_s(snap.readings_total, snap.uptime_s),
        )

    async def _deliver(self, writer: InfluxWriter, items: Sequence[SpoolItem]) -> None:
        """Send ``items``; bisect a refused batch down to the refused points."""
        spool = self._require_spool()
        try:
            await writer.write(b"\n".join(item.payload for item in items))
        except InfluxRejected as exc:
            if len(items) > 1:
                half = len(items) // 2
                await self._deliver(writer, items[:half])
                await self._deliver(writer, items[half:])
                return
            reason = f"HTTP {exc.status}: {exc.server_message or 'no message'}"
            try:
                await spool.dead_letter(STREAM, items, reason)
            except SpoolError as spool_exc:
                raise SinkUnavailable(str(spool_exc), sink=self.name) from None
            log.warning(
                "InfluxDB refused a point (%s); it was moved to the dead-letter table"
                " of the spool and will not be retried: %s",
                reason,
                items[0].payload[:300].decode("utf-8", "replace"),
            )
            return
        try:
            await spool.ack(STREAM, [item.id for item in items])
        except SpoolError as exc:
            raise SinkUnavailable(str(exc), sink=self.name) from None
        self._points_written += len(items)

    async def _current_writer(self) -> InfluxWriter:
        writer = self._writer
        if writer is None or writer.target != self._target:
            if writer is not None:
                await writer.close()
            writer = InfluxWriter(self._target)
            self._writer = writer
        await writer.open()
        return writer

    async def _note_failure(self, exc: SinkError) -> None:
        self._retries += 1
        message = str(exc)
        self._last_error_unix_s = time.time()
        first = self._failing_since is None
        if first:
            self._failing_since = time.monotonic()
        if first or message != self._last_error:
            depth = (await self._safe_stats()).depth
            log.warning(
                "%s; %d point(s) wait in the spool and are retried with backoff",
                message,
                depth,
            )
        else:
            log.debug("%s (retry %d)", message, self._retries)
        self._last_error = message

    def _note_recovery(self) -> None:
        if self._failing_since is None:
            return
        down_s = time.monotonic() - self._failing_since
        self._failing_since = None
        log.info(
            "InfluxDB at %s accepts writes again after %.0f s; backlog sent",
            self._target.safe_url,
            down_s,
        )

    async def _safe_stats(self) -> StreamStats:
        spool = self._require_spool()
        try:
            return await spool.stats(STREAM)
        except SpoolError:
            return spool.stats_now(STREAM)

    def _require_spool(self) -> AsyncSpool:
        if self._spool is None:
            msg = "the sink was not started; call start() first"
            raise SinkUnavailable(msg, sink=self.name)
        return self._spool
