"""Where summaries go: X, Mastodon, a webhook or an MQTT topic.

Each destination is a :class:`Publisher`: ``await post(message)`` returns the
remote id (if any) or raises :class:`~wattd.errors.PublishError` (retried) or
:class:`~wattd.errors.PublishRejected` (not retried). Blocking client
libraries run in a worker thread, so the event loop never waits on them.
Credentials never appear in errors or logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wattd.config import Config
    from wattd.sinks.summaries.publishers.base import Publisher

__all__ = ["build_publishers"]


def build_publishers(config: Config, summary: str) -> dict[str, Publisher]:
    """A publisher for each enabled destination of summary ``summary``."""
    dests = config.summaries[summary].destinations
    out: dict[str, Publisher] = {}
    if dests.x.enabled:
        from wattd.sinks.summaries.publishers.x import XPublisher  # only when enabled

        out["x"] = XPublisher(dests.x)
    if dests.mastodon.enabled:
        from wattd.sinks.summaries.publishers.mastodon import MastodonPublisher

        out["mastodon"] = MastodonPublisher(dests.mastodon)
    if dests.webhook.enabled:
        from wattd.sinks.summaries.publishers.webhook import WebhookPublisher

        out["webhook"] = WebhookPublisher(dests.webhook)
    if dests.mqtt.enabled:
        from wattd.sinks.summaries.publishers.mqtt import MqttPublisher

        out["mqtt"] = MqttPublisher(config, dests.mqtt)
    return out
