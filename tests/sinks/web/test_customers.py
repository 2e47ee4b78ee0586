"""Customer access: each customer's secret shows its own meters, and nothing else.

One dashboard serves the whole module: four meters (two of acme's, one of
globex's, one of nobody's) with readings in the store for today and for a
day of the previous month, the live board fed, and waveforms for two meters.
Every endpoint is asked with the operator's secret, each customer's, a wrong
one and none; with a customer's, the raw bytes of every answer and of the
event stream are searched for anything of the others.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr

from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.services import free_port
from tests.fixtures.snapshots import daemon_snapshot
from tests.fixtures.waiting import wait_until
from tests.sinks.web.cdp import chromium_page
from tests.sinks.web.test_app import reading
from wattd.config import Config
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.core.readings import FrameRecord
from wattd.costing.report.engine import period_range
from wattd.sinks.web.sink import WebSink
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator
from wattd.storage.store import Store, to_ns

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.asyncio(loop_scope="module")

ARTIFACTS = REPO_ROOT / "artifacts"
OPERATOR_TOKEN = "operator-7d1e-token"
ACME_TOKEN = "acme-4f0a-token"
GLOBEX_USER, GLOBEX_PASSWORD = "globex-billing", "globex-9c2b-password"
PRICE = 0.25
CO2_G = 400.0
# Watts of each meter; 4 belongs to nobody.
WATTS = {1: 100.0, 2: 200.0, 3: 300.0, 4: 400.0}
SENSORS = [
    {"address": 1, "name": "acme-web", "rack": "RA1", "customer": "acme"},
    {"address": 2, "name": "acme-db", "rack": "RA2", "customer": "acme"},
    {"address": 3, "name": "globex-mail", "rack": "RG7", "customer": "globex"},
    {"address": 4, "name": "spare-pdu", "rack": "RX9"},
]
HALL_B_PUE = 1.5
LOCATIONS = {"hall-a": {"pue": 1.0}, "hall-b": {"pue": HALL_B_PUE}}
OWN = {"acme": {1, 2}, "globex": {3}}
# What must never reach the other customer, byte for byte.
FOREIGN = {
    "acme": [b"globex", b"RG7", b"spare-pdu", b"RX9"],
    "globex": [b"acme", b"RA1", b"RA2", b"spare-pdu", b"RX9"],
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


WHO = {
    "operator": {"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    "acme": {"Authorization": f"Bearer {ACME_TOKEN}"},
    "globex": {"Authorization": basic(GLOBEX_USER, GLOBEX_PASSWORD)},
    "wrong": {"Authorization": "Bearer acme-4f0a-tokem"},
    "none": {},
}


@dataclass(frozen=True, slots=True)
class Served:
    """The module's running dashboard and what was put in its store."""

    sink: WebSink
    base: str
    config: Config
    now: datetime


def make_config(state_dir: Path) -> Config:
    return Config.model_validate(
        {
            "state_dir": str(state_dir),
            "sensors": [{**s, "location": "hall-a"} for s in SENSORS],
            "web": {
                "enabled": True,
                "port": free_port(),
                "push_interval_s": 0.1,
                "token": OPERATOR_TOKEN,
                "customers": {
                    "acme": {"token": ACME_TOKEN},
                    "globex": {"username": GLOBEX_USER, "password": GLOBEX_PASSWORD},
                },
            },
            "locations": LOCATIONS,
            "tariffs": {
                "flexible_shares": {"acme": 0.3},
                "default": "flat",
                "plans": {
                    "flat": {
                        "currency": "EUR",
                        "price_per_kwh": PRICE,
                        "co2_g_per_kwh": CO2_G,
                    }
                },
            },
        }
    )


def fill_store(config: Config, now: datetime) -> None:
    """A reading a minute: the 90 minutes before now, and 2 h of last month."""
    tz = ZoneInfo(config.tariffs.timezone)
    last_month = period_range("month", now, tz, previous=True)[0] + timedelta(days=2)
    times = [now - timedelta(minutes=m) for m in range(90, 0, -1)]
    times += [last_month + timedelta(minutes=m) for m in range(120)]
    times.sort()
    with Store.open(config.store_path) as store:
        store.insert_readings(
            [reading(s, t, w, wh_delta=w / 60) for t in times for s, w in WATTS.items()]
        )


def stored_kwh(
    config: Config, sensors: set[int], start: datetime, end: datetime
) -> float:
    """Energy of ``sensors`` in ``[start, end)``, summed from the minute buckets."""
    with Store.open(config.store_path, readonly=True) as store:
        rows = store.rollups("1m", to_ns(start), to_ns(end), sorted(sensors))
    return sum(r.wh for r in rows) / 1000.0


