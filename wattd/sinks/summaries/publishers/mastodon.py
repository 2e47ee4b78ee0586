"""Posting summaries to Mastodon (``POST /api/v1/statuses``, bearer token).

Mastodon.py is blocking, so posts run in a thread of their own. The ledger
key is sent as the ``Idempotency-Key``, so even a retry the server already
took does not create a second status.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import mastodon

from wattd.errors import PublishError, PublishRejected
from wattd.sinks.summaries.publishers.base import Publisher, shorten

if TYPE_CHECKING:
    from wattd.config import MastodonDestinationConfig
    from wattd.sinks.summaries.message import SummaryMessage

__all__ = ["MastodonPublisher"]


class MastodonPublisher(Publisher):
    """Posts each summary as one status, cut to ``max_chars``."""

    name = "mastodon"

    def __init__(self, cfg: MastodonDestinationConfig) -> None:
        if cfg.access_token is None or cfg.api_base_url is None:
            raise PublishRejected(
                "api_base_url and access_token (or access_token_file) are needed",
                destination=self.name,
            )
        self._api = mastodon.Mastodon(
            access_token=cfg.access_token.get_secret_value(),
            api_base_url=cfg.api_base_url,
            ratelimit_method="throw",
            request_timeout=cfg.timeout_s,
            version_check_mode="none",
        )
        self._visibility = cfg.visibility
        self._max_chars = cfg.max_chars

    async def post(self, message: SummaryMessage) -> str | None:
        """Post the status; return its id."""
        text = shorten(message.text, self._max_chars)
        try:
            # A thread of its own, not the shared worker: the post waits on the
            # server for up to timeout_s, and state saves must not queue behind it.
            status = await asyncio.to_thread(
                self._api.status_post,
                text,
                visibility=self._visibility,
                idempotency_key=message.key,
            )
        except (
            mastodon.MastodonNetworkError,
            mastodon.MastodonRatelimitError,
            mastodon.MastodonServerError,
        ) as exc:
            raise PublishError(_describe(exc), destination=self.name) from None
        except mastodon.MastodonUnauthorizedError as exc:
            raise PublishRejected(
                f"{_describe(exc)}; check access_token and its write:statuses scope",
                destination=self.name,
            ) from None
        except mastodon.MastodonError as exc:
            raise PublishRejected(_describe(exc), destination=self.name) from None
        remote = status.get("id") if isinstance(status, dict) else None
        return str(remote) if remote is not None else None

    async def aclose(self) -> None:
        """Close the HTTP session."""
        self._api.session.close()


def _describe(exc: Exception) -> str:
    # Mastodon.py errors carry (method, status, reason, text); no token.
    return f"{type(exc).__name__}: {' '.join(str(a) for a in exc.args[1:4])}".strip()
