"""Publishing summaries to an MQTT topic, through the broker of ``mqtt:``.

Each post opens a short connection of its own (its own client id, no last
will), so the reading sink's session is never disturbed. The payload is the
same JSON document the webhook gets. The topic may use ``{summary}`` and
``{group}``; by default it is ``<base_topic>/summary/<summary>/<group>``.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING

import aiomqtt

from wattd.clients.mqtt import (
    TlsContext,
    build_tls_context,
    describe_error,
    make_client,
)
from wattd.errors import PublishError, WattdError
from wattd.sinks.summaries.publishers.base import Publisher
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from wattd.config import Config, MqttDestinationConfig
    from wattd.sinks.summaries.message import SummaryMessage

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
        mqtt = self._config.mqtt
        topic = summary_topic(self._config, self._cfg, message)
        payload = json.dumps(message.to_json_dict(), ensure_ascii=False)
        tls: TlsContext | None = None
        connected = False
        try:
            if mqtt.tls:
                # Only reads the local key and certificates: short enough for
                # the shared worker.
                tls = await run_blocking(build_tls_context, mqtt.tls)
            client = make_client(
                mqtt,
                tls_context=tls,
                client_id=f"wattd-summary-{secrets.token_hex(4)}",
                will=False,
            )
            async with client:
                connected = True
                if tls is not None:
                    tls.connected()
                await client.publish(
                    topic, payload, qos=self._cfg.qos, retain=self._cfg.retain
                )
        except (aiomqtt.MqttError, OSError, WattdError) as exc:
            if tls is not None and not connected:
                # A failed handshake leaves its socket open until collected.
                tls.close_failed()
            why = (
                describe_error(exc, mqtt, lost=connected)
                if isinstance(exc, aiomqtt.MqttError)
                else exc
            )
            raise PublishError(
                f"cannot publish to {mqtt.host}:{mqtt.port} topic {topic}: {why}",
                destination=self.name,
            ) from None
        return topic