def io_frame(sensor: int, at: datetime) -> FrameRecord:
    model = MeterModel.with_quirks(sensor, ResistiveLoad(watts=WATTS[sensor]), seed=1)
    frame = Simulator([model], seed=1).next_frame()
    (decoded,) = FrameDecoder(1).feed(frame.frame)
    assert isinstance(decoded, IoSampleFrame)
    return FrameRecord(
        time=at,
        port="rx",
        api_mode=1,
        kind="io",
        raw=frame.frame,
        sensor=sensor,
        io_frame=decoded,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    config = make_config(tmp_path_factory.mktemp("customers") / "state")
    now = datetime.now(UTC).replace(microsecond=0)
    config.store_path.parent.mkdir(parents=True, exist_ok=True)
    fill_store(config, now)
    sink = WebSink(config)
    sink.attach(daemon_snapshot)
    await sink.start()
    task = asyncio.create_task(sink.run())
    await sink.write([reading(s, datetime.now(UTC), w) for s, w in WATTS.items()])
    await sink.write_frames([io_frame(s, now) for s in WATTS])
    assert sink.url is not None
    try:
        yield Served(sink, sink.url.rstrip("/"), config, now)
    finally:
        await sink.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def assert_nothing_foreign(who: str, body: bytes, where: str) -> None:
    for marker in FOREIGN.get(who, []):
        assert marker not in body, (who, where, marker)
    if who in OWN:
        ids = {int(m) for m in re.findall(rb'"sensor":\s*(\d+)', body)}
        assert ids <= OWN[who], (who, where, ids)
        # No count of the whole site: four meters, three with a customer.
        assert not re.search(rb'"sensors(_total|_seen)?":\s*[34]\b', body), where


# path -> status for operator, acme, globex (wrong and none always get 401)
MATRIX: dict[str, tuple[int, int, int]] = {
    "/": (200, 200, 200),
    "/customer": (200, 200, 200),
    "/static/app.js": (200, 200, 200),
    "/static/common.js": (200, 200, 200),
    "/static/customer.js": (200, 200, 200),
    "/static/style.css": (200, 200, 200),
    "/api/state": (200, 200, 200),
    "/api/events": (200, 200, 200),
    "/api/sensors/1/waveform": (200, 200, 404),
    "/api/sensors/3/waveform": (200, 404, 200),
    "/api/sensors/4/waveform": (200, 404, 404),
    "/api/sensors/99/waveform": (404, 404, 404),
    "/api/history?hours=24": (200, 200, 200),
    "/api/history?hours=24&sensor=3": (200, 404, 200),
    "/metrics": (200, 403, 403),
    "/api/customer": (200, 200, 200),
    "/api/customer?name=acme": (200, 200, 404),
    "/api/customer?name=globex": (200, 404, 200),
    "/api/customer?name=nobody": (404, 404, 404),
    "/api/bill?period=previous&format=csv": (400, 200, 200),
    "/api/bill?name=acme&period=previous": (200, 200, 404),
    "/api/bill?name=globex&period=current&format=csv": (200, 404, 200),
    "/api/bill?name=acme&start=2020-01-01&end=2026-01-01": (400, 400, 404),
    "/api/bill?name=acme&start=yesterday&end=today": (400, 400, 404),
    "/no/such/page": (404, 404, 404),
}


async def test_every_endpoint_answers_each_viewer_with_only_its_meters(
    served: Served, http: aiohttp.ClientSession
) -> None:
    for path, (op, acme, globex) in MATRIX.items():
        expected = {"operator": op, "acme": acme, "globex": globex}
        for who, headers in WHO.items():
            async with http.get(
                served.base + path, headers=headers, allow_redirects=False
            ) as resp:
                stream = path == "/api/events" and resp.status == 200
                body = await (read_stream(resp, 1) if stream else resp.read())
                assert resp.status == expected.get(who, 401), (path, who, body[:200])
            assert_nothing_foreign(who, body, path)
            if path.startswith("/api/history") and resp.status == 200 and who in OWN:
                series = json.loads(body)["series"]
                assert {int(k) for k in series} <= OWN[who], (who, path)
    # Another customer's meter reads exactly like one that does not exist.
    for who, sensor in (("acme", 3), ("globex", 1)):
        async with http.get(
            f"{served.base}/api/sensors/{sensor}/waveform", headers=WHO[who]
        ) as resp:
            text = await resp.text()
        assert text == f"no IO frame from sensor {sensor} since the daemon started\n"


async def test_state_shows_a_customer_its_meters_and_totals(
    served: Served, http: aiohttp.ClientSession
) -> None:
    async def state(who: str) -> dict[str, Any]:
        async with http.get(f"{served.base}/api/state", headers=WHO[who]) as resp:
            data: dict[str, Any] = await resp.json()
        return data

    op, acme, globex = (
        await state("operator"),
        await state("acme"),
        await state("globex"),
    )
    assert [s["sensor"] for s in op["sensors"]] == [1, 2, 3, 4]
    assert op["health"] is not None
    assert op["settings"]["customer"] is None
    assert [s["sensor"] for s in acme["sensors"]] == [1, 2]
    assert acme["health"] is None
    assert acme["settings"] == {
        **acme["settings"],
        "customer": "acme",
        "metrics": False,
    }
    assert acme["totals"]["all"]["sensors"] == 2
    assert acme["totals"]["all"]["watts"] == pytest.approx(300.0)
    assert set(acme["totals"]["racks"]) == {"RA1", "RA2"}
    assert set(acme["totals"]["customers"]) == {"acme"}
    assert [s["name"] for s in globex["sensors"]] == ["globex-mail"]
    assert globex["totals"]["all"]["watts"] == pytest.approx(300.0)
    assert op["totals"]["all"]["watts"] == pytest.approx(1000.0)


async def test_a_token_in_the_url_becomes_that_customers_session(
    served: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        f"{served.base}/?token={ACME_TOKEN}", allow_redirects=False
    ) as resp:
        assert resp.status == 303
        session = resp.cookies["wattd_session"].value
    http.cookie_jar.clear()
    cookie = {"Cookie": f"wattd_session={session}"}
    async with http.get(f"{served.base}/api/state", headers=cookie) as resp:
        body = await resp.read()
    assert {s["sensor"] for s in json.loads(body)["sensors"]} == {1, 2}
    assert_nothing_foreign("acme", body, "/api/state by cookie")
    async with http.get(f"{served.base}/", headers=cookie) as resp:
        assert 'src="/static/customer.js"' in await resp.text()
    async with http.get(f"{served.base}/metrics", headers=cookie) as resp:
        assert resp.status == 403


async def read_stream(resp: aiohttp.ClientResponse, events: int) -> bytes:
    """Raw bytes of the stream up to ``events`` complete messages."""
    raw = b""
    while raw.count(b"\n\nevent: ") + raw.startswith(b"event: ") < events or not (
        raw.endswith(b"\n\n")
    ):
        raw += await asyncio.wait_for(resp.content.readany(), 5)
    return raw


async def test_live_streams_carry_only_each_viewers_meters(
    served: Served, http: aiohttp.ClientSession
) -> None:
    streams = {}
    async with contextlib.AsyncExitStack() as stack:
        for who in ("operator", "acme", "globex"):
            resp = await stack.enter_async_context(
                http.get(f"{served.base}/api/events", headers=WHO[who])
            )
            assert resp.status == 200
            streams[who] = resp
        hub = served.sink.dashboard.hub
        await wait_until(lambda: hub.clients >= 3, what="three open streams")
        # Every meter changes while all three listen: mixed-scope updates.
        for step in range(1, 4):
            at = datetime.now(UTC)
            await served.sink.write(
                [reading(s, at, w + step) for s, w in WATTS.items()]
            )
            await served.sink.write_frames([io_frame(s, at) for s in WATTS])
            await asyncio.sleep(0.15)  # let a push interval pass per step
        seen: dict[str, set[int]] = {}
        for who, resp in streams.items():
            raw = await read_stream(resp, 4)
            assert b"event: snapshot" in raw
            assert b"event: update" in raw
            assert_nothing_foreign(who, raw, "/api/events")
            seen[who] = {int(m) for m in re.findall(rb'"sensor":(\d+)', raw)}
    assert seen == {"operator": {1, 2, 3, 4}, "acme": {1, 2}, "globex": {3}}


async def test_customer_figures_and_bills_match_the_store(
    served: Served, http: aiohttp.ClientSession
) -> None:
    config, now = served.config, served.now
    tz = ZoneInfo(config.tariffs.timezone)
    previous = period_range("month", now, tz, previous=True)
    current = period_range("month", now, tz)
    async with http.get(f"{served.base}/api/customer", headers=WHO["acme"]) as resp:
        summary = await resp.json()
    assert summary["customer"] == "acme"
    assert [s["name"] for s in summary["servers"]] == ["acme-db", "acme-web"]
    for label, (start, end) in (("previous", previous), ("current", current)):
        figures = summary["periods"][label]
        kwh = stored_kwh(config, OWN["acme"], start, end)
        assert kwh > 0
        assert figures["start_ms"] == int(start.timestamp() * 1000)
        assert figures["it_kwh"] == pytest.approx(kwh, rel=1e-6)
        assert figures["cost"] == pytest.approx(kwh * PRICE, rel=1e-6)
        assert figures["co2_kg"] == pytest.approx(kwh * CO2_G / 1000, rel=1e-6)
    web_kwh = stored_kwh(config, {1}, *previous)
    web = next(s for s in summary["servers"] if s["sensor"] == 1)
    assert web["previous"]["cost"] == pytest.approx(web_kwh * PRICE, rel=1e-6)
    # The price behind today's hours: one point per local hour, all flat.
    assert summary["curve"]
    assert {p["price_per_kwh"] for p in summary["curve"]} == {PRICE}
    assert any(p["watts"] for p in summary["curve"])
    # Side by side: the same energy at the other hall, and with 30 % shifted.
    cmp = summary["comparison"]
    actual = cmp["actual"]
    kwh = stored_kwh(config, OWN["acme"], *current)
    assert actual["energy_cost"] == pytest.approx(kwh * PRICE, rel=1e-6)
    at = {s["name"]: s for s in cmp["locations"]}
    assert set(at) == {"hall-a", "hall-b"}
    assert at["hall-b"]["facility_kwh"] == pytest.approx(kwh * HALL_B_PUE, rel=1e-6)
    assert at["hall-b"]["energy_cost"] == pytest.approx(
        kwh * HALL_B_PUE * PRICE, rel=1e-6
    )
    assert cmp["flexible_share"] == 0.3
    # A flat price: moving load to other hours changes nothing.
    assert cmp["shifted"]["energy_cost"] == pytest.approx(actual["energy_cost"])
    assert len(summary["bills"]) == 12
    assert summary["bills"][0]["start_ms"] == int(previous[0].timestamp() * 1000)

    # The bill for last month, as a download, in both formats.
    day = previous[0].astimezone(tz).date()
    query = f"start={day.isoformat()}&end={previous[1].astimezone(tz).date()}"
    async with http.get(
        f"{served.base}/api/bill?{query}&format=csv", headers=WHO["acme"]
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in resp.headers["Content-Disposition"]
        csv_text = await resp.text()
    assert "acme-web" in csv_text
    assert "acme-db" in csv_text
    assert_nothing_foreign("acme", csv_text.encode(), "bill csv")
    async with http.get(
        f"{served.base}/api/bill?{query}&format=html", headers=WHO["acme"]
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        html_bytes = await resp.read()
    assert b"acme-web" in html_bytes
    assert_nothing_foreign("acme", html_bytes, "bill html")
    # One bill at a time: another request meanwhile is told to come back.
    async with (
        served.sink.dashboard.desk.bill_lock,
        http.get(f"{served.base}/api/bill?{query}", headers=WHO["acme"]) as resp,
    ):
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2"
    # The operator gets the same bill for acme.
    async with http.get(
        f"{served.base}/api/bill?{query}&format=csv&name=acme", headers=WHO["operator"]
    ) as resp:
        op_csv = await resp.text()
    assert len(op_csv.splitlines()) > 3
    assert _no_dates(op_csv) == _no_dates(csv_text)


def _no_dates(text: str) -> str:
    # The generated-at stamp differs between two renders; nothing else may.
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z?", "", text)


def _number(text: str) -> float:
    match = re.search(r"-?[\d,]*\.?\d+", text)
    assert match, text
    return float(match.group().replace(",", ""))


async def test_the_customer_page_in_chromium_on_a_desk_and_a_phone(
    served: Served, tmp_path: Path
) -> None:
    config, now = served.config, served.now
    tz = ZoneInfo(config.tariffs.timezone)
    previous = period_range("month", now, tz, previous=True)
    expected_wh = stored_kwh(config, OWN["acme"], *previous) * 1000
    async with chromium_page(tmp_path / "chromium") as page:
        await page.send("Network.enable")
        await page.send(
            "Network.setExtraHTTPHeaders",
            headers={"Authorization": WHO["acme"]["Authorization"]},
        )
        await page.navigate(f"{served.base}/")
        await page.wait_for("window.customerPage && window.customerPage.rendered > 0")
        await page.wait_for("window.customerPage.updates > 1")
        assert (
            await page.evaluate("document.getElementById('who').textContent") == "acme"
        )
        shown = await page.evaluate(
            "document.getElementById('previous-kwh').textContent"
        )
        value = _number(shown) * (1000 if shown.endswith(" kWh") else 1)
        assert value == pytest.approx(expected_wh, rel=0.005), shown
        cost = await page.evaluate(
            "document.getElementById('previous-cost').textContent"
        )
        assert _number(cost) == pytest.approx(expected_wh / 1000 * PRICE, abs=0.005)
        rows = await page.evaluate(
            "[...document.querySelectorAll('#servers tbody tr')]"
            ".map(r => r.dataset.sensor)"
        )
        assert rows == ["2", "1"]
        watts = await page.evaluate("document.getElementById('now-watts').textContent")
        assert 300 <= _number(watts) <= 310, watts
        bars = await page.evaluate(
            "document.querySelectorAll('#curve rect.load-bar').length"
        )
        assert bars >= 1
        assert await page.evaluate("!!document.querySelector('#curve path.price')")
        links = await page.evaluate(
            "[...document.querySelectorAll('#bills a.bill-csv')].map(a => a.href)"
        )
        assert len(links) == 12
        bill = await page.evaluate(f"fetch({json.dumps(links[0])}).then(r => r.text())")
        assert "acme-web" in bill
        assert "globex" not in bill
        page_text = await page.evaluate("document.documentElement.outerHTML")
        assert_nothing_foreign("acme", page_text.encode(), "customer page DOM")
        scenarios = await page.evaluate(
            "[...document.querySelectorAll('#compare tbody tr')]"
            ".map(r => r.children[0].textContent)"
        )
        assert len(scenarios) == 4, scenarios  # actual, two halls, shifted
        await page.screenshot(ARTIFACTS / "customer-page.png")

        # The operator opens any customer's page, and sees the same figures.
        await page.send(
            "Network.setExtraHTTPHeaders",
            headers={"Authorization": WHO["operator"]["Authorization"]},
        )
        await page.navigate(f"{served.base}/customer")
        names = await page.wait_for(
            "[...document.querySelectorAll('#customer-list a')].map(a => a.textContent)"
            ".join(',')"
        )
        assert names == "acme,globex"
        await page.navigate(f"{served.base}/customer?name=acme")
        await page.wait_for("window.customerPage && window.customerPage.rendered > 0")
        again = await page.evaluate(
            "document.getElementById('previous-kwh').textContent"
        )
        assert again == shown
        await page.send(
            "Network.setExtraHTTPHeaders",
            headers={"Authorization": WHO["acme"]["Authorization"]},
        )

        # A phone: nothing wider than the screen.
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=390,
            height=844,
            deviceScaleFactor=3,
            mobile=True,
        )
        await page.navigate(f"{served.base}/")
        await page.wait_for("window.customerPage && window.customerPage.rendered > 0")
        widths = await page.evaluate(
            "[window.innerWidth, document.documentElement.scrollWidth,"
            " document.body.scrollWidth]"
        )
        assert widths[0] == 390
        assert max(widths[1:]) <= widths[0], widths
        wide = await page.evaluate(
            "[...document.querySelectorAll('body *')]"
            ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
            ".map(e => e.tagName + '#' + e.id + '.' + e.className)"
        )
        assert wide == []
        await page.screenshot(ARTIFACTS / "customer-page-phone.png")


async def test_a_reload_that_changes_a_customers_secret_ends_its_streams(
    served: Served, http: aiohttp.ClientSession
) -> None:
    old = served.config
    customers = dict(old.web.customers)
    customers["globex"] = customers["globex"].model_copy(
        update={"password": SecretStr("globex-new-password")}
    )
    new = old.model_copy(
        update={"web": old.web.model_copy(update={"customers": customers})}
    )
    url = f"{served.base}/api/events"
    async with (
        http.get(url, headers=WHO["acme"]) as acme,
        http.get(url, headers=WHO["globex"]) as globex,
    ):
        await read_stream(acme, 1)
        await read_stream(globex, 1)
        served.sink.reconfigure(new)
        try:
            # globex's stream ends; acme's goes on.
            while await asyncio.wait_for(globex.content.readany(), 5):
                pass
            await served.sink.write([reading(1, datetime.now(UTC), 111.0)])
            assert b"event: update" in await read_stream(acme, 1)
            async with http.get(
                f"{served.base}/api/state", headers=WHO["globex"]
            ) as resp:
                assert resp.status == 401
            fresh = {"Authorization": basic(GLOBEX_USER, "globex-new-password")}
            async with http.get(f"{served.base}/api/state", headers=fresh) as resp:
                assert resp.status == 200
        finally:
            served.sink.reconfigure(old)
