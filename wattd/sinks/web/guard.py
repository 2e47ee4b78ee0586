"""Bounds on the dashboard's connections, so a flood cannot starve the daemon.

Every connection costs a file descriptor, and the serial ports, the store, the
spool and the state file draw from the same per-process limit. aiohttp by
itself accepts as many connections as arrive and keeps an idle one for an
hour. :class:`ConnectionGuard` wraps the server's protocol factory and keeps:

* at most ``web.max_connections`` open (fewer if the open-file limit leaves
  less room). At the limit a new connection closes the oldest idle one:
  first one that never passed access control, then the one idle longest. If
  every connection is busy (streams, requests), the new one gets a 503;
* a deadline on each connection: ``header_timeout_s`` to send a request
  after connecting or after being refused, ``idle_timeout_s`` between
  accepted requests.

:class:`ServerLog` stands in for aiohttp's server logger: a client's malformed
or oversized request is one rate-limited line, never a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import resource
import sys
import time
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, HttpProcessingError, LineTooLong

from wattd.support.throttle import LogThrottle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from wattd.config import WebConfig

__all__ = ["BACKLOG", "ConnectionGuard", "GuardedSite", "ServerLog"]

log = logging.getLogger(__name__)

BACKLOG: Final = 32
"""Pending connections the kernel holds; also how many one wake-up accepts."""
FD_RESERVE: Final = 64
"""Descriptors kept free for everything else: ports, SQLite, sinks, state."""
MIN_CONNECTIONS: Final = 2
SWEEP_MAX_S: Final = 1.0
MAX_LINE_BYTES: Final = 8190
"""Longest request line or header line (aiohttp's default, made explicit)."""
LINGER_S: Final = 2.0
"""How long an unread request body is drained before the connection closes."""
_BUSY_TEXT: Final = b"503: too many open connections; try again shortly\n"
_BUSY_ANSWER: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n\r\n%s"
) % (len(_BUSY_TEXT), _BUSY_TEXT)


@dataclasses.dataclass(slots=True)
class _Conn:
    """What the guard knows about one connection (mutable bookkeeping)."""

    opened_s: float
    idle_since_s: float
    busy: int = 0
    trusted: bool = False
    made: bool = False


class _Busy(asyncio.Protocol):
    """Answers 503 and hangs up: the connection limit is full of busy ones."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)  # noqa: S101 - TCP
        transport.write(_BUSY_ANSWER)
        transport.close()


def _open_file_room(own: int = 0) -> tuple[int | None, int]:
    """The soft open-file limit (None: unlimited) and how many are left.

    ``own`` descriptors in use are counted as free (the caller's connections,
    when it re-plans its own share).
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None, sys.maxsize
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: assume a typical daemon's share
        in_use = 32
    return soft, soft - max(0, in_use - own)


