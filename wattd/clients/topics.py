"""The MQTT topic layout: where the sink, ``mqtt-test`` and the last will publish."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from wattd.config import MqttConfig

__all__ = ["PAYLOAD_OFFLINE", "PAYLOAD_ONLINE", "Topics"]

PAYLOAD_ONLINE: Final = "online"
PAYLOAD_OFFLINE: Final = "offline"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Topics:
    """Where everything is published, derived from the MQTT config."""

    base: str
    node_id: str
    discovery_prefix: str
    ha_status: str
    node_in_state: bool = False
    """Meter topics under the node (``mqtt.topic_layout: node``), so the nodes
    of a fleet can share one broker without two ``desk_lamp`` colliding."""

    @classmethod
    def from_config(cls, mqtt: MqttConfig) -> Topics:
        """The layout for one MQTT config."""
        return cls(
            base=mqtt.base_topic,
            node_id=mqtt.node_id,
            discovery_prefix=mqtt.discovery.prefix,
            ha_status=mqtt.discovery.status_topic,
            node_in_state=mqtt.topic_layout == "node",
        )

    @property
    def status(self) -> str:
        """Retained ``online``/``offline`` of this node (the last will)."""
        return f"{self.base}/{self.node_id}/status"

    @property
    def stats(self) -> str:
        """Node diagnostics JSON (frame errors, backlog)."""
        return f"{self.base}/{self.node_id}/stats"

    @property
    def test_root(self) -> str:
        """Scratch area for ``wattd mqtt-test``."""
        return f"{self.base}/{self.node_id}/mqtt-test"

    def meter(self, sensor_slug: str) -> str:
        """Where one meter's topics start: ``<base>[/<node>]/<meter>``."""
        if self.node_in_state:
            return f"{self.base}/{self.node_id}/{sensor_slug}"
        return f"{self.base}/{sensor_slug}"

    def state(self, sensor_slug: str) -> str:
        """JSON state of one meter."""
        return f"{self.meter(sensor_slug)}/state"

    def field(self, sensor_slug: str, key: str) -> str:
        """Plain-number topic of one state field."""
        return f"{self.meter(sensor_slug)}/{key}"

    def discovery(self, component: str, object_id: str) -> str:
        """Config topic of one discovered entity."""
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"

    @property
    def discovery_filter(self) -> str:
        """Wildcard matching every config topic this node may have announced."""
        return f"{self.discovery_prefix}/+/{self.node_id}/+/config"

    def is_own_discovery(self, topic: str) -> bool:
        """True if ``topic`` is a config topic of this node."""
        parts = topic.split("/")
        prefix = self.discovery_prefix.split("/")
        n = len(prefix)
        return (
            len(parts) == n + 4
            and parts[:n] == prefix
            and parts[n + 1] == self.node_id
            and parts[-1] == "config"
        )
