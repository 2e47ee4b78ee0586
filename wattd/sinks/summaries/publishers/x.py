"""Posting summaries to X (API v2 ``POST /2/tweets``, OAuth 1.0a user context).

tweepy signs each request with the four user-context credentials. Its client
always talks to ``https://api.twitter.com``; a transport adapter mounted on
its session sends the signed request to ``api_base_url`` instead when one is
configured (a relay, or a local test server) and puts a timeout on every
request, which tweepy itself does not.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import requests
import tweepy
from requests.adapters import HTTPAdapter

from wattd.errors import PublishError, PublishRejected
from wattd.sinks.summaries.publishers.base import Publisher, shorten

if TYPE_CHECKING:
    from wattd.config import XDestinationConfig
    from wattd.sinks.summaries.message import SummaryMessage

__all__ = ["X_API", "XPublisher"]

X_API: Final = "https://api.twitter.com"


class _BaseUrlAdapter(HTTPAdapter):
    """Sends requests for the X API to another base URL, with a timeout."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        super().__init__()
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        """Rewrite the URL (after signing, so the signature is X's) and send."""
        url = request.url or ""
        if url.startswith(X_API + "/") and self._base != X_API:
            request.url = self._base + url[len(X_API) :]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, **kwargs)


class XPublisher(Publisher):
    """Posts each summary as one post, cut to ``max_chars``."""

    name = "x"

    def __init__(self, cfg: XDestinationConfig) -> None:
        secrets = [cfg.consumer_key, cfg.consumer_secret]
        secrets += [cfg.access_token, cfg.access_token_secret]
        if any(s is None for s in secrets):
            raise PublishRejected(
                "consumer_key, consumer_secret, access_token and access_token_secret"
                " are all needed (or their *_file)",
                destination=self.name,
            )
        values = [s.get_secret_value() for s in secrets if s is not None]
        self._client = tweepy.Client(
            consumer_key=values[0],
            consumer_secret=values[1],
            access_token=values[2],
            access_token_secret=values[3],
        )
        adapter = _BaseUrlAdapter(cfg.api_base_url, cfg.timeout_s)
        session: requests.Session = self._client.session
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self._max_chars = cfg.max_chars

    async def post(self, message: SummaryMessage) -> str | None:
        """Create the post; return its id."""
        text = shorten(message.text, self._max_chars)
        try:
            # A thread of its own, not the shared worker: the post waits on X
            # for up to timeout_s, and state saves must not queue behind it.
            response = await asyncio.to_thread(
                self._client.create_tweet, text=text, user_auth=True
            )
        except (tweepy.errors.TooManyRequests, tweepy.errors.TwitterServerError) as exc:
            raise PublishError(_describe(exc), destination=self.name) from None
        except tweepy.errors.HTTPException as exc:
            raise PublishRejected(_describe(exc), destination=self.name) from None
        except (requests.RequestException, tweepy.errors.TweepyException) as exc:
            raise PublishError(
                f"cannot reach the X API: {type(exc).__name__}", destination=self.name
            ) from None
        data = getattr(response, "data", None) or {}
        return str(data["id"]) if "id" in data else None

    async def aclose(self) -> None:
        """Close the HTTP session."""
        self._client.session.close()


def _describe(exc: Any) -> str:
    # tweepy's message includes the API's error text, never the credentials.
    status = getattr(getattr(exc, "response", None), "status_code", "?")
    hint = {
        401: "; check the consumer key/secret and access token/secret",
        403: "; the app needs read and write permission (or a duplicate post)",
        429: "; rate limited by X",
    }.get(status if isinstance(status, int) else 0, "")
    return f"HTTP {status}: {exc}{hint}"
