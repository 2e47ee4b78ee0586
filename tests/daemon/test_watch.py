from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.daemon import (
    MeterFeed,
    meter_sensors,
    running_supervisor,
    write_config,
)
from tests.fixtures.sinks import RecordingSink
from tests.fixtures.waiting import wait_until
from wattd.config import load_config
from wattd.daemon.supervisor import Supervisor
from wattd.daemon.watch import FileWatch
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.pty import Pty
    from wattd.core.readings import Reading


def price_file(path: Path, price: float) -> None:
    """Hourly rows at one price from two hours ago to three hours ahead."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = [f"{(hour + timedelta(hours=h)).isoformat()},{price}" for h in range(-2, 4)]
    path.write_text("start,price_per_kwh\n" + "\n".join(rows) + "\n")


def config_dict(tmp_path: Path, check_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "tariffs": {
            "default": "spot",
            "reload_check_s": check_s,
            "plans": {"spot": {"price_per_kwh": 9.0, "price_file": "prices.csv"}},
        },
        **extra,
    }


def test_a_changed_file_is_noticed_once_per_interval(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    price_file(prices, 0.10)
    config = load_config(write_config(tmp_path / "w.yaml", config_dict(tmp_path, 30)))
    watch = FileWatch(config, 0.0)
    assert watch.changed(config, 31.0) == []  # nothing changed yet
    price_file(prices, 0.125)
    assert watch.changed(config, 40.0) == []  # not due: 9 s since the last look
    assert watch.changed(config, 61.0) == [prices]
    assert watch.changed(config, 92.0) == []
    prices.unlink()
    assert watch.changed(config, 123.0) == [prices]


async def test_live_cost_takes_a_rewritten_price_file_mid_day(
    tmp_path: Path, pty: Pty
) -> None:
    meter = MeterModel.with_quirks(4, ResistiveLoad(watts=500.0), seed=3)
    prices = tmp_path / "prices.csv"
    price_file(prices, 0.10)
    path = write_config(
        tmp_path / "wattd.yaml",
        config_dict(
            tmp_path,
            0.2,
            ports=[{"device": pty.path}],
            sensors=meter_sensors([meter]),
        ),
    )
    sink = RecordingSink("rec")
    sup = Supervisor(
        load_config(path),
        config_path=path,
        sink_factory=lambda _config: [sink],
        flush_timeout_s=2,
    )

    def seen() -> list[Reading]:
        return [r for batch in sink.batches for r in batch]

    feed = MeterFeed(Simulator([meter], seed=5), pty.master, speed=4.0).start()
    try:
        async with running_supervisor(sup):
            await wait_until(
                lambda: sum(r.price_per_kwh == 0.10 for r in seen()) >= 3,
                what="readings priced from the first file",
            )
            price_file(prices, 0.50)
            await wait_until(
                lambda: any(r.price_per_kwh == 0.50 for r in seen()),
                what="a reading priced from the rewritten file",
            )
    finally:
        feed.stop()
    readings = seen()
    before = [r for r in readings if r.price_per_kwh == 0.10]
    after = [r for r in readings if r.price_per_kwh == 0.50]
    assert {r.price_band for r in after} == {"market"}
    last = after[-1]
    assert last.watts is not None
    assert last.cost_per_hour == pytest.approx(last.watts / 1000 * 0.50)
    # Today's total carries on across the reload, now rising at the new price.
    assert before[-1].cost_today is not None
    assert last.cost_today is not None
    assert last.cost_today > before[-1].cost_today
    assert readings.index(after[0]) > readings.index(before[-1])
