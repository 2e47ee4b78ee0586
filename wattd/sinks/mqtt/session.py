"""The MQTT sink's broker side: one connection at a time, reconnected until stopped.

:meth:`BrokerSession.run` owns the broker connection. Each connection is a
fresh :class:`aiomqtt.Client` from :mod:`wattd.clients.mqtt` (reconnecting is
done out here, in a loop with capped, jittered backoff) and lives in one
``TaskGroup``:

* *listen* iterates incoming messages. aiomqtt ends that iteration with an
  :class:`aiomqtt.MqttError` when the connection drops, so this task is also
  the disconnect detector that tears the group down.
* *pump* peeks a batch from the spool and publishes it with a window of
  messages awaiting their PUBACK (one connection keeps them in order), then
  acks only the leading run of fully confirmed readings. Anything after a
  failure is published again after the reconnect: a duplicate, as QoS 1
  allows, never a gap. The JSON keeps the reading's own ``time``.
* *announce* publishes Home Assistant discovery (on connect, on Home
  Assistant's birth message, after a reconfigure; see
  :mod:`wattd.sinks.mqtt.announce`) and the node's stats.
* *control* ends the session when a reconfigure or stop asks for it.
* *idle* closes aggregation intervals left open by silence.

QoS 0 readings skip the spool and wait in a small in-memory queue: at most
once, by definition. The node's status topic carries a retained ``online``,
and a retained ``offline`` last will for crashes; a clean shutdown publishes
``offline`` itself, since a clean disconnect does not fire the will.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Final

import aiomqtt

from wattd import __version__
from wattd.clients.mqtt import (
    BatchPublisher,
    TlsContext,
    build_tls_context,
    describe_error,
    make_client,
)
from wattd.clients.topics import PAYLOAD_OFFLINE, PAYLOAD_ONLINE, Topics
from wattd.errors import SinkAuthError, SinkError, SinkTlsError, SpoolError
from wattd.sinks.mqtt.announce import Announcer
from wattd.sinks.mqtt.hass import (
    field_payloads,
    sensor_slugs,
    slug,
)
from wattd.sinks.mqtt.statejson import json_bytes
from wattd.sinks.mqtt.tasks import (
    SessionEnd,
    cancel_count,
    leave_session,
    raise_if_cancelled,
    wait_set,
)
from wattd.support.backoff import backoff_delay
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from wattd.config import Config, MqttConfig, TlsConfig
    from wattd.sinks.spooled import SpoolRow
    from wattd.storage.spool import AsyncSpool, SpoolItem

__all__ = ["STREAM", "BrokerSession", "json_bytes"]

# One logger for everything the MQTT sink says, whichever of its modules says
# it, so a log filter on the sink's name sees its connection problems too.
log = logging.getLogger("wattd.sinks.mqtt.sink")

STREAM: Final = "mqtt"
"""The sink's stream in the shared spool."""
BATCH_ITEMS: Final = 500
"""Readings peeked from the spool per round; one ack (one fsync) per round."""
PUBLISH_TIMEOUT_S: Final = 30.0
"""A PUBACK slower than this means the connection is dead in all but name."""
OFFLINE_TIMEOUT_S: Final = 2.0
"""Shutdown waits this long for the broker to confirm the ``offline`` status."""
STATS_INTERVAL_S: Final = 30.0
IDLE_CHECK_S: Final = 1.0
"""How often a session looks for aggregation intervals left open by silence."""
QOS0_QUEUE: Final = 10_000
"""QoS 0 readings held while the broker is away; the oldest go first."""
REPEAT_LOG_S: Final = 300.0
"""An unchanged connection error is logged again at most this often."""
BACKOFF_JITTER: Final = 0.5
"""Each reconnect waits 50-100 % of its ceiling, so daemons do not retry in step."""
REFUSED_JITTER: Final = 0.2
"""After a refused login or TLS handshake, 80-100 % of ``reconnect_max_s``."""


