"""The MQTT sink: readings to a broker, with Home Assistant discovery, zero loss.

Strategy. ``write()`` only appends each reading's state JSON to the durable
spool (stream ``mqtt``) and wakes the publisher; ``run()`` owns the broker
connection. Each connection is a fresh :class:`aiomqtt.Client` from
:mod:`wattd.clients.mqtt` (reconnecting is done out here, in a loop with capped,
jittered backoff) and lives in one ``TaskGroup``:

* *listen* iterates incoming messages. aiomqtt ends that iteration with an
  :class:`aiomqtt.MqttError` when the connection drops, so this task is also
  the disconnect detector that tears the group down.
* *pump* peeks a batch from the spool and publishes it with a window of
  messages awaiting their PUBACK (one connection keeps them in order), then
  acks only the leading run of fully confirmed readings. Anything after a
  failure is published again after the reconnect: a duplicate, as QoS 1
  allows, never a gap. The JSON keeps the reading's own ``time``.
* *announce* publishes Home Assistant discovery (on connect, on Home
  Assistant's birth message, after a reconfigure) and the node's stats.
* *control* ends the session when a reconfigure or stop asks for it.

QoS 0 readings skip the spool and go through a small in-memory queue: at most
once, by definition. The node's status topic carries a retained ``online``,
and a retained ``offline`` last will for crashes; a clean shutdown publishes
``offline`` itself, since a clean disconnect does not fire the will.

With ``aggregate_s`` set, ``write()`` first folds readings into per-meter
interval means (:mod:`wattd.core.aggregate`) and queues only the closed intervals;
``flush()``, ``stop()`` and a reload that changes the interval queue the open
ones too, so a SIGTERM loses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
import uuid
from typing import TYPE_CHECKING, Final

import aiomqtt

from wattd import __version__
from wattd.clients.mqtt import (
    MAX_INFLIGHT,
    TlsContext,
    build_tls_context,
    describe_error,
    make_client,
    reason_code,
)
from wattd.clients.topics import PAYLOAD_OFFLINE, PAYLOAD_ONLINE, Topics
from wattd.core.aggregate import ReadingAggregator
from wattd.errors import (
    SinkAuthError,
    SinkError,
    SinkTlsError,
    SinkUnavailable,
    SpoolError,
)
from wattd.sinks.base import Sink
from wattd.sinks.mqtt.hass import (
    discovery_messages,
    field_payloads,
    sensor_slugs,
    slug,
    stale_discovery_topics,
    state_document,
)
from wattd.storage.spool import AsyncSpool, SpoolItem

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from wattd.config import Config, MqttConfig, TlsConfig
    from wattd.core.readings import FrameRecord, Reading
    from wattd.core.snapshot import DaemonSnapshot

__all__ = ["STREAM", "MqttSink"]

log = logging.getLogger(__name__)

STREAM: Final = "mqtt"
"""The sink's stream in the shared spool."""
BATCH_ITEMS: Final = 500
"""Readings peeked from the spool per round; one ack (one fsync) per round."""
PUBLISH_TIMEOUT_S: Final = 30.0
"""A PUBACK slower than this means the connection is dead in all but name."""
OFFLINE_TIMEOUT_S: Final = 2.0
"""Shutdown waits this long for the broker to confirm the ``offline`` status."""
SYNC_TIMEOUT_S: Final = 5.0
"""Wait for the retained discovery configs at startup (normally milliseconds)."""
STATS_INTERVAL_S: Final = 30.0
IDLE_CHECK_S: Final = 1.0
"""How often a session looks for aggregation intervals left open by silence."""
FLUSH_WAIT_S: Final = 5.0
"""Shutdown publishes the backlog this long at most; the rest stays spooled."""
QOS0_QUEUE: Final = 10_000
"""QoS 0 readings held while the broker is away; the oldest go first."""
SNAPSHOT_EVERY_S: Final = 1.0
"""Corrupt-frame counts per meter come from a daemon snapshot at most this often."""
REPEAT_LOG_S: Final = 300.0
"""An unchanged connection error is logged again at most this often."""


