"""The dashboard's HTTP side: one page, a JSON API, server-sent events, /metrics.

Routes (all GET; every one but ``/healthz`` behind :mod:`wattd.sinks.web.auth`):

* ``/`` the page; ``/static/*`` its script and style (shipped in the package,
  no CDN, no build step);
* ``/api/state`` every sensor card, totals, health and display settings;
* ``/api/events`` server-sent events: ``snapshot`` first (the same as
  ``/api/state``), then an ``update`` every ``push_interval_s`` with the sensors
  that changed, the totals and the health panel;
* ``/api/sensors/{sensor}/waveform`` the last raw frame's samples;
* ``/api/history?hours=24[&sensor=N]`` mean watts per bucket from the store;
* ``/metrics`` Prometheus exposition (:mod:`wattd.sinks.web.metrics`), if enabled;
* ``/customer`` the customer page; ``/api/customer`` its figures and
  ``/api/bill`` a bill for any period (:mod:`wattd.sinks.web.customer`);
* ``/healthz`` ``{"status": "ok"}`` while the server runs.

A customer's credentials show only its own meters everywhere: the handlers
filter through the viewer's :class:`~wattd.sinks.web.customer.Scope`.

With a :class:`~wattd.sinks.web.guard.ConnectionGuard` the app also tells it which
connections are busy and which passed access control.
"""

from __future__ import annotations

import functools
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from wattd.sinks.web.auth import Authenticator, auth_middleware, viewer_of
from wattd.sinks.web.bills import bill_range
from wattd.sinks.web.board import LiveBoard, health_json
from wattd.sinks.web.customer import EVERYTHING, BillBusy, CustomerDesk, Scope
from wattd.sinks.web.history import sparklines
from wattd.sinks.web.hub import EventHub, format_event, format_event_json, to_json
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from collections.abc import Callable

    from wattd.config import Config
    from wattd.core.snapshot import DaemonSnapshot
    from wattd.sinks.web.guard import ConnectionGuard

__all__ = ["STATIC_DIR", "Dashboard", "build_app"]

STATIC_DIR: Final = Path(__file__).parent / "static"
# An idle event stream sends a comment this often, so proxies and browsers
# keep it open and a dead peer is noticed.
KEEPALIVE_S: Final = 15.0
HISTORY_TTL_S: Final = 30.0
HISTORY_CACHE_SIZE: Final = 64
MAX_HISTORY_HOURS: Final = 24 * 31