class BrokerSession:
    """Publishes what the MQTT sink queued, and announces its meters to Home Assistant.

    Args:
        config: The daemon's config; :meth:`reconfigure` replaces it.
        spool: Returns the sink's open spool; raises SinkUnavailable before start.
        stats: The sink's figures, for the node's stats topic.
        frame_errors: Rejected frames in all, for the node's stats topic.
        expire_idle: Closes the sink's idle aggregation intervals.
    """

    def __init__(
        self,
        config: Config,
        *,
        spool: Callable[[], AsyncSpool],
        stats: Callable[[], dict[str, float]],
        frame_errors: Callable[[], int],
        expire_idle: Callable[[], Awaitable[None]],
    ) -> None:
        self._config = config
        self._mqtt = config.mqtt
        self._slugs = sensor_slugs(config.sensors)
        self._spool = spool
        self._stats = stats
        self._frame_errors = frame_errors
        self._close_idle = expire_idle
        self._qos0: collections.deque[bytes] = collections.deque(maxlen=QOS0_QUEUE)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._restart = asyncio.Event()
        self._run_done = asyncio.Event()
        self._run_done.set()
        self._stopping = False
        self._connected = False
        self._tls_cache: tuple[TlsConfig, TlsContext] | None = None
        self._last_logged: tuple[str, float] | None = None
        self.last_error: SinkError | None = None
        """The most recent connection problem (None once connected again)."""
        self.counters: collections.Counter[str] = collections.Counter()
        """Lifetime figures: ``published``, ``duplicates``, ``connects``, ..."""
        self._announcer = Announcer(self.counters, log)
        self._publisher: BatchPublisher | None = None
        self._topics: _TopicCache | None = None

    @property
    def connected(self) -> bool:
        """True while a broker session is up."""
        return self._connected

    @property
    def qos0_waiting(self) -> int:
        """QoS 0 readings waiting in memory."""
        return len(self._qos0)

    def keep(self, rows: Sequence[SpoolRow]) -> None:
        """Queue QoS 0 readings in memory; beyond :data:`QOS0_QUEUE` the oldest go."""
        overflow = max(0, len(self._qos0) + len(rows) - QOS0_QUEUE)
        self.counters["qos0_dropped"] += overflow
        self._qos0.extend(p for _, p in rows)

    def queued(self, count: int) -> None:
        """``count`` readings were queued: wake the publisher."""
        self._drained.clear()
        self._wake.set()

    async def run(self) -> None:
        """Keep a broker connection and publish until cancelled or stopped."""
        self._run_done.clear()
        failures = 0
        try:
            while not self._stopping:
                # A TaskGroup on Python 3.11 may leave this task's cancel count
                # raised after a session, so later checks compare to this.
                baseline = cancel_count()
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
                    await wait_set(self._restart, delay)
        finally:
            self._connected = False
            self._run_done.set()

    def reconfigure(self, config: Config) -> None:
        """Apply a new config: reconnect if the connection changed, else re-announce."""
        old = self._mqtt
        self._config = config
        self._mqtt = config.mqtt
        self._slugs = sensor_slugs(config.sensors)
        if _connection_key(old) != _connection_key(config.mqtt):
            log.info("mqtt: connection settings changed; reconnecting")
            self._restart.set()
        else:
            self._announcer.wanted.set()
        self._wake.set()

    async def drain(self, timeout_s: float) -> None:
        """Give the publisher up to ``timeout_s`` to send the backlog, if connected."""
        if not self._connected:
            return
        self._wake.set()
        await wait_set(self._drained, timeout_s)

    async def stop(self) -> None:
        """End the connection, publishing ``offline``, and wait for :meth:`run`."""
        self._stopping = True
        self._restart.set()
        await wait_set(self._run_done, OFFLINE_TIMEOUT_S + 1)

    # -- one connection -----------------------------------------------------------

    async def _session(
        self, client: aiomqtt.Client, mqtt: MqttConfig, cancel_baseline: int
    ) -> None:
        topics = Topics.from_config(mqtt)
        client.pending_calls_threshold = BATCH_ITEMS * 20
        await client.publish(topics.status, PAYLOAD_ONLINE, qos=1, retain=True)
        if mqtt.discovery.enabled:
            await client.subscribe(topics.ha_status, qos=1)
        raise_if_cancelled(cancel_baseline)
        self._connected = True
        self.last_error = None
        self._last_logged = None
        self.counters["connects"] += 1
        backlog = self._spool().stats_now(STREAM).depth
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
            leave_session(group)
        finally:
            self._connected = False
            self.counters["disconnects"] += 1
            await self._say_offline(client, topics)

    async def _expire_idle(self) -> None:
        """Publish open intervals once every meter has gone quiet (radio unplugged)."""
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            await self._close_idle()

    async def _end_on_request(self) -> None:
        await self._restart.wait()
        raise SessionEnd

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
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self._announcer.heard(
                message.topic.value, payload, retained=message.retain, topics=topics
            )

    # -- publishing readings ------------------------------------------------------

    async def _pump(self, client: aiomqtt.Client) -> None:
        spool = self._spool()
        while True:
            raise_if_cancelled()
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
        """Publish a batch in order, with one wait for all PUBACKs; ack the confirmed.

        paho keeps up to :data:`~wattd.clients.mqtt.MAX_INFLIGHT` of them
        unconfirmed at once, so the link stays busy without a round trip per
        reading.
        """
        mqtt = self._mqtt
        qos = mqtt.qos or 1  # spooled items were written for QoS >= 1
        plans = [self._messages_for(item.payload) for item in items]
        remaining = [len(plan) for plan in plans]
        owners = [index for index, plan in enumerate(plans) for _ in plan]

        def confirmed(message: int) -> None:
            remaining[owners[message]] -= 1

        publisher = self._publisher
        if publisher is None or publisher.client is not client:
            publisher = self._publisher = BatchPublisher(client)
        try:
            await publisher.publish(
                [message for plan in plans for message in plan],
                qos=qos,
                retain=mqtt.retain,
                timeout_s=PUBLISH_TIMEOUT_S,
                confirmed=confirmed,
            )
        finally:
            await self._settle(items, plans, remaining)

    async def _settle(
        self,
        items: Sequence[SpoolItem],
        plans: Sequence[Sequence[tuple[str, bytes]]],
        remaining: list[int],
    ) -> None:
        """Ack the leading run of fully confirmed readings; count duplicates."""
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
            await self._spool().ack(STREAM, [item.id for item in items[:done]])
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
        topics = self._topics
        if topics is None or topics.config is not self._mqtt:
            topics = self._topics = _TopicCache(self._mqtt)
        if not self._mqtt.per_field_topics:
            # The document is sent as it is; only its meter is needed, and the
            # fixed start of every state document says it without a parse.
            sensor = _routed_sensor(payload)
            if sensor is not None and sensor in self._slugs:
                return [(topics.state(self._slugs[sensor]), payload)]
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
                (topics.topics.field(sensor_slug, key), text.encode())
                for key, text in field_payloads(doc)
            )
        return out

    # -- discovery and stats ------------------------------------------------------

    async def _announce_loop(self, client: aiomqtt.Client, topics: Topics) -> None:
        first = True
        while True:
            # Cleared before announcing, so a request arriving meanwhile is kept.
            wanted = first or self._announcer.wanted.is_set()
            self._announcer.wanted.clear()
            if wanted and self._mqtt.discovery.enabled:
                await self._announcer.announce(client, topics, self._config, sync=first)
            first = False
            await self._publish_stats(client, topics)
            raise_if_cancelled()
            await wait_set(self._announcer.wanted, STATS_INTERVAL_S)

    async def _publish_stats(self, client: aiomqtt.Client, topics: Topics) -> None:
        stats = self._stats()
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "version": __version__,
            "frame_errors": self._frame_errors(),
            "backlog": int(stats["backlog"]),
            "published": int(stats.get("published", 0)),
            "duplicates": int(stats.get("duplicates", 0)),
        }
        await client.publish(topics.stats, json_bytes(doc), qos=0, retain=True)

    # -- connecting ---------------------------------------------------------------

    async def _tls_context(self, tls: TlsConfig | None) -> TlsContext | None:
        if tls is None:
            return None
        if self._tls_cache is not None and self._tls_cache[0] == tls:
            return self._tls_cache[1]
        context = await run_blocking(build_tls_context, tls)
        self._tls_cache = (tls, context)
        return context

    def _backoff(self, error: SinkError, failures: int, mqtt: MqttConfig) -> float:
        if isinstance(error, SinkAuthError | SinkTlsError):
            # Same credentials, same answer: no point hammering the broker.
            return backoff_delay(
                1,
                initial_s=mqtt.reconnect_max_s,
                max_s=mqtt.reconnect_max_s,
                jitter=REFUSED_JITTER,
            )
        return backoff_delay(
            failures + 1,
            initial_s=mqtt.reconnect_min_s,
            max_s=mqtt.reconnect_max_s,
            jitter=BACKOFF_JITTER,
        )

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


_STATE_START: Final = re.compile(rb'\{"time":"[^"\\]*","sensor":(\d+),"name":"')
"""How every state document begins (see :mod:`wattd.sinks.mqtt.statejson`)."""


def _routed_sensor(payload: bytes) -> int | None:
    """The meter of a whole state document, read from its start; None if unsure.

    A row that does not end the way a JSON object does is left to the full
    parse, which counts it as unreadable.
    """
    found = _STATE_START.match(payload)
    if found is None or not payload.endswith(b"}"):
        return None
    return int(found[1])


class _TopicCache:
    """State topics per meter slug for one ``mqtt:`` config."""

    def __init__(self, mqtt: MqttConfig) -> None:
        self.config = mqtt
        self.topics = Topics.from_config(mqtt)
        self._state: dict[str, str] = {}

    def state(self, sensor_slug: str) -> str:
        topic = self._state.get(sensor_slug)
        if topic is None:
            topic = self._state[sensor_slug] = self.topics.state(sensor_slug)
        return topic


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
