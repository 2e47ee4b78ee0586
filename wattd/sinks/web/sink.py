"""The web dashboard as a sink: readings and frames in, a web server out.

The supervisor treats it like any other sink: readings arrive through its
queue (:meth:`WebSink.write` only updates the in-memory board), raw frames too
(the last one per sensor is the waveform of the detail view), and daemon
status comes from the snapshot provider handed to :meth:`WebSink.attach`.
:meth:`WebSink.start` binds the server (a busy port is retried by the
supervisor with backoff); :meth:`WebSink.run` pushes the once-per-interval
update to open dashboards and rebinds when a reload moved the address.
Connections go through a :class:`~wattd.sinks.web.guard.ConnectionGuard`, which
bounds how many stay open and for how long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, Final

from aiohttp import web

from wattd.errors import SinkUnavailable
from wattd.sinks.base import Sink
from wattd.sinks.web.app import Dashboard, build_app
from wattd.sinks.web.board import local_day_start
from wattd.sinks.web.guard import (
    LINGER_S,
    MAX_LINE_BYTES,
    ConnectionGuard,
    GuardedSite,
    ServerLog,
)
from wattd.sinks.web.history import energy_between
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from wattd.config import Config, WebConfig
    from wattd.core.readings import FrameRecord, Reading
    from wattd.core.snapshot import DaemonSnapshot

__all__ = ["WebSink"]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S: Final = 2.0
"""Open event streams are ended first, so handlers finish well within this."""


class WebSink(Sink):
    """Serves the dashboard and /metrics, fed like a sink."""

    name = "web"
    wants_frames: ClassVar[bool] = True
    # The board only keeps the latest values, so a big batch costs nothing extra.
    batch_size = 2000

    def __init__(self, config: Config) -> None:
        self._config = config
        self.dashboard = Dashboard(config)
        self.guard = ConnectionGuard(config.web)
        self._server_log = ServerLog()
        self._runner: web.AppRunner | None = None
        self._bound: tuple[str, int] | None = None
        self._rebind = asyncio.Event()
        self._stats: dict[str, float] = {"readings": 0, "frames": 0}

    # -- lifecycle ---------------------------------------------------------------

    def attach(self, snapshot: Callable[[], DaemonSnapshot]) -> None:
        """Keep the daemon's status provider for the health panel and /metrics."""
        self.dashboard.snapshot = snapshot

    async def start(self) -> None:
        """Seed today's totals from the store and bind the server.

        Raises:
            SinkUnavailable: the address cannot be bound (retried with backoff).
        """
        if self._runner is None:
            await self._seed_today()
        await self._bind(self._config.web)

    async def write(self, readings: Sequence[Reading]) -> None:
        """Take readings into the board (no IO)."""
        add = self.dashboard.board.add
        for reading in readings:
            add(reading)
        self._stats["readings"] += len(readings)

    async def write_frames(self, frames: Sequence[FrameRecord]) -> None:
        """Keep the latest IO frame of each sensor for the waveform view."""
        add = self.dashboard.board.add_frame
        for frame in frames:
            add(frame)
        self._stats["frames"] += len(frames)

    async def run(self) -> None:
        """Push updates to open dashboards; rebind after an address change."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._rebind.wait(), self._config.web.push_interval_s
                )
            if self._rebind.is_set():
                self._rebind.clear()
                await self._bind(self._config.web)
            self.dashboard.push()

    def reconfigure(self, config: Config) -> None:
        """Apply a reload: auth and settings at once, a new address via run()."""
        old = self._config.web
        self._config = config
        self.dashboard.reconfigure(config)
        self.guard.reconfigure(config.web)
        if (config.web.host, config.web.port) != (old.host, old.port):
            self._rebind.set()

    async def stop(self) -> None:
        """End open streams and close the server."""
        await self._unbind()

    def stats(self) -> dict[str, float]:
        """Open event streams and what the board took."""
        out = dict(self._stats)
        out["clients"] = float(self.dashboard.hub.clients)
        out["streams_shed"] = float(self.dashboard.hub.shed)
        out.update(self.guard.stats())
        out["port"] = float(self._bound[1]) if self._bound else 0.0
        return out

    @property
    def url(self) -> str | None:
        """Where the dashboard is served, once bound."""
        if self._bound is None:
            return None
        host, port = self._bound
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    # -- internals -------------------------------------------------------------------

    async def _seed_today(self) -> None:
        if not self._config.store.enabled:
            return
        now = datetime.now(UTC)
        tz_name = self._config.tariffs.timezone
        from zoneinfo import ZoneInfo

        start = local_day_start(now, ZoneInfo(tz_name))
        try:
            totals = await run_blocking(
                energy_between, self._config.store_path, start, now
            )
        except Exception:  # the dashboard must come up even if history cannot
            log.exception("web: could not read today's energy from the store")
            return
        self.dashboard.board.seed_today(totals, as_of=now)

    async def _bind(self, cfg: WebConfig) -> None:
        await self._unbind()
        app = build_app(self.dashboard, self.guard)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            # Handed to each connection's aiohttp RequestHandler.
            keepalive_timeout=cfg.idle_timeout_s,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            lingering_time=LINGER_S,
            logger=self._server_log,
        )
        await runner.setup()
        site = GuardedSite(runner, cfg.host, cfg.port, self.guard)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise SinkUnavailable(
                f"cannot listen on {cfg.host}:{cfg.port} ({exc.strerror or exc});"
                " is another program using the port? Set web.port to a free one",
                sink=self.name,
            ) from None
        self._runner = runner
        port = cfg.port
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                port = int(address[1])
                break
        self._bound = (cfg.host, port)
        auth = "credentials required" if self.dashboard.auth.required else "no auth"
        extra = " and /metrics" if cfg.metrics else ""
        log.info("web dashboard%s on %s (%s)", extra, self.url, auth)

    async def _unbind(self) -> None:
        runner, self._runner = self._runner, None
        self._bound = None
        if runner is None:
            return
        self.dashboard.hub.close()
        await runner.cleanup()
