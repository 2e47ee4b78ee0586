"""The MQTT sink: readings to a broker, with Home Assistant discovery, zero loss.

``write()`` only turns each reading into its state JSON and appends it to the
durable spool (stream ``mqtt``) through :mod:`wattd.sinks.spooled`, which also
folds readings into per-meter interval means when ``aggregate_s`` is set;
``flush()``, ``stop()`` and a reload that changes the interval queue the open
intervals too, so a SIGTERM loses nothing. QoS 0 readings skip the spool and
wait in memory: at most once, by definition.

``run()`` is the broker side, :class:`~wattd.sinks.mqtt.session.BrokerSession`:
the connection, publishing with PUBACK, and Home Assistant discovery.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

from wattd.errors import SinkAuthError, SinkError, SinkUnavailable
from wattd.sinks.base import Sink
from wattd.sinks.mqtt.hass import meter_identities
from wattd.sinks.mqtt.session import STREAM, BrokerSession
from wattd.sinks.mqtt.statejson import StateEncoder
from wattd.sinks.spooled import SpooledFrontEnd, SpoolRow
from wattd.storage.spool import AsyncSpool

if TYPE_CHECKING:
    import collections
    from collections.abc import Callable, Mapping, Sequence

    from wattd.config import Config
    from wattd.core.readings import Reading
    from wattd.core.snapshot import DaemonSnapshot

__all__ = ["STREAM", "MqttSink"]

log = logging.getLogger(__name__)

FLUSH_WAIT_S: Final = 5.0
"""Shutdown publishes the backlog this long at most; the rest stays spooled."""
SNAPSHOT_EVERY_S: Final = 1.0
"""Frame error counts come from a daemon snapshot at most this often."""


class MqttSink(Sink):
    """Publishes readings to MQTT and announces meters to Home Assistant."""

    name = "mqtt"
    batch_size = 1000
    retries_itself = True

    def __init__(self, config: Config, *, spool: AsyncSpool | None = None) -> None:
        self._config = config
        self._mqtt = config.mqtt
        self._identities: tuple[dict[int, Mapping[str, str]], Mapping[str, str]] = (
            meter_identities(config)
        )
        """Identity fields of the state JSON: per configured meter, and the rest's."""
        self._encoder = StateEncoder()
        self._spool = spool
        self._own_spool = spool is None
        self._session = BrokerSession(
            config,
            spool=self._require_spool,
            stats=self.stats,
            frame_errors=lambda: self._frame_errors()[0],
            expire_idle=lambda: self._front.expire_idle(),
        )
        self._front = SpooledFrontEnd(
            sink=self.name,
            stream=STREAM,
            encode=self._documents,
            aggregate_s=config.mqtt.aggregate_s,
            spool=self._require_spool,
            appended=self._session.queued,
            log=log,
            label="mqtt",
            what="readings",
            spooled=lambda: self._mqtt.qos > 0,
            keep=self._session.keep,
        )
        self._snapshot: Callable[[], DaemonSnapshot] | None = None
        self._frame_errors_seen: tuple[float, int, dict[int, int]] | None = None
        """(monotonic time, all rejected frames, corrupt frames per meter)."""

    # -- Sink interface ---------------------------------------------------------

    def attach(self, snapshot: Callable[[], DaemonSnapshot]) -> None:
        """Keep the daemon's status provider: the frame error counts come from it."""
        self._snapshot = snapshot

    async def start(self) -> None:
        """Open the shared spool (the broker connection is made by :meth:`run`)."""
        if self._spool is None:
            self._spool = AsyncSpool.for_config(self._config)
            self._own_spool = True
        for problem in self._spool.problems:
            log.error("mqtt: %s", problem)

    async def write(self, readings: Sequence[Reading]) -> None:
        """Queue readings for publishing: spooled for QoS 1/2, in memory for QoS 0.

        With ``aggregate_s`` set, only the per-meter means of closed intervals.

        Raises:
            SinkUnavailable: the spool could not take them (disk full or failing).
        """
        await self._front.write(readings)

    async def run(self) -> None:
        """Keep a broker connection and publish until cancelled or stopped."""
        await self._session.run()

    def reconfigure(self, config: Config) -> None:
        """Apply a new config: reconnect if the connection changed, re-announce."""
        # Open intervals are closed under the old setting; their documents are
        # spooled ahead of the next batch (or by flush/stop).
        self._front.set_interval(config.mqtt.aggregate_s)
        self._config = config
        self._mqtt = config.mqtt
        self._identities = meter_identities(config)
        self._session.reconfigure(config)

    async def flush(self) -> None:
        """Spool open intervals; give the publisher a moment to drain the backlog."""
        await self._front.spool_pending()
        await self._session.drain(FLUSH_WAIT_S)

    async def stop(self) -> None:
        """End the connection (publishing ``offline``) and release the spool."""
        # Also here, for a stop that came without a flush (flush timed out).
        await self._front.spool_pending()
        await self._session.stop()
        if self._spool is not None and self._own_spool:
            await self._spool.close()
            self._spool = None

    def stats(self) -> dict[str, float]:
        """Connection state, backlog and lifetime counters."""
        spooled = None if self._spool is None else self._spool.stats_now(STREAM)
        backlog = 0 if spooled is None else spooled.depth
        out = {k: float(v) for k, v in self.counters.items()}
        out.update(
            connected=float(self._session.connected),
            backlog=float(backlog + self._session.qos0_waiting + self._front.held),
            aggregate_open=float(self._front.open_intervals),
            spool_dropped=float(0 if spooled is None else spooled.dropped),
            # The last count read: a snapshot is not taken from inside one.
            frame_errors=float(
                0 if self._frame_errors_seen is None else self._frame_errors_seen[1]
            ),
            auth_failed=float(isinstance(self.last_error, SinkAuthError)),
        )
        return out

    @property
    def connected(self) -> bool:
        """True while a broker session is up."""
        return self._session.connected

    @property
    def counters(self) -> collections.Counter[str]:
        """Lifetime figures: ``published``, ``duplicates``, ``connects``, ..."""
        return self._session.counters

    @property
    def last_error(self) -> SinkError | None:
        """The most recent connection problem (None once connected again)."""
        return self._session.last_error

    # -- queueing readings --------------------------------------------------------

    def _documents(self, readings: Sequence[Reading]) -> list[SpoolRow]:
        """Spool rows (time, state JSON) for ``readings``."""
        if not readings:
            return []
        _, errors = self._frame_errors()
        own, shared = self._identities
        encode = self._encoder.encode
        return [
            (
                r.time_ns,
                encode(
                    r,
                    frame_errors=errors.get(r.sensor, 0),
                    identity=own.get(r.sensor, shared),
                ),
            )
            for r in readings
        ]

    # -- frame errors and the spool ----------------------------------------------

    def _frame_errors(self) -> tuple[int, dict[int, int]]:
        """Rejected frames in all, and corrupt frames per meter (that named it).

        The daemon counts both; they are read from its snapshot.
        """
        if self._snapshot is None:
            return 0, {}
        # A snapshot costs milliseconds at a thousand meters and writes come
        # many times a second under load: take one at most every second.
        now = time.monotonic()
        seen = self._frame_errors_seen
        if seen is None or now - seen[0] >= SNAPSHOT_EVERY_S:
            try:
                snap = self._snapshot()
            except Exception:  # monitoring must never stop publishing
                log.debug("mqtt: daemon snapshot unavailable", exc_info=True)
                return 0, {}
            seen = self._frame_errors_seen = (
                now,
                snap.frame_errors,
                {s.sensor: s.bad_checksum for s in snap.sensors},
            )
        return seen[1], seen[2]

    def _require_spool(self) -> AsyncSpool:
        if self._spool is None:
            msg = "the MQTT sink was not started (no spool)"
            raise SinkUnavailable(msg, sink=self.name)
        return self._spool