class Dashboard:
    """Everything the HTTP handlers read: live board, event hub, daemon status."""

    def __init__(
        self,
        config: Config,
        *,
        snapshot: Callable[[], DaemonSnapshot] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.board = LiveBoard(config)
        self.hub = EventHub()
        self.snapshot = snapshot
        self.clock = clock
        self._history: dict[tuple[Any, ...], tuple[float, dict[str, object]]] = {}
        self.desk = CustomerDesk(lambda: self.clock())
        self.config = config
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Take a new config: auth, metadata and settings apply at once."""
        before = self.config.web.customers
        self.config = config
        self.auth = Authenticator(config.web)
        self.hub.max_streams = config.web.max_streams
        self.board.reconfigure(config)
        self.desk.reconfigure(config)
        self._history.clear()
        # A customer whose access was removed or changed loses its open
        # streams at once; its page must reconnect with what is valid now.
        after = config.web.customers
        self.hub.close_scopes(
            lambda key: key is None or (key in after and after[key] == before.get(key))
        )

    def scope(self, request: web.Request) -> Scope:
        """The meters the request's viewer may see."""
        return self.desk.scope_named(viewer_of(request).customer)

    # -- JSON documents --------------------------------------------------------

    def settings_json(self, scope: Scope = EVERYTHING) -> dict[str, Any]:
        """Display settings the page needs."""
        web_cfg = self.config.web
        return {
            "stale_after_s": web_cfg.stale_after_s,
            "push_interval_s": web_cfg.push_interval_s,
            "timezone": self.config.tariffs.timezone,
            "metrics": web_cfg.metrics and scope.is_operator,
            "history": self.config.store.enabled,
            "customer": scope.customer,
        }

    def health(self, scope: Scope = EVERYTHING) -> dict[str, Any] | None:
        """The operator's health panel, if the daemon's status is attached."""
        if self.snapshot is None or not scope.is_operator:
            return None
        return health_json(self.snapshot(), stale_after_s=self.config.web.stale_after_s)

    def state_json(self, scope: Scope = EVERYTHING) -> dict[str, Any]:
        """Everything in ``scope``, for a page load or a stream's first message."""
        now = self.clock()
        return {
            "now_ms": _ms(now),
            "settings": self.settings_json(scope),
            "sensors": self.board.full(scope.sensors),
            "totals": self.board.totals(now, scope.sensors),
            "health": self.health(scope),
        }

    def update_json(self) -> dict[str, Any]:
        """What changed since the previous update (and the panels, which are small)."""
        now = self.clock()
        return {
            "now_ms": _ms(now),
            "sensors": self.board.take_changed(),
            "totals": self.board.totals(now),
            "health": self.health(),
        }

    def push(self) -> None:
        """Send one update to every open stream (or just reset the change set)."""
        if not self.hub.clients:
            self.board.take_changed()
            return
        keys = self.hub.scopes()
        if keys == {None}:
            self.hub.publish(self.update_event())
            return
        # Customers' streams: the changed cards are made once, then each
        # scope's update carries only its own meters and totals.
        now = self.clock()
        cards = [(c["sensor"], to_json(c)) for c in self.board.iter_changed()]
        for key in keys:
            scope = self.desk.scope_named(key if isinstance(key, str) else None)
            mine = ",".join(text for sensor, text in cards if scope.allows(sensor))
            self.hub.publish(self._update_body(now, mine, scope), key)

    def _update_body(self, now: datetime, cards: str, scope: Scope) -> bytes:
        totals = to_json(self.board.totals(now, scope.sensors))
        health = to_json(self.health(scope))
        body = (
            f'{{"now_ms":{_ms(now)},"sensors":[{cards}],'
            f'"totals":{totals},"health":{health}}}'
        )
        return format_event_json("update", body)

    def update_event(self) -> bytes:
        """The ``update`` event of :meth:`update_json`, byte for byte.

        Encoded one sensor card at a time: with a thousand sensors changing
        every second, the whole document as nested dicts and its encoder's
        pieces were megabytes of garbage per push.
        """
        cards = ",".join(map(to_json, self.board.iter_changed()))
        return self._update_body(self.clock(), cards, EVERYTHING)

    async def history(
        self, *, hours: float, sensor: int | None, scope: Scope = EVERYTHING
    ) -> dict[str, object]:
        """Sparklines in ``scope``, cached briefly (rollups change once a minute)."""
        chosen = None if sensor is None else [sensor]
        if chosen is None and scope.sensors is not None:
            chosen = sorted(scope.sensors)
        if not self.config.store.enabled or chosen == []:
            return {"bucket_ms": 0, "series": {}}
        key = (hours, sensor, scope.customer)
        now = time.monotonic()
        cached = self._history.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        # The heavy, rare work (history reads SQLite, a scrape renders ~1 MB at
        # 1,000 meters) runs on the daemon's one worker thread (wattd.support.worker).
        data = await run_blocking(
            functools.partial(
                sparklines,
                self.config.store_path,
                end=self.clock(),
                hours=hours,
                sensors=chosen,
                minute_detail=True if sensor is not None else None,
            )
        )
        if len(self._history) >= HISTORY_CACHE_SIZE:
            self._history.clear()
        self._history[key] = (now + HISTORY_TTL_S, data)
        return data


_DASHBOARD_KEY: Final = web.AppKey("dashboard", Dashboard)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def build_app(
    dashboard: Dashboard, guard: ConnectionGuard | None = None
) -> web.Application:
    """The aiohttp application serving ``dashboard``, connections under ``guard``."""
    access = auth_middleware(
        lambda: dashboard.auth, None if guard is None else guard.trust
    )
    middlewares = [access] if guard is None else [guard.middleware, access]
    app = web.Application(middlewares=middlewares)
    app[_DASHBOARD_KEY] = dashboard
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/sensors/{sensor}/waveform", _waveform)
    app.router.add_get("/api/history", _history)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/customer", _customer_page)
    app.router.add_get("/api/customer", _customer)
    app.router.add_get("/api/bill", _bill)
    app.router.add_static("/static", STATIC_DIR, append_version=False)
    app.on_shutdown.append(_close_streams)
    return app


async def _close_streams(app: web.Application) -> None:
    app[_DASHBOARD_KEY].hub.close()


def _dash(request: web.Request) -> Dashboard:
    return request.app[_DASHBOARD_KEY]


async def _index(request: web.Request) -> web.StreamResponse:
    page = (
        "index.html" if _dash(request).scope(request).is_operator else "customer.html"
    )
    return web.FileResponse(STATIC_DIR / page, headers={"Cache-Control": "no-cache"})


async def _customer_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        STATIC_DIR / "customer.html", headers={"Cache-Control": "no-cache"}
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _state(request: web.Request) -> web.Response:
    dash = _dash(request)
    return web.json_response(
        dash.state_json(dash.scope(request)), headers={"Cache-Control": "no-store"}
    )


async def _events(request: web.Request) -> web.StreamResponse:
    dash = _dash(request)
    scope = dash.scope(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # proxies must not buffer the stream
        }
    )
    await response.prepare(request)
    client = dash.hub.subscribe(scope.customer)
    try:
        await response.write(b"retry: 2000\n\n")
        await response.write(format_event("snapshot", dash.state_json(scope)))
        while True:
            message = await client.next(KEEPALIVE_S)
            if message is None:
                break
            if client.needs_snapshot:
                client.needs_snapshot = False
                scope = dash.desk.scope_named(scope.customer)  # after a reload
                message = format_event("snapshot", dash.state_json(scope))
            await response.write(message or b": keepalive\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        dash.hub.unsubscribe(client)
    return response


async def _waveform(request: web.Request) -> web.Response:
    sensor = _sensor_arg(request.match_info["sensor"])
    dash = _dash(request)
    # Another customer's meter reads exactly like one that does not exist.
    data = dash.board.waveform(sensor) if dash.scope(request).allows(sensor) else None
    if data is None:
        raise web.HTTPNotFound(
            text=f"no IO frame from sensor {sensor} since the daemon started\n"
        )
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def _history(request: web.Request) -> web.Response:
    try:
        hours = float(request.query.get("hours", "24"))
    except ValueError:
        raise web.HTTPBadRequest(text="hours must be a number\n") from None
    if not (math.isfinite(hours) and 0 < hours <= MAX_HISTORY_HOURS):
        raise web.HTTPBadRequest(text=f"hours must be 0..{MAX_HISTORY_HOURS}\n")
    raw = request.query.get("sensor")
    sensor = None if raw is None else _sensor_arg(raw)
    dash = _dash(request)
    scope = dash.scope(request)
    if sensor is not None and not scope.allows(sensor):
        raise web.HTTPNotFound(text=f"no history for sensor {sensor}\n")
    data = await dash.history(hours=hours, sensor=sensor, scope=scope)
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.StreamResponse:
    dash = _dash(request)
    if not dash.scope(request).is_operator:
        raise web.HTTPForbidden(text=_OPERATOR_ONLY)
    if not dash.config.web.metrics:
        raise web.HTTPNotFound(text="metrics are off (web.metrics: false)\n")
    if dash.snapshot is None:
        raise web.HTTPServiceUnavailable(text="the daemon status is not attached\n")
    from wattd.sinks.web.metrics import render_chunks

    chunks, content_type = render_chunks(
        dash.snapshot(), request.headers.get("Accept", "")
    )
    # Made on the worker thread and sent piece by piece: the whole body is
    # ~1.5 MB at a thousand sensors, and nothing needs it all at once.
    chunk: bytes | None = await run_blocking(next, chunks, None)
    response = web.StreamResponse()
    # aiohttp's content_type setter refuses parameters; set the header whole.
    response.headers["Content-Type"] = content_type
    await response.prepare(request)
    while chunk is not None:
        await response.write(chunk)
        chunk = await run_blocking(next, chunks, None)
    await response.write_eof()
    return response


def _sensor_arg(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise web.HTTPBadRequest(
            text=f"sensor {text!r} is not an address (decimal or 0x-hex)\n"
        ) from None
    if not 0 <= value < 1 << 64:
        raise web.HTTPBadRequest(text=f"sensor {value} is out of range\n")
    return value


_OPERATOR_ONLY: Final = (
    "403: /metrics describes the whole daemon and is for the operator's"
    " credentials only; the customer page is at /\n"
)


def _customer_of(request: web.Request) -> str | None:
    """Whose page or bill is asked for; None: the operator asked for no one.

    A customer gets its own, whatever ``name`` says, unless it names someone
    else: then 404, as for a name that does not exist.
    """
    dash = _dash(request)
    scope = dash.scope(request)
    name = request.query.get("name")
    if not scope.is_operator:
        if name is not None and name != scope.customer:
            raise web.HTTPNotFound(text="no such customer\n")
        return scope.customer
    if name is None:
        return None
    if not dash.desk.known(name):
        raise web.HTTPNotFound(text="no such customer\n")
    return name


async def _customer(request: web.Request) -> web.Response:
    dash = _dash(request)
    customer = _customer_of(request)
    if customer is None:
        # The operator, choosing whose page to open.
        return web.json_response(
            {"customers": dash.desk.customers()}, headers={"Cache-Control": "no-store"}
        )
    data = dict(await dash.desk.summary(customer))
    scope = dash.desk.scope_named(customer)
    now = dash.clock()
    data["now_ms"] = _ms(now)
    data["stale_after_s"] = dash.config.web.stale_after_s
    data["live"] = dash.board.totals(now, scope.sensors)["all"]
    data["sensors"] = dash.board.full(scope.sensors)
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def _bill(request: web.Request) -> web.Response:
    dash = _dash(request)
    customer = _customer_of(request)
    if customer is None:
        raise web.HTTPBadRequest(text="name the customer: /api/bill?name=NAME&...\n")
    fmt = request.query.get("format", "html")
    if fmt not in ("html", "csv"):
        raise web.HTTPBadRequest(text=f"format must be html or csv, not {fmt[:20]!r}\n")
    try:
        start, end = bill_range(
            dash.config,
            customer,
            dash.clock(),
            start=request.query.get("start"),
            end=request.query.get("end"),
            period=request.query.get("period"),
        )
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    try:
        bill = await dash.desk.bill(
            customer, start, end, "csv" if fmt == "csv" else "html"
        )
    except BillBusy:
        raise web.HTTPServiceUnavailable(
            text="another bill is being made; try again in a few seconds\n",
            headers={"Retry-After": "2"},
        ) from None
    return web.Response(
        text=bill.body,
        content_type=bill.content_type,
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{bill.filename}"',
        },
    )