class ConnectionGuard:
    """Counts, sheds and times out the web server's connections."""

    def __init__(
        self, config: WebConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._conns: dict[web.RequestHandler, _Conn] = {}
        self._throttle = LogThrottle(clock=clock)
        self._timer: asyncio.TimerHandle | None = None
        self.shed = 0
        self.refused = 0
        self.timed_out = 0
        self.reconfigure(config)

    def reconfigure(self, config: WebConfig) -> None:
        """Take new limits; they apply to the next connection and sweep."""
        self._header_s = config.header_timeout_s
        self._idle_s = config.idle_timeout_s
        self._sweep_s = min(SWEEP_MAX_S, self._header_s / 4, self._idle_s / 4)
        limit, room = _open_file_room(own=len(self._conns))
        fit = max(MIN_CONNECTIONS, room - FD_RESERVE - BACKLOG)
        self.max_connections = min(config.max_connections, fit)
        if self.max_connections < config.max_connections:
            log.warning(
                "web: the open-file limit (%s) leaves room for %d connections,"
                " fewer than web.max_connections (%d); raise it (LimitNOFILE= in"
                " the unit) or lower web.max_connections",
                limit,
                self.max_connections,
                config.max_connections,
            )

    def stats(self) -> dict[str, float]:
        """Counters for the sink's status."""
        return {
            "connections": float(len(self._conns)),
            "connections_shed": float(self.shed),
            "connections_refused": float(self.refused),
            "connections_timed_out": float(self.timed_out),
        }

    # -- wiring ------------------------------------------------------------------

    def factory(
        self, make: Callable[[], web.RequestHandler]
    ) -> Callable[[], asyncio.BaseProtocol]:
        """A protocol factory for ``loop.create_server`` that admits via the guard."""

        def admit() -> asyncio.BaseProtocol:
            now = self._clock()
            if len(self._conns) >= self.max_connections:
                self._prune(now)
            if len(self._conns) >= self.max_connections:
                victim = self._pick_idle()
                if victim is None:
                    self.refused += 1
                    self._note("refused", "all busy; answering new ones with 503")
                    return _Busy()
                self._close(victim)
                self.shed += 1
                self._note("shed", "closing the oldest idle ones to make room")
            proto = make()
            self._conns[proto] = _Conn(opened_s=now, idle_since_s=now)
            # connection_made runs on the next loop pass (the transport queues
            # it); look one pass after that, when it has a transport or is gone.
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._settle, proto)
            return proto

        return admit

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Mark the connection busy while a request runs."""
        conn = self._conns.get(request.protocol)
        if conn is None:
            return await handler(request)
        conn.busy += 1
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            conn.idle_since_s = self._clock()

    def trust(self, request: web.BaseRequest) -> None:
        """The request passed access control: its connection gets the long timeout."""
        conn = self._conns.get(request.protocol)
        if conn is not None:
            conn.trusted = True

    def start(self) -> None:
        """Begin sweeping for expired connections."""
        self.stop()
        self._timer = asyncio.get_running_loop().call_later(self._sweep_s, self._tick)

    def stop(self) -> None:
        """Stop sweeping and forget every connection (the server is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._conns.clear()

    # -- internals -----------------------------------------------------------------

    def _tick(self) -> None:
        self.sweep()
        self._timer = asyncio.get_running_loop().call_later(self._sweep_s, self._tick)

    def sweep(self) -> int:
        """Close connections past their deadline; how many were closed."""
        now = self._clock()
        self._prune(now)
        expired = [
            proto
            for proto, conn in self._conns.items()
            if not conn.busy
            and now - conn.idle_since_s
            > (self._idle_s if conn.trusted else self._header_s)
        ]
        for proto in expired:
            self._close(proto)
        self.timed_out += len(expired)
        return len(expired)

    def _settle(self, proto: web.RequestHandler) -> None:
        conn = self._conns.get(proto)
        if conn is None:
            return
        if proto.transport is None:  # closed before it was looked at
            del self._conns[proto]
        else:
            conn.made = True

    def _prune(self, now: float) -> None:
        # A handler has a transport from connection_made to connection_lost.
        gone = [
            proto
            for proto, conn in self._conns.items()
            if proto.transport is None
            and (conn.made or now - conn.opened_s > self._header_s)
        ]
        for proto in gone:
            del self._conns[proto]

    def _pick_idle(self) -> web.RequestHandler | None:
        idle = [(p, c) for p, c in self._conns.items() if not c.busy]
        if not idle:
            return None
        proto, _conn = min(idle, key=lambda pc: (pc[1].trusted, pc[1].idle_since_s))
        return proto

    def _close(self, proto: web.RequestHandler) -> None:
        del self._conns[proto]
        if proto.transport is not None:
            proto.force_close()
        else:
            # Not connected yet (or gone already). Closed before its
            # connection_made, the handler would never close the transport;
            # connection_made is already queued, so queue the close after it.
            asyncio.get_running_loop().call_soon(proto.force_close)

    def _note(self, key: str, what: str) -> None:
        suppressed = self._throttle.allow(key)
        if suppressed is None:
            return
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning(
            "web: at the limit of %d open connections (web.max_connections), %s%s",
            self.max_connections,
            what,
            more,
        )


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        """The address, as aiohttp names sites."""
        shown = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{shown}:{self._port}"

    async def start(self) -> None:
        """Listen, admitting each connection through the guard."""
        await super().start()
        server = self._runner.server
        assert server is not None  # noqa: S101 - BaseSite checks runner.setup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.factory(server),
            self._host,
            self._port,
            backlog=BACKLOG,
            reuse_address=True,
        )
        self._guard.start()

    async def stop(self) -> None:
        """Stop listening and sweeping."""
        self._guard.stop()
        await super().stop()


_CLIENT_FAULTS: Final = (
    (LineTooLong, f"a request line or header over {MAX_LINE_BYTES} bytes"),
    (BadStatusLine, "not an HTTP request"),
    (HttpProcessingError, "a malformed HTTP request"),
)


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, routed into wattd's and rate-limited.

    A client's bad request (oversized, malformed, not HTTP) becomes one
    warning line without its content or a traceback, at most once a minute.
    Anything else (a fault in wattd's own handlers) keeps its traceback, also
    rate-limited per exception type.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logging.getLogger("wattd.sinks.web.server"), {})
        self._throttle = LogThrottle(clock=clock)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log through the throttle; bad client requests as one line."""
        if not self.isEnabledFor(level):
            return
        exc = kwargs.get("exc_info")
        if exc is True:
            exc = sys.exc_info()[1]
        if not isinstance(exc, BaseException):
            super().log(level, msg, *args, **kwargs)
            return
        if isinstance(exc, ConnectionError):
            return  # the client went away; nothing to report
        what = next((w for kind, w in _CLIENT_FAULTS if isinstance(exc, kind)), None)
        if what is None and level < logging.WARNING:
            super().log(level, msg, *args, **kwargs)
            return
        suppressed = self._throttle.allow(what or type(exc).__qualname__)
        if suppressed is None:
            return
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        if what is not None:
            # Never the request's content: it may hold a client's credentials.
            remote = args[0] if args else "a client"
            self.logger.log(
                min(level, logging.WARNING),
                "web: refused %s from %s%s",
                what,
                remote,
                more,
            )
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = str(msg)
        self.logger.error("web: %s%s", text, more, exc_info=exc)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Pass messages through unchanged."""
        return msg, kwargs
