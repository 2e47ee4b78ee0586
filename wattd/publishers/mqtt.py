"""Publishing summaries to an MQTT topic, through the broker of ``mqtt:``.

Each post opens a short connection of its own (its own client id, no last
will), so the reading sink's session is never disturbed. The payload is the
same JSON document the webhook gets. The topic may use ``{summary}`` and
``{group}``; by default it is ``<base_topic>/summary/<summary>/<group>``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from typing import TYPE_CHECKING

import aiomqtt

from wattd.errors import PublishError, WattdError
from wattd.publishers import Publisher

if TYPE_CHECKING:
    from wattd.config import Config, MqttDestinationConfig
    from wattd.summary import SummaryMessage

__all__ = ["MqttPublisher", "summary_topic"]


def summary_topic(
    config: Config, cfg: MqttDestinationConfig, message: SummaryMessage
) -> str:
    """The topic one message goes to."""
    group = re.sub(r"[^A-Za-z0-9_.-]+", "_", message.group).strip("_") or "all"
    template = cfg.topic or f"{config.mqtt.base_topic}/summary/{{summary}}/{{group}}"
    return template.replace("{summary}", message.summary).replace("{group}", group)


class MqttPublisher(Publisher):
    """Publishes each summary as one (by default retained) message."""

    name = "mqtt"

    def __init__(self, config: Config, cfg: MqttDestinationConfig) -> None:
        self._config = config
        self._cfg = cfg

    async def post(self, message: SummaryMessage) -> str | None:
        """Connect, publish with the configured QoS, disconnect."""
        from wattd.sinks.mqtt import build_tls_context, make_client

        mqtt = self._config.mqtt
        topic = summary_topic(self._config, self._cfg, message)
        payload = json.dumps(message.to_json_dict(), ensure_ascii=False)
        try:
            tls = (
                await asyncio.to_thread(build_tls_context, mqtt.tls)
                if mqtt.tls
                else None
            )
            client = make_client(
                mqtt,
                tls_context=tls,
                client_id=f"wattd-summary-{secrets.token_hex(4)}",
                will=False,
            )
            async with client:
                await client.publish(
                    topic, payload, qos=self._cfg.qos, retain=self._cfg.retain
                )
        except (aiomqtt.MqttError, OSError, WattdError) as exc:
            raise PublishError(
                f"cannot publish to {mqtt.host}:{mqtt.port} topic {topic}: {exc}",
                destination=self.name,
            ) from None
        return topic
