"""Where summaries go: X, Mastodon, a webhook or an MQTT topic.

Each destination is a :class:`Publisher`: ``await post(message)`` returns the
remote id (if any) or raises :class:`~wattd.errors.PublishError` (retried) or
:class:`~wattd.errors.PublishRejected` (not retried). Blocking client
libraries run in a worker thread, so the event loop never waits on them.
Credentials never appear in errors or logs.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wattd.config import Config
    from wattd.summary import SummaryMessage

__all__ = ["Publisher", "build_publishers", "shorten"]


class Publisher(abc.ABC):
    """One summary destination."""

    name: str = "publisher"

    @abc.abstractmethod
    async def post(self, message: SummaryMessage) -> str | None:
        """Post one summary; return the remote id, if the destination gives one.

        Raises:
            PublishError: a failure that may pass (network, 5xx, rate limit).
            PublishRejected: the destination refused the post; do not retry.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def shorten(text: str, max_chars: int) -> str:
    """Cut ``text`` to ``max_chars`` characters, ending with an ellipsis if cut."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"


def build_publishers(config: Config, summary: str) -> dict[str, Publisher]:
    """A publisher for each enabled destination of summary ``summary``."""
    dests = config.summaries[summary].destinations
    out: dict[str, Publisher] = {}
    if dests.x.enabled:
        from wattd.publishers.x import XPublisher  # only when enabled

        out["x"] = XPublisher(dests.x)
    if dests.mastodon.enabled:
        from wattd.publishers.mastodon import MastodonPublisher

        out["mastodon"] = MastodonPublisher(dests.mastodon)
    if dests.webhook.enabled:
        from wattd.publishers.webhook import WebhookPublisher

        out["webhook"] = WebhookPublisher(dests.webhook)
    if dests.mqtt.enabled:
        from wattd.publishers.mqtt import MqttPublisher

        out["mqtt"] = MqttPublisher(config, dests.mqtt)
    return out
