"""The dashboard in headless chromium, against a live daemon fed by simulated meters."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.daemon import meter_sensors
from tests.fixtures.services import free_port
from tests.web.cdp import chromium_page
from wattd.config import Config
from wattd.simulate import (
    InductiveLoad,
    MeterModel,
    ResistiveLoad,
    Simulator,
    SmpsLoad,
    run_on_pty,
)
from wattd.supervisor import Supervisor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.fixtures.pty import Pty

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

CARDS_JS = """
JSON.stringify([...document.querySelectorAll('.card')].map(c => ({
  sensor: c.dataset.sensor,
  watts: c.querySelector('.watts .value').textContent,
  time: c.dataset.timeMs,
  seen: c.querySelector('.seen').textContent,
})))
"""


@contextlib.asynccontextmanager
async def live_daemon(
    tmp_path: Path, pty: Pty
) -> AsyncIterator[tuple[Supervisor, int]]:
    meters = [
        MeterModel.with_quirks(1, ResistiveLoad(watts=100.0), seed=21),
        MeterModel.with_quirks(
            2, InductiveLoad(watts=300.0, power_factor=0.7), seed=21
        ),
        MeterModel.with_quirks(3, SmpsLoad(watts=150.0), seed=21),
    ]
    sensors = meter_sensors(meters)
    sensors[0].update(rack="A", customer="acme")
    sensors[1].update(rack="A", customer="globex")
    sensors[2].update(rack="B", customer="acme")
    port = free_port()
    config = Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "ports": [{"device": pty.path, "name": "sim"}],
            "sensors": sensors,
            "web": {"enabled": True, "port": port, "push_interval_s": 0.5},
            "tariffs": {
                "default": "flat",
                "plans": {"flat": {"currency": "EUR", "price_per_kwh": 0.25}},
            },
        }
    )
    sup = Supervisor(config, flush_timeout_s=5)
    stop = asyncio.Event()
    sim = Simulator(meters, seed=8)
    async with asyncio.TaskGroup() as tg:
        daemon = tg.create_task(sup.run())
        await asyncio.wait_for(sup.ready.wait(), 10)
        # Four times real time: each meter sends a frame every ~0.5 s.
        feed = tg.create_task(run_on_pty(sim, pty.master, speed=4.0, stop_event=stop))
        try:
            yield sup, port
        finally:
            stop.set()
            await feed
            sup.request_stop()
            await asyncio.wait_for(daemon, 30)


def by_sensor(cards_json: str) -> dict[str, dict[str, Any]]:
    return {c["sensor"]: c for c in json.loads(cards_json)}


@pytest.mark.services
async def test_dashboard_updates_live_and_draws_the_waveform(
    tmp_path: Path, pty: Pty
) -> None:
    async with (
        live_daemon(tmp_path, pty) as (sup, port),
        chromium_page(tmp_path / "chromium") as page,
    ):
        await page.navigate(f"http://127.0.0.1:{port}/")
        # Every card shows a number once the first readings arrived.
        await page.wait_for(
            "[...document.querySelectorAll('.card .watts .value')]"
            ".filter(v => v.dataset.value).length === 3"
        )
        await page.wait_for("document.getElementById('conn').textContent === 'live'")
        await page.evaluate("window.__sameDocument = true")
        first = by_sensor(await page.evaluate(CARDS_JS))
        updates_before = await page.evaluate("window.wattd.updates")
        await asyncio.sleep(3.0)
        second = by_sensor(await page.evaluate(CARDS_JS))
        # No reload happened (the marker survives), yet the values moved on.
        assert await page.evaluate("window.__sameDocument") is True
        assert await page.evaluate("window.wattd.updates") > updates_before + 2
        assert set(first) == set(second) == {"1", "2", "3"}
        for sensor in first:
            assert int(second[sensor]["time"]) > int(first[sensor]["time"]), sensor
        assert any(first[s]["watts"] != second[s]["watts"] for s in first)
        # The cards show what the daemon measured.
        snap = {s.sensor: s for s in sup.snapshot().sensors}
        shown = float(second["2"]["watts"].replace(",", ""))
        assert shown == pytest.approx(snap[2].watts, rel=0.2)
        assert shown == pytest.approx(300.0, rel=0.1)
        assert "last seen" in second["1"]["seen"]
        # Totals per rack and customer, and the health panel.
        racks = await page.evaluate(
            "[...document.querySelectorAll('#racks tbody tr td:first-child')]"
            ".map(td => td.textContent)"
        )
        assert racks == ["A", "B"]
        customers = await page.evaluate(
            "[...document.querySelectorAll('#customers tbody tr')]"
            ".map(tr => tr.children[0].textContent + ':' + tr.children[1].textContent)"
        )
        assert customers == ["acme:2", "globex:1"]
        port_row = await page.evaluate(
            "[...document.querySelectorAll('#ports tbody td')]"
            ".map(td => td.textContent)"
        )
        assert port_row[:2] == ["sim", "up"]
        assert (
            await page.evaluate("document.getElementById('total-cost-wrap').hidden")
            is False
        )
        overview = await page.screenshot(ARTIFACTS / "dashboard-overview.png")
        print(f"screenshot: {overview}")

        # The detail view, reached without a reload, draws the last raw frame.
        await page.evaluate("location.hash = '#sensor/2'")
        path_d = await page.wait_for(
            "document.querySelector('#waveform path.voltage')?.getAttribute('d')"
        )
        assert path_d.count("L") == 17  # samples 1..18 joined; sample 0 is apart
        circles = await page.evaluate(
            "document.querySelectorAll('#waveform circle.current').length"
        )
        assert circles == 19
        current_d = await page.evaluate(
            "document.querySelector('#waveform path.current').getAttribute('d')"
        )
        assert current_d.count("L") == 17
        assert await page.evaluate("window.__sameDocument") is True
        title = await page.evaluate(
            "document.getElementById('detail-title').textContent"
        )
        assert title == "meter-2 (#2)"
        detail = await page.screenshot(ARTIFACTS / "dashboard-detail.png")
        print(f"screenshot: {detail}")
    assert overview.stat().st_size > 10_000
    assert detail.stat().st_size > 10_000