class _SessionEnd(Exception):
    """Raised inside a session's task group to end it on purpose."""


class MqttSink(Sink):
    """Publishes readings to MQTT and announces meters to Home Assistant."""

    name = "mqtt"
    wants_frames = True
    batch_size = 1000

    def __init__(self, config: Config, *, spool: AsyncSpool | None = None) -> None:
        self._config = config
        self._mqtt = config.mqtt
        self._slugs = sensor_slugs(config.sensors)
        self._spool = spool
        self._own_spool = spool is None
        self._qos0: collections.deque[bytes] = collections.deque(maxlen=QOS0_QUEUE)
        self._aggregator = ReadingAggregator(config.mqtt.aggregate_s)
        self._held: list[tuple[int, bytes]] = []
        """Aggregated state documents the spool refused; they go in first."""
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._announce_wanted = asyncio.Event()
        self._restart = asyncio.Event()
        self._run_done = asyncio.Event()
        self._run_done.set()
        self._stopping = False
        self._connected = False
        self._tls_cache: tuple[TlsConfig, TlsContext] | None = None
        self._announced: set[str] = set()
        self._retained_configs: set[str] = set()
        self._barrier: tuple[str, bytes, asyncio.Event] | None = None
        self._frame_errors: collections.Counter[int] = collections.Counter()
        self._frame_errors_total = 0
        self._snapshot: Callable[[], DaemonSnapshot] | None = None
        self._claimed: tuple[float, dict[int, int]] | None = None
        self._last_logged: tuple[str, float] | None = None
        self.last_error: SinkError | None = None
        """The most recent connection problem (None once connected again)."""
        self.counters: collections.Counter[str] = collections.Counter()
        """Lifetime figures: ``published``, ``duplicates``, ``connects``, ..."""

    # -- Sink interface ---------------------------------------------------------

    def attach(self, snapshot: Callable[[], DaemonSnapshot]) -> None:
        """Keep the daemon's status provider for per-meter frame error counts."""
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
        if self._mqtt.qos:
            # Recorded with the next append, so a restart never goes below them.
            self._require_spool().note_wh_totals(readings)
        # Documents of an earlier batch go first; until the spool takes them,
        # batches are refused (and so kept, and retried, by the daemon).
        await self._queue_held()
        aggregator = self._aggregator
        docs = self._documents(aggregator.add(readings, time.monotonic()))
        if not aggregator.active:
            await self._queue(docs)
            return
        # The aggregator has taken this batch, so a retry of it would count it
        # twice: what the spool refuses now waits here instead.
        await self._hold_and_queue(docs)

    async def write_frames(self, frames: Sequence[FrameRecord]) -> None:
        """Count rejected frames, per meter where the address is known."""
        for frame in frames:
            if frame.kind in {"io", "other"}:
                continue
            self._frame_errors_total += 1
            if frame.sensor is not None:
                self._frame_errors[frame.sensor] += 1

    async def run(self) -> None:
        """Keep a broker connection and publish until cancelled or stopped."""
        self._run_done.clear()
        failures = 0
        try:
            while not self._stopping:
                # A TaskGroup on Python 3.11 may leave this task's cancel count
                # raised after a session, so later checks compare to this.
                baseline = _cancel_count()
                self._restart.clear()
                mqtt = self._mqtt
                tls: TlsContext | None = None
                connected = False
                try:
                    tls = await self._tls_context(mqtt.tls)
                    client = make_client(mqtt, tls_context=tls)
                    self.counters["connect_attempts"] += 1
                    async with client:
                        connected = True
                        if tls is not None:
                            tls.connected()
                        failures = 0
                        await self._session(client, mqtt, baseline)
                except (aiomqtt.MqttError, SinkError) as exc:
                    if tls is not None and not connected:
                        tls.close_failed()
                    error = (
                        exc
                        if isinstance(exc, SinkError)
                        else describe_error(exc, mqtt, lost=connected)
                    )
                    delay = self._backoff(error, failures, mqtt)
                    failures += 1
                    self._report(error, delay)
                    await _wait(self._restart, delay)
        finally:
            self._connected = False
            self._run_done.set()

    def reconfigure(self, config: Config) -> None:
        """Apply a new config: reconnect if the connection changed, re-announce."""
        old = self._mqtt
        if config.mqtt.aggregate_s != old.aggregate_s:
            # Open intervals are closed under the old setting; their documents
            # are spooled ahead of the next batch (or by flush/stop).
            self._drain_aggregator()
            self._aggregator = ReadingAggregator(config.mqtt.aggregate_s)
        self._config = config
        self._mqtt = config.mqtt
        self._slugs = sensor_slugs(config.sensors)
        if _connection_key(old) != _connection_key(config.mqtt):
            log.info("mqtt: connection settings changed; reconnecting")
            self._restart.set()
        else:
            self._announce_wanted.set()
        self._wake.set()

    async def flush(self) -> None:
        """Spool open intervals; give the publisher a moment to drain the backlog."""
        await self._spool_pending()
        if not self._connected:
            return
        self._wake.set()
        await _wait(self._drained, FLUSH_WAIT_S)

    async def stop(self) -> None:
        """End the connection (publishing ``offline``) and release the spool."""
        # Also here, for a stop that came without a flush (flush timed out).
        await self._spool_pending()
        self._stopping = True
        self._restart.set()
        await _wait(self._run_done, OFFLINE_TIMEOUT_S + 1)
        if self._spool is not None and self._own_spool:
            await self._spool.close()
            self._spool = None

    def stats(self) -> dict[str, float]:
        """Connection state, backlog and lifetime counters."""
        spooled = None if self._spool is None else self._spool.stats_now(STREAM)
        backlog = 0 if spooled is None else spooled.depth
        out = {k: float(v) for k, v in self.counters.items()}
        out.update(
            connected=float(self._connected),
            backlog=float(backlog + len(self._qos0) + len(self._held)),
            aggregate_open=float(self._aggregator.pending),
            spool_dropped=float(0 if spooled is None else spooled.dropped),
            frame_errors=float(self._frame_errors_total),
            auth_failed=float(isinstance(self.last_error, SinkAuthError)),
        )
        return out

    @property
    def connected(self) -> bool:
        """True while a broker session is up."""
        return self._connected

    # -- queueing readings --------------------------------------------------------

    def _documents(self, readings: Sequence[Reading]) -> list[tuple[int, bytes]]:
        """Spool rows (time, state JSON) for ``readings``."""
        if not readings:
            return []
        errors = self._meter_frame_errors()
        return [
            (
                r.time_ns,
                _json_bytes(state_document(r, frame_errors=errors.get(r.sensor, 0))),
            )
            for r in readings
        ]

    async def _hold_and_queue(self, docs: list[tuple[int, bytes]]) -> None:
        """Queue aggregated documents; what the spool refuses waits in ``_held``."""
        self._held.extend(docs)
        try:
            await self._queue_held()
        except SinkUnavailable as exc:
            log.warning(
                "mqtt: %s; %d aggregated readings wait in memory", exc, len(self._held)
            )

    async def _queue_held(self) -> None:
        """Queue the held documents, keeping them held if that fails."""
        if not self._held:
            return
        # Swapped out first: a reload may add documents while this waits.
        held, self._held = self._held, []
        try:
            await self._queue(held)
        except BaseException:
            self._held[:0] = held
            raise

    def _drain_aggregator(self) -> None:
        """Close every open interval; its documents wait in ``_held``."""
        self._held.extend(self._documents(self._aggregator.drain()))

    async def _queue(self, docs: Sequence[tuple[int, bytes]]) -> None:
        """Hand documents to the publisher: the spool, or memory for QoS 0.

        Raises:
            SinkUnavailable: the spool could not take them.
        """
        if not docs:
            return
        self._drained.clear()
        if self._mqtt.qos == 0:
            overflow = max(0, len(self._qos0) + len(docs) - QOS0_QUEUE)
            self.counters["qos0_dropped"] += overflow
            self._qos0.extend(p for _, p in docs)
        else:
            try:
                await self._require_spool().append(STREAM, docs)
            except SpoolError as exc:
                raise SinkUnavailable(
                    f"cannot spool {len(docs)} readings: {exc}", sink=self.name
                ) from exc
        self._wake.set()

    async def _spool_pending(self) -> None:
        """Queue open intervals and held documents (flush, stop); never raises."""
        self._drain_aggregator()
        try:
            await self._queue_held()
        except SinkUnavailable as exc:
            log.error(
                "mqtt: %s; %d aggregated readings are not spooled",
                exc,
                len(self._held),
            )

    # -- one connection -----------------------------------------------------------

    async def _session(
        self, client: aiomqtt.Client, mqtt: MqttConfig, cancel_baseline: int
    ) -> None:
        topics = Topics.from_config(mqtt)
        client.pending_calls_threshold = BATCH_ITEMS * 20
        await client.publish(topics.status, PAYLOAD_ONLINE, qos=1, retain=True)
        if mqtt.discovery.enabled:
            await client.subscribe(topics.ha_status, qos=1)
        _raise_if_cancelled(cancel_baseline)
        self._connected = True
        self.last_error = None
        self._last_logged = None
        self.counters["connects"] += 1
        backlog = 0 if self._spool is None else self._spool.stats_now(STREAM).depth
        log.info(
            "mqtt: connected to %s:%d%s as %s; %d readings waiting",
            mqtt.host,
            mqtt.port,
            " (TLS)" if mqtt.tls else "",
            client.identifier,
            backlog,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    self._listen(client, topics), name="wattd[sink:mqtt].listen"
                )
                tg.create_task(self._pump(client), name="wattd[sink:mqtt].pump")
                tg.create_task(
                    self._announce_loop(client, topics),
                    name="wattd[sink:mqtt].announce",
                )
                tg.create_task(self._end_on_request(), name="wattd[sink:mqtt].control")
                tg.create_task(self._expire_idle(), name="wattd[sink:mqtt].idle")
        except BaseExceptionGroup as group:
            _reraise_first(group)
        finally:
            self._connected = False
            self.counters["disconnects"] += 1
            await self._say_offline(client, topics)

    async def _expire_idle(self) -> None:
        """Publish open intervals once every meter has gone quiet (radio unplugged)."""
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            closed = self._aggregator.expire_idle(time.monotonic())
            if closed:
                await self._hold_and_queue(self._documents(closed))

    async def _end_on_request(self) -> None:
        await self._restart.wait()
        raise _SessionEnd

    async def _say_offline(self, client: aiomqtt.Client, topics: Topics) -> None:
        # Needed when leaving on purpose (a clean disconnect fires no will).
        # After a lost connection this fails at once, which is fine: the broker
        # has published the will already.
        try:
            await client.publish(
                topics.status,
                PAYLOAD_OFFLINE,
                qos=1,
                retain=True,
                timeout=OFFLINE_TIMEOUT_S,
            )
        except aiomqtt.MqttError:
            log.debug("mqtt: could not publish offline status (connection gone)")

    async def _listen(self, client: aiomqtt.Client, topics: Topics) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            barrier = self._barrier
            if barrier is not None and topic == barrier[0] and payload == barrier[1]:
                barrier[2].set()
            elif topic == topics.ha_status:
                # A retained birth is history, not news: we announce on connect.
                if payload.strip() == PAYLOAD_ONLINE.encode() and not message.retain:
                    log.info("mqtt: Home Assistant came online; re-announcing meters")
                    self.counters["ha_births"] += 1
                    self._announce_wanted.set()
            elif message.retain and payload and topics.is_own_discovery(topic):
                self._retained_configs.add(topic)

    # -- publishing readings ------------------------------------------------------

    async def _pump(self, client: aiomqtt.Client) -> None:
        spool = self._require_spool()
        while True:
            _raise_if_cancelled()
            # Clear before looking, so a write that lands meanwhile re-wakes us.
            self._wake.clear()
            if self._qos0:
                await self._publish_qos0(client)
                continue
            try:
                items = await spool.peek(STREAM, BATCH_ITEMS)
            except SpoolError as exc:
                log.error("mqtt: cannot read the spool: %s", exc)
                items = []
                await asyncio.sleep(1.0)
            if not items:
                self._drained.set()
                await self._wake.wait()
                continue
            self._drained.clear()
            await self._publish_items(client, items)

    async def _publish_items(
        self, client: aiomqtt.Client, items: Sequence[SpoolItem]
    ) -> None:
        """Publish a batch with a window of unconfirmed messages; ack the confirmed.

        The window keeps up to :data:`MAX_INFLIGHT` publishes outstanding, so the
        link stays busy without a round trip per reading.
        """
        mqtt = self._mqtt
        qos = mqtt.qos or 1  # spooled items were written for QoS >= 1
        plans = [self._messages_for(item.payload) for item in items]
        remaining = [len(plan) for plan in plans]
        inflight: collections.deque[tuple[int, asyncio.Task[None]]] = (
            collections.deque()
        )

        async def settle_oldest() -> None:
            index, task = inflight[0]
            await task
            inflight.popleft()
            remaining[index] -= 1

        try:
            for index, plan in enumerate(plans):
                for topic, payload in plan:
                    if len(inflight) >= MAX_INFLIGHT:
                        await settle_oldest()
                    task = asyncio.create_task(
                        client.publish(
                            topic,
                            payload,
                            qos=qos,
                            retain=mqtt.retain,
                            timeout=PUBLISH_TIMEOUT_S,
                        )
                    )
                    inflight.append((index, task))
            while inflight:
                await settle_oldest()
        finally:
            await self._settle(items, plans, remaining, inflight)

    async def _settle(
        self,
        items: Sequence[SpoolItem],
        plans: Sequence[Sequence[tuple[str, bytes]]],
        remaining: list[int],
        inflight: collections.deque[tuple[int, asyncio.Task[None]]],
    ) -> None:
        """Ack the leading run of fully confirmed readings; count duplicates."""
        for _, task in inflight:
            task.cancel()
        await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)
        for index, task in inflight:
            if _succeeded(task):
                remaining[index] -= 1
        done = 0
        while done < len(items) and remaining[done] == 0:
            done += 1
        # Readings confirmed after an unconfirmed one stay queued to keep the
        # order; they will reach subscribers twice, which QoS 1 permits.
        self.counters["duplicates"] += sum(
            1 for i in range(done, len(items)) if plans[i] and remaining[i] == 0
        )
        if not done:
            return
        self.counters["published"] += done
        try:
            await self._require_spool().ack(STREAM, [item.id for item in items[:done]])
        except SpoolError as exc:
            log.error("mqtt: could not mark readings as sent: %s", exc)

    async def _publish_qos0(self, client: aiomqtt.Client) -> None:
        mqtt = self._mqtt
        while self._qos0:
            payload = self._qos0[0]
            for topic, body in self._messages_for(payload):
                await client.publish(topic, body, qos=0, retain=mqtt.retain)
            self._qos0.popleft()
            self.counters["published"] += 1

    def _messages_for(self, payload: bytes) -> list[tuple[str, bytes]]:
        """State topic (and per-field topics) for one spooled state JSON."""
        topics = Topics.from_config(self._mqtt)
        try:
            doc = json.loads(payload)
            sensor = int(doc["sensor"])
            name = str(doc.get("name") or f"sensor-{sensor}")
        except (ValueError, KeyError, TypeError):
            # Only a damaged spool row can get here; it cannot be routed, and
            # keeping it would block every reading behind it.
            self.counters["unreadable"] += 1
            log.error("mqtt: dropped a spooled item that is not a state document")
            return []
        sensor_slug = self._slugs.get(sensor) or slug(name)
        out = [(topics.state(sensor_slug), payload)]
        if self._mqtt.per_field_topics:
            out.extend(
                (topics.field(sensor_slug, key), text.encode())
                for key, text in field_payloads(doc)
            )
        return out

    # -- discovery and stats ------------------------------------------------------

    async def _announce_loop(self, client: aiomqtt.Client, topics: Topics) -> None:
        first = True
        while True:
            # Cleared before announcing, so a request arriving meanwhile is kept.
            wanted = first or self._announce_wanted.is_set()
            self._announce_wanted.clear()
            if wanted and self._mqtt.discovery.enabled:
                await self._announce(client, topics, sync=first)
            first = False
            await self._publish_stats(client, topics)
            _raise_if_cancelled()
            await _wait(self._announce_wanted, STATS_INTERVAL_S)

    async def _announce(
        self, client: aiomqtt.Client, topics: Topics, *, sync: bool
    ) -> None:
        """Publish every config; clear those of meters no longer configured.

        On the first announce of a connection the broker's retained configs
        under this node are the record of what was announced before (perhaps
        by an earlier run with other sensors), so they are read first.
        """
        wanted = discovery_messages(
            self._mqtt, self._config.sensors, version=__version__
        )
        announced = set(self._announced)
        if sync:
            announced |= await self._retained_discovery(client, topics)
        for topic in stale_discovery_topics(announced, wanted):
            await client.publish(topic, b"", qos=1, retain=True)
            self.counters["discovery_cleared"] += 1
            log.info("mqtt: removed discovery config %s", topic)
        for topic, payload in wanted.items():
            await client.publish(topic, payload, qos=1, retain=True)
        self._announced = set(wanted)
        self.counters["discovery_announcements"] += 1

    async def _retained_discovery(
        self, client: aiomqtt.Client, topics: Topics
    ) -> set[str]:
        """Config topics of this node the broker holds as retained messages.

        MQTT has no "end of retained messages" marker, so after subscribing a
        token is published to a private topic: one connection's messages arrive
        in order, so once the token is back every retained config has arrived.
        """
        self._retained_configs = set()
        barrier_topic = f"{topics.base}/{topics.node_id}/sync"
        token = uuid.uuid4().hex.encode()
        arrived = asyncio.Event()
        self._barrier = (barrier_topic, token, arrived)
        try:
            granted = await client.subscribe(
                [(topics.discovery_filter, 1), (barrier_topic, 1)]
            )
            if any(reason_code(g) >= 0x80 for g in granted):
                log.warning(
                    "mqtt: the broker refused a subscription to %s; meters removed"
                    " from the config while wattd was stopped cannot be cleared",
                    topics.discovery_filter,
                )
                return set()
            await client.publish(barrier_topic, token, qos=1)
            if not await _wait(arrived, SYNC_TIMEOUT_S):
                log.warning("mqtt: retained discovery configs did not arrive in time")
            await client.unsubscribe([topics.discovery_filter, barrier_topic])
            return set(self._retained_configs)
        finally:
            self._barrier = None

    async def _publish_stats(self, client: aiomqtt.Client, topics: Topics) -> None:
        stats = self.stats()
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "version": __version__,
            "frame_errors": self._frame_errors_total,
            "backlog": int(stats["backlog"]),
            "published": int(stats.get("published", 0)),
            "duplicates": int(stats.get("duplicates", 0)),
        }
        await client.publish(topics.stats, _json_bytes(doc), qos=0, retain=True)

    # -- helpers ------------------------------------------------------------------

    def _meter_frame_errors(self) -> dict[int, int]:
        """Corrupt frames per meter: those that still named it.

        Rejected frames reach sinks without an address; the daemon's snapshot
        knows which sensor a corrupt frame claimed, so it is preferred.
        """
        counts = dict(self._frame_errors)
        if self._snapshot is None:
            return counts
        # A snapshot costs milliseconds at a thousand meters and writes come
        # many times a second under load: take one at most every second.
        now = time.monotonic()
        if self._claimed is None or now - self._claimed[0] >= SNAPSHOT_EVERY_S:
            try:
                sensors = self._snapshot().sensors
            except Exception:  # monitoring must never stop publishing
                log.debug("mqtt: daemon snapshot unavailable", exc_info=True)
                return counts
            self._claimed = (now, {s.sensor: s.bad_checksum for s in sensors})
        for sensor, bad in self._claimed[1].items():
            counts[sensor] = max(counts.get(sensor, 0), bad)
        return counts

    def _require_spool(self) -> AsyncSpool:
        if self._spool is None:
            msg = "the MQTT sink was not started (no spool)"
            raise SinkUnavailable(msg, sink=self.name)
        return self._spool

    async def _tls_context(self, tls: TlsConfig | None) -> TlsContext | None:
        if tls is None:
            return None
        if self._tls_cache is not None and self._tls_cache[0] == tls:
            return self._tls_cache[1]
        context = await asyncio.to_thread(build_tls_context, tls)
        self._tls_cache = (tls, context)
        return context

    def _backoff(self, error: SinkError, failures: int, mqtt: MqttConfig) -> float:
        if isinstance(error, SinkAuthError | SinkTlsError):
            # Same credentials, same answer: no point hammering the broker.
            return mqtt.reconnect_max_s * random.uniform(0.8, 1.0)
        ceiling = min(mqtt.reconnect_max_s, mqtt.reconnect_min_s * 2.0**failures)
        return ceiling * random.uniform(0.5, 1.0)

    def _report(self, error: SinkError, delay_s: float) -> None:
        self.last_error = error
        self.counters["connect_failures"] += 1
        if isinstance(error, SinkAuthError):
            self.counters["auth_failures"] += 1
        text = str(error)
        now = time.monotonic()
        last = self._last_logged
        if last is not None and last[0] == text and now - last[1] < REPEAT_LOG_S:
            log.debug("%s; retrying in %.2f s", text, delay_s)
            return
        self._last_logged = (text, now)
        level = (
            logging.ERROR
            if isinstance(error, SinkAuthError | SinkTlsError)
            else logging.WARNING
        )
        kept = "in memory" if self._mqtt.qos == 0 else "in the spool"
        log.log(level, "%s; retrying in %.2f s, readings wait %s", text, delay_s, kept)


