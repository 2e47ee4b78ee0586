"""The dashboard in headless chromium, against a live daemon fed by simulated meters."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.daemon import meter_sensors
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.services import free_port
from tests.sinks.web.cdp import chromium_page
from wattd.config import Config
from wattd.daemon.supervisor import Supervisor
from wattd.sources.simulate import (
    InductiveLoad,
    MeterModel,
    ResistiveLoad,
    Simulator,
    SmpsLoad,
    run_on_pty,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from tests.fixtures.pty import Pty

ARTIFACTS = REPO_ROOT / "artifacts"

CARDS_JS = """
JSON.stringify([...document.querySelectorAll('.card')].map(c => ({
  sensor: c.dataset.sensor,
  watts: c.querySelector('.watts .value').textContent,
  time: c.dataset.timeMs,
  seen: c.querySelector('.seen').textContent,
})))
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Live:
    """A running daemon, its dashboard's port, and a way to silence its meters."""

    sup: Supervisor
    port: int
    meters: list[MeterModel]
    stop_feed: Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def live_daemon(
    tmp_path: Path, pty: Pty, *, calibrated: bool = True, stale_after_s: float = 30.0
) -> AsyncIterator[Live]:
    meters = [
        MeterModel.with_quirks(1, ResistiveLoad(watts=100.0), seed=21),
        MeterModel.with_quirks(
            2, InductiveLoad(watts=300.0, power_factor=0.7), seed=21
        ),
        MeterModel.with_quirks(3, SmpsLoad(watts=150.0), seed=21),
    ]
    sensors: list[dict[str, Any]]
    if calibrated:
        sensors = meter_sensors(meters)
    else:  # out of the box: names, no calibration at all
        sensors = [{"address": m.address, "name": f"meter-{m.address}"} for m in meters]
    sensors[0].update(rack="A", customer="acme")
    sensors[1].update(rack="A", customer="globex")
    sensors[2].update(rack="B", customer="acme")
    port = free_port()
    config = Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "ports": [{"device": pty.path, "name": "sim"}],
            "sensors": sensors,
            "web": {
                "enabled": True,
                "port": port,
                "push_interval_s": 0.5,
                "stale_after_s": stale_after_s,
            },
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

        async def stop_feed() -> None:
            stop.set()
            await feed

        try:
            yield Live(sup=sup, port=port, meters=meters, stop_feed=stop_feed)
        finally:
            stop.set()
            await feed
            sup.request_stop()
            await asyncio.wait_for(daemon, 30)


NO_VALUE = "\N{EN DASH}"  # what the page shows for a value it does not have
WAVEFORM_LABELS_JS = (
    "[...document.querySelectorAll('#waveform text.label')].map(t => t.textContent)"
)


def by_sensor(cards_json: str) -> dict[str, dict[str, Any]]:
    return {c["sensor"]: c for c in json.loads(cards_json)}


@pytest.mark.services
async def test_dashboard_updates_live_and_draws_the_waveform(
    tmp_path: Path, pty: Pty
) -> None:
    async with (
        live_daemon(tmp_path, pty) as live,
        chromium_page(tmp_path / "chromium") as page,
    ):
        sup = live.sup
        await page.navigate(f"http://127.0.0.1:{live.port}/")
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
        labels = await page.evaluate(WAVEFORM_LABELS_JS)
        assert any(t.startswith("zero ") and t.endswith("(configured)") for t in labels)
        assert not any("estimated" in t or "default" in t for t in labels)
        detail = await page.screenshot(ARTIFACTS / "dashboard-detail.png")
        print(f"screenshot: {detail}")
    assert overview.stat().st_size > 10_000
    assert detail.stat().st_size > 10_000


@pytest.mark.services
async def test_uncalibrated_meters_show_estimated_zeros_and_stale_ones_leave_totals(
    tmp_path: Path, pty: Pty
) -> None:
    async with (
        live_daemon(tmp_path, pty, calibrated=False, stale_after_s=2.0) as live,
        chromium_page(tmp_path / "chromium") as page,
    ):
        await page.navigate(f"http://127.0.0.1:{live.port}/")
        await page.wait_for(
            "[...document.querySelectorAll('.card .watts .value')]"
            ".filter(v => v.dataset.value).length === 3"
        )
        flags = await page.evaluate(
            "[...document.querySelectorAll('.card .flags')].map(f => f.textContent)"
        )
        assert all("zero estimated" in f for f in flags), flags
        # The daemon's status says the same, with the zero in use.
        status = {s.sensor: s for s in live.sup.snapshot().sensors}
        for m in live.meters:
            assert status[m.address].current_zero_estimated
            zero = status[m.address].current_zero_counts
            assert zero == pytest.approx(m.current_zero_counts, abs=0.5)
        # With every meter live, the header counts them all and says nothing else.
        assert await page.evaluate("document.getElementById('total-stale').hidden")
        watts = await page.evaluate("window.wattd.totals.all.watts")
        assert watts == pytest.approx(550.0, rel=0.15)

        # The waveform view labels both lines as estimated, over whole cycles.
        await page.evaluate("location.hash = '#sensor/1'")
        await page.wait_for("!!document.querySelector('#waveform path.current')")
        labels = await page.evaluate(WAVEFORM_LABELS_JS)
        voltage = next(t for t in labels if t.startswith("midline "))
        current = next(t for t in labels if t.startswith("zero "))
        assert voltage.endswith("(estimated)")
        assert current.endswith("(estimated)")
        wave = await page.evaluate(
            "fetch('/api/sensors/1/waveform').then(r => r.json())"
        )
        assert wave["current_zero_source"] == "estimated"
        assert wave["voltage_zero_source"] == "estimated"
        # 18 samples are ~1.5 mains cycles: their plain mean is not the midline.
        kept = wave["voltage_counts"][1:]
        assert abs(wave["voltage_zero"] - sum(kept) / len(kept)) > 0.5
        info = await page.evaluate(
            "document.getElementById('waveform-info').textContent"
        )
        assert "(estimated)" in info
        detail = await page.evaluate(
            "document.getElementById('detail-values').textContent"
        )
        assert "(estimated)" in detail
        await page.screenshot(ARTIFACTS / "dashboard-detail-estimated.png")
        await page.evaluate("location.hash = ''")

        # Small amounts keep two significant digits, side by side.
        money = await page.evaluate(
            "[0.001, 0.0031, 0.05, 0.31, 12.5, 0].map(v => fmtMoney(v, 'EUR'))"
        )
        digits = [m.rstrip().split(".")[-1] for m in money]
        assert digits == ["0010", "0031", "050", "31", "50", "00"], money

        # The meters fall silent: their last readings leave the live totals.
        await live.stop_feed()
        await page.wait_for(
            f"document.getElementById('total-watts').textContent === '{NO_VALUE}'"
        )
        note = await page.evaluate("document.getElementById('total-stale').textContent")
        assert note == "3 stale meters not counted"
        assert not await page.evaluate("document.getElementById('total-stale').hidden")
        racks = await page.evaluate(
            "[...document.querySelectorAll('#racks tbody tr')]"
            ".map(tr => [tr.children[1].textContent, tr.children[2].textContent])"
        )
        assert racks == [["2 (2 stale)", NO_VALUE], ["1 (1 stale)", NO_VALUE]]
        shot = await page.screenshot(ARTIFACTS / "dashboard-stale.png")
        print(f"screenshot: {shot}")
