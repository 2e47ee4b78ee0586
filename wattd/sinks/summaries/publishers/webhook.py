"""Posting summaries as JSON to any URL (chat bridges, automations, ntfy...).

The body is :meth:`SummaryMessage.to_json_dict`. Headers: ``Idempotency-Key``
(the ledger key), an optional bearer token, and with a ``secret`` an
``X-Wattd-Signature: sha256=<hex HMAC of the body>`` the receiver can check.
2xx is success; 408, 425, 429 and 5xx are retried; any other status is a
refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Final

import aiohttp

from wattd import __version__
from wattd.errors import PublishError, PublishRejected
from wattd.sinks.summaries.publishers.base import Publisher

if TYPE_CHECKING:
    from wattd.config import WebhookDestinationConfig
    from wattd.sinks.summaries.message import SummaryMessage

__all__ = ["SIGNATURE_HEADER", "WebhookPublisher", "sign"]

SIGNATURE_HEADER: Final = "X-Wattd-Signature"
_RETRY_STATUS: Final = frozenset({408, 425, 429})


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookPublisher(Publisher):
    """POSTs each summary as one JSON document."""

    name = "webhook"

    def __init__(self, cfg: WebhookDestinationConfig) -> None:
        if cfg.url is None:
            raise PublishRejected("url is not set", destination=self.name)
        self._cfg = cfg
        self._url = cfg.url

    async def post(self, message: SummaryMessage) -> str | None:
        """Send the JSON body; return the response's ``id`` field, if any."""
        cfg = self._cfg
        body = json.dumps(message.to_json_dict(), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"wattd/{__version__}",
            "Idempotency-Key": message.key,
            **cfg.headers,
        }
        if cfg.token is not None:
            headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
        if cfg.secret is not None:
            headers[SIGNATURE_HEADER] = sign(
                cfg.secret.get_secret_value().encode(), body
            )
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self._url, data=body, headers=headers) as resp,
            ):
                text = (await resp.text())[:200]
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PublishError(
                f"cannot reach the webhook: {type(exc).__name__}", destination=self.name
            ) from None
        if 200 <= status < 300:
            return _remote_id(text)
        detail = f"HTTP {status} from the webhook: {text.strip() or 'no body'}"
        if status in _RETRY_STATUS or status >= 500:
            raise PublishError(detail, destination=self.name)
        raise PublishRejected(detail, destination=self.name)


def _remote_id(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return str(value) if value is not None else None
