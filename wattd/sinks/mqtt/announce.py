"""Home Assistant discovery on a broker connection: announce, re-announce, clear.

A connection announces every configured meter's entities as retained config
messages (built by :mod:`wattd.sinks.mqtt.hass`), and announces again when Home
Assistant comes back online or the config is reloaded. Configs of meters no
longer configured are cleared with an empty retained message. On the first
announce of a connection, the broker's retained configs under this node are
the record of what an earlier run announced, so they are read first.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Final

from wattd import __version__
from wattd.clients.mqtt import reason_code
from wattd.clients.topics import PAYLOAD_ONLINE
from wattd.sinks.mqtt.hass import discovery_messages, stale_discovery_topics
from wattd.sinks.mqtt.tasks import wait_set

if TYPE_CHECKING:
    import collections
    import logging

    import aiomqtt

    from wattd.clients.topics import Topics
    from wattd.config import Config

__all__ = ["Announcer"]

SYNC_TIMEOUT_S: Final = 5.0
"""Wait for the retained discovery configs at startup (normally milliseconds)."""


class Announcer:
    """What this node announced to Home Assistant, and announcing it again.

    Args:
        counters: The sink's lifetime figures (births, announcements, clears).
        log: The sink's logger.
    """

    def __init__(self, counters: collections.Counter[str], log: logging.Logger) -> None:
        self._counters = counters
        self._log = log
        self._announced: set[str] = set()
        self._retained_configs: set[str] = set()
        self._barrier: tuple[str, bytes, asyncio.Event] | None = None
        self.wanted = asyncio.Event()
        """Set when the meters should be announced again."""

    def heard(
        self, topic: str, payload: bytes, *, retained: bool, topics: Topics
    ) -> None:
        """Take one incoming message: the sync token, a birth, or a retained config."""
        barrier = self._barrier
        if barrier is not None and topic == barrier[0] and payload == barrier[1]:
            barrier[2].set()
        elif topic == topics.ha_status:
            # A retained birth is history, not news: we announce on connect.
            if payload.strip() == PAYLOAD_ONLINE.encode() and not retained:
                self._log.info("mqtt: Home Assistant came online; re-announcing meters")
                self._counters["ha_births"] += 1
                self.wanted.set()
        elif retained and payload and topics.is_own_discovery(topic):
            self._retained_configs.add(topic)

    async def announce(
        self, client: aiomqtt.Client, topics: Topics, config: Config, *, sync: bool
    ) -> None:
        """Publish every config; clear those of meters no longer configured.

        With ``sync`` (the first announce of a connection) the broker's
        retained configs under this node are read first.
        """
        wanted = discovery_messages(config.mqtt, config.sensors, version=__version__)
        announced = set(self._announced)
        if sync:
            announced |= await self._retained_discovery(client, topics)
        for topic in stale_discovery_topics(announced, wanted):
            await client.publish(topic, b"", qos=1, retain=True)
            self._counters["discovery_cleared"] += 1
            self._log.info("mqtt: removed discovery config %s", topic)
        for topic, payload in wanted.items():
            await client.publish(topic, payload, qos=1, retain=True)
        self._announced = set(wanted)
        self._counters["discovery_announcements"] += 1

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
                self._log.warning(
                    "mqtt: the broker refused a subscription to %s; meters removed"
                    " from the config while wattd was stopped cannot be cleared",
                    topics.discovery_filter,
                )
                return set()
            await client.publish(barrier_topic, token, qos=1)
            if not await wait_set(arrived, SYNC_TIMEOUT_S):
                self._log.warning(
                    "mqtt: retained discovery configs did not arrive in time"
                )
            await client.unsubscribe([topics.discovery_filter, barrier_topic])
            return set(self._retained_configs)
        finally:
            self._barrier = None