def _connection_key(mqtt: MqttConfig) -> tuple[object, ...]:
    """Settings that need a new connection when they change."""
    return (
        mqtt.host,
        mqtt.port,
        mqtt.username,
        mqtt.password.get_secret_value() if mqtt.password else None,
        mqtt.tls,
        mqtt.client_id,
        mqtt.node_id,
        mqtt.base_topic,
        mqtt.keepalive_s,
        mqtt.discovery.enabled,
        mqtt.discovery.prefix,
        mqtt.discovery.status_topic,
    )


async def _wait(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set, at most ``timeout_s``; True if it was set.

    ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11 ``wait_for``
    can swallow a cancellation that arrives just as the event fires, and a
    loop that then carries on keeps its TaskGroup from ever finishing.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


def _cancel_count() -> int:
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def _raise_if_cancelled(baseline: int = 0) -> None:
    """Re-raise a cancellation that a library's ``wait_for`` swallowed.

    aiomqtt awaits every acknowledgement through ``asyncio.wait_for``, which on
    Python 3.11 may return normally although the task was cancelled meanwhile
    (the task then still reports ``cancelling()``). Long-lived loops call this
    at each turn so that they end as asked. ``baseline`` is the count that is
    not a request (see :meth:`MqttSink.run`).
    """
    if _cancel_count() > baseline:
        raise asyncio.CancelledError


def _succeeded(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _reraise_first(group: BaseExceptionGroup) -> None:
    """Leave a session: quietly on request, else with its first real error."""
    leaves = list(_leaves(group))
    for exc in leaves:
        if isinstance(exc, aiomqtt.MqttError | SinkError):
            raise exc
    for exc in leaves:
        if not isinstance(exc, _SessionEnd):
            raise group
    # Every leaf was the end request: a clean, deliberate exit.


def _leaves(group: BaseExceptionGroup) -> Iterable[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _json_bytes(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
