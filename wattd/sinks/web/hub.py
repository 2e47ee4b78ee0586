"""Server-sent events: one bounded mailbox per open dashboard.

The pusher formats each update once and drops the bytes into every client's
mailbox; it never waits for a slow browser. A mailbox that overflows is
emptied and flagged, and that client's next message is a full snapshot
instead: it skips the updates it could not take, never the current values.
At most ``max_streams`` are open at once; one more ends the oldest.
Each stream belongs to a scope (whose meters it may see); an update is made
once per scope and goes only to that scope's streams.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable, Hashable
from typing import Any, Final

from wattd.support.throttle import LogThrottle

__all__ = ["Client", "EventHub", "format_event", "format_event_json", "to_json"]

MAILBOX_SIZE: Final = 32
"""Updates held for one browser (~30 s at the default push interval)."""
MAX_STREAMS: Final = 16

log = logging.getLogger(__name__)


def format_event(event: str, data: Any) -> bytes:
    """One SSE message: ``event:`` line, a single-line JSON ``data:``, blank line."""
    return format_event_json(event, to_json(data))


def format_event_json(event: str, body: str) -> bytes:
    """:func:`format_event` for data already encoded by :func:`to_json`."""
    return b"".join((f"event: {event}\ndata: ".encode(), body.encode(), b"\n\n"))


def to_json(data: Any) -> str:
    """Compact, single-line JSON as the event stream sends it (no NaN)."""
    return _ENCODER.encode(data)


# One encoder for all: json.dumps with options builds a new one per call, and
# an update encodes every changed sensor's card separately.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class Client:
    """One open event stream, and whose view (``scope``) it carries."""

    def __init__(self, size: int, scope: Hashable = None) -> None:
        self.scope = scope
        self._queue: collections.deque[bytes] = collections.deque()
        self._size = size
        self._wake = asyncio.Event()
        self.closed = False
        self.needs_snapshot = False
        self.overflows = 0

    def put(self, message: bytes) -> None:
        """Queue a message; on overflow, drop everything and ask for a resync."""
        if len(self._queue) >= self._size:
            self._queue.clear()
            self.needs_snapshot = True
            self.overflows += 1
        else:
            self._queue.append(message)
        self._wake.set()

    def close(self) -> None:
        """End the stream at the client's next wake-up."""
        self.closed = True
        self._wake.set()

    async def next(self, timeout_s: float) -> bytes | None:
        """The next message; ``b""`` after ``timeout_s`` idle, None once closed."""
        if not self._queue and not self.closed and not self.needs_snapshot:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout_s)
            except TimeoutError:
                return b""
        if self.closed:
            return None
        if self._queue:
            return self._queue.popleft()
        return b""


class EventHub:
    """The set of open event streams, oldest first."""

    def __init__(
        self, mailbox_size: int = MAILBOX_SIZE, max_streams: int = MAX_STREAMS
    ) -> None:
        self._mailbox_size = mailbox_size
        self.max_streams = max_streams
        self.shed = 0
        # A dict keeps the order of subscription: the first key is the oldest.
        self._clients: dict[Client, None] = {}
        self._throttle = LogThrottle()

    @property
    def clients(self) -> int:
        """How many streams are open."""
        return len(self._clients)

    def subscribe(self, scope: Hashable = None) -> Client:
        """Open a stream for ``scope``, ending the oldest if the limit is reached."""
        while len(self._clients) >= self.max_streams:
            oldest = next(iter(self._clients))
            del self._clients[oldest]
            oldest.close()
            self.shed += 1
            suppressed = self._throttle.allow("shed")
            if suppressed is not None:
                more = (
                    f" ({suppressed} more since the last report)" if suppressed else ""
                )
                log.warning(
                    "web: %d event streams open (web.max_streams); ended the"
                    " oldest for a new one%s",
                    self.max_streams,
                    more,
                )
        client = Client(self._mailbox_size, scope)
        self._clients[client] = None
        return client

    def unsubscribe(self, client: Client) -> None:
        """Forget a stream (its handler ended)."""
        self._clients.pop(client, None)

    def scopes(self) -> set[Hashable]:
        """The scopes of the open streams (one update is made per scope)."""
        return {client.scope for client in self._clients}

    def publish(self, message: bytes, scope: Hashable = None) -> None:
        """Hand one formatted message to every stream of ``scope``."""
        for client in self._clients:
            if client.scope == scope:
                client.put(message)

    def close_scopes(self, keep: Callable[[Hashable], bool]) -> None:
        """End the streams whose scope ``keep`` no longer accepts (a reload)."""
        for client in list(self._clients):
            if not keep(client.scope):
                del self._clients[client]
                client.close()

    def close(self) -> None:
        """End every stream (shutdown)."""
        for client in self._clients:
            client.close()
