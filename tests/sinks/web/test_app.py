"""The web sink's HTTP side against a real server on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.services import free_port
from tests.fixtures.snapshots import daemon_snapshot
from tests.fixtures.waiting import wait_until
from wattd.config import Config, parse_config
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.core.readings import FrameRecord, Reading
from wattd.errors import ConfigError, SinkUnavailable
from wattd.sinks.web.app import Dashboard
from wattd.sinks.web.board import local_day_start
from wattd.sinks.web.hub import format_event
from wattd.sinks.web.sink import WebSink
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator
from wattd.storage.store import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def make_config(tmp_path: Path, **web: Any) -> Config:
    web_cfg: dict[str, Any] = {
        "enabled": True,
        "port": free_port(),
        "push_interval_s": 0.1,
    }
    web_cfg.update(web)
    return Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "sensors": [
                {"address": 1, "name": "web-1", "rack": "A", "customer": "acme"},
                {"address": 3, "name": "fridge", "rack": "B"},
            ],
            "web": web_cfg,
        }
    )


def reading(sensor: int, at: datetime, watts: float, wh_delta: float = 0.1) -> Reading:
    return Reading(
        sensor=sensor,
        name=f"s{sensor}",
        time=at,
        monotonic_s=at.timestamp(),
        watts=watts,
        va=watts,
        vrms=120.0,
        irms=watts / 120.0,
        power_factor=1.0,
        wh_total=500.0 + wh_delta,
        wh_delta=wh_delta,
        rssi_dbm=-55,
    )


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[WebSink, str]]:
    """A started web sink with its run() task, stopped like the daemon does."""
    sink = WebSink(config)
    sink.attach(daemon_snapshot)
    await sink.start()
    task = asyncio.create_task(sink.run())
    try:
        assert sink.url is not None
        yield sink, sink.url.rstrip("/")
    finally:
        await sink.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def read_event(resp: aiohttp.ClientResponse) -> tuple[str, dict[str, Any]]:
    """The next SSE message (comments and retry lines skipped)."""
    event = "message"
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode()
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            await resp.content.readline()  # the blank line ending the message
            return event, data


async def test_page_state_stream_and_waveform(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    now = datetime.now(UTC)
    async with serving(config) as (sink, base), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as resp:
            assert resp.status == 200
            page = await resp.text()
            assert '<script src="/static/app.js"' in page
        for asset in ("app.js", "style.css"):
            async with http.get(f"{base}/static/{asset}") as resp:
                assert resp.status == 200
                assert len(await resp.read()) > 1000
        async with http.get(f"{base}/api/state") as resp:
            state = await resp.json()
        # Configured sensors have cards before any reading.
        assert [s["sensor"] for s in state["sensors"]] == [1, 3]
        assert state["sensors"][0]["time_ms"] is None
        assert state["health"]["ports"][0]["name"] == "rx"
        assert state["health"]["sinks"][1]["spool_depth"] == 321.0
        assert state["settings"]["stale_after_s"] == config.web.stale_after_s

        async with http.get(f"{base}/api/events") as events:
            assert events.headers["Content-Type"] == "text/event-stream"
            kind, first = await read_event(events)
            assert kind == "snapshot"
            assert len(first["sensors"]) == 2
            await sink.write([reading(1, now, 250.0, wh_delta=0.25)])
            while True:
                kind, update = await read_event(events)
                assert kind == "update"
                if update["sensors"]:
                    break
            card = update["sensors"][0]
            assert card["sensor"] == 1
            assert card["watts"] == 250.0
            assert card["kwh_today"] == pytest.approx(0.00025)
            assert update["totals"]["racks"]["A"]["watts"] == 250.0
            assert update["totals"]["customers"]["acme"]["sensors"] == 1
            assert sink.stats()["clients"] == 1

        async with http.get(f"{base}/api/sensors/3/waveform") as resp:
            assert resp.status == 404
        model = MeterModel.with_quirks(3, ResistiveLoad(watts=500.0), seed=1)
        frame = Simulator([model], seed=1).next_frame()
        (decoded,) = FrameDecoder(1).feed(frame.frame)
        assert isinstance(decoded, IoSampleFrame)
        await sink.write_frames(
            [FrameRecord(time=now, port="rx", api_mode=1, kind="io",
                         raw=frame.frame, sensor=3, io_frame=decoded)]
        )  # fmt: skip
        async with http.get(f"{base}/api/sensors/3/waveform") as resp:
            wave = await resp.json()
        assert wave["voltage_counts"] == list(frame.voltage_counts)
        assert wave["current_counts"] == list(frame.current_counts)
        async with http.get(f"{base}/api/sensors/x/waveform") as resp:
            assert resp.status == 400
        async with http.get(f"{base}/healthz") as resp:
            assert await resp.json() == {"status": "ok"}


async def test_metrics_endpoint_parses_with_the_prometheus_parser(
    tmp_path: Path,
) -> None:
    async with (
        serving(make_config(tmp_path)) as (_sink, base),
        aiohttp.ClientSession() as http,
        http.get(f"{base}/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    power = families["wattd_power_watts"]
    assert power.type == "gauge"
    assert power.samples[0].labels["rack"] == "A"
    assert power.samples[0].value == 123.5
    energy = families["wattd_energy_joules"]
    assert energy.type == "counter"
    assert energy.samples[0].name == "wattd_energy_joules_total"
    assert energy.samples[0].value == 2.5 * 3600
    frames = families["wattd_frames"]
    ok = [s for s in frames.samples if s.labels == {"port": "rx", "result": "ok"}]
    assert ok[0].value == 97
    assert families["process_resident_memory_bytes"].samples[0].value > 0


async def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    async with (
        serving(make_config(tmp_path, metrics=False)) as (_sink, base),
        aiohttp.ClientSession() as http,
        http.get(f"{base}/metrics") as resp,
    ):
        assert resp.status == 404


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_token_basic_and_cookie_auth(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-token\n")
    config = make_config(
        tmp_path, token_file=str(token_file), username="ops", password="pa55"
    )
    async with serving(config) as (_sink, base):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/state") as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Basic")
                assert "s3cr3t" not in await resp.text()
            for header in (
                "Bearer s3cr3t-token",
                basic("ops", "pa55"),
            ):
                async with http.get(
                    f"{base}/api/state", headers={"Authorization": header}
                ) as resp:
                    assert resp.status == 200, header
            for header in (
                "Bearer nope",
                basic("ops", "wrong"),
                basic("nobody", "pa55"),
                "Basic !!!not-base64",
            ):
                async with http.get(
                    f"{base}/metrics", headers={"Authorization": header}
                ) as resp:
                    assert resp.status == 401, header
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200  # liveness needs no credentials
        # A browser opens the page once with ?token= and then lives on a cookie.
        # (Like a browser, keep cookies for an IP address host.)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            async with browser.get(
                f"{base}/?token=s3cr3t-token&x=1", allow_redirects=False
            ) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == "/?x=1"
                cookie = resp.cookies["wattd_session"]
                assert cookie["httponly"]
                assert cookie["samesite"] == "Strict"
                assert "s3cr3t-token" not in cookie.value
            async with browser.get(f"{base}/api/state") as resp:
                assert resp.status == 200
            async with browser.get(
                f"{base}/?token=wrong", allow_redirects=False
            ) as resp:
                assert resp.status == 401


async def test_reload_swaps_the_token_at_once(tmp_path: Path) -> None:
    config = make_config(tmp_path, token="old-token")
    async with serving(config) as (sink, base), aiohttp.ClientSession() as http:
        data = config.model_dump(mode="json")
        data["web"]["token"] = "new-token"
        new = Config.model_validate(data)
        sink.reconfigure(new)
        async with http.get(
            f"{base}/api/state", headers={"Authorization": "Bearer old-token"}
        ) as resp:
            assert resp.status == 401
        async with http.get(
            f"{base}/api/state", headers={"Authorization": "Bearer new-token"}
        ) as resp:
            assert resp.status == 200


async def test_reload_moves_the_server_to_a_new_port(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with serving(config) as (sink, base), aiohttp.ClientSession() as http:
        port = free_port()
        data = config.model_dump(mode="json")
        data["web"]["port"] = port
        sink.reconfigure(Config.model_validate(data))
        moved = f"http://127.0.0.1:{port}/"
        await wait_until(lambda: sink.url == moved, timeout_s=5, what="the new port")
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{base}/healthz"):
                pass


def test_a_non_local_bind_without_credentials_is_refused(tmp_path: Path) -> None:
    text = "web:\n  enabled: true\n  host: 0.0.0.0\n  port: 8080\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "wattd.yaml")
    message = str(info.value)
    assert "wattd.yaml:1: web:" in message
    assert "reachable from other machines" in message
    assert "token" in message
    # With a token it is accepted; a loopback bind needs nothing.
    parse_config(text + "  token: abc\n")
    parse_config("web:\n  enabled: true\n  host: '::1'\n")
    with pytest.raises(ConfigError, match="username and password go together"):
        parse_config("web:\n  username: ops\n")


async def test_a_busy_port_is_a_retryable_error_naming_the_address(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", config.web.port))
        blocker.listen()
        sink = WebSink(config)
        with pytest.raises(SinkUnavailable) as info:
            await sink.start()
    assert f"127.0.0.1:{config.web.port}" in str(info.value)
    assert "web.port" in str(info.value)
    await sink.start()  # the port is free again: the retry works
    await sink.stop()


async def test_history_and_todays_energy_come_from_the_store(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    midnight = local_day_start(now, ZoneInfo("UTC"))
    # Readings every 30 s over the last 40 minutes, but none before midnight.
    start = max(now - timedelta(minutes=40), midnight + timedelta(seconds=30))
    times = []
    t = start
    while t < now - timedelta(seconds=5):
        times.append(t)
        t += timedelta(seconds=30)
    delta_wh = 100.0 * 30 / 3600
    with Store.open(config.store_path) as store:
        store.insert_readings(
            [
                reading(1, t, 100.0 + i % 3, wh_delta=delta_wh)
                for i, t in enumerate(times)
            ]
        )
    async with serving(config) as (_sink, base), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/state") as resp:
            state = await resp.json()
        card = next(s for s in state["sensors"] if s["sensor"] == 1)
        # (The store may or may not count the first reading's delta: one
        # reading's worth of slack.)
        assert card["kwh_today"] * 1000 == pytest.approx(
            len(times) * delta_wh, abs=1.01 * delta_wh
        )
        async with http.get(f"{base}/api/history?hours=24") as resp:
            spark = await resp.json()
        assert spark["bucket_ms"] == 600_000
        points = spark["series"]["1"]
        assert 1 <= len(points) <= 6
        assert all(100.0 <= w <= 102.0 for _, w in points)
        async with http.get(f"{base}/api/history?hours=24&sensor=1") as resp:
            detail = await resp.json()
        assert detail["bucket_ms"] == 60_000
        assert len(detail["series"]["1"]) >= len(times) // 2
        async with http.get(f"{base}/api/history?hours=-3") as resp:
            assert resp.status == 400


def test_the_streamed_update_event_matches_the_update_document(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    streamed, whole = (
        Dashboard(config, snapshot=daemon_snapshot, clock=lambda: at) for _ in range(2)
    )
    for step in range(3):
        for dash in (streamed, whole):
            dash.board.add(reading(1, at + timedelta(seconds=step), 100.0 + step))
            dash.board.add(reading(7, at + timedelta(seconds=step), 5.5))
        event = streamed.update_event()
        assert event == format_event("update", whole.update_json())
        assert json.loads(event.split(b"data: ", 1)[1])["sensors"]
    # Nothing changed since: both send no cards.
    assert streamed.update_event() == format_event("update", whole.update_json())
