from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wattd.config import Config, pipeline_settings
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.core.pipeline import ReadingPipeline
from wattd.core.readings import Flag, FrameRecord, Reading
from wattd.sinks.web.board import LiveBoard, local_day_start
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator


def config(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "sensors": [
            {"address": 1, "name": "a", "rack": "R1", "customer": "acme"},
            {"address": 2, "name": "b", "rack": "R1", "customer": "globex"},
            {"address": 3, "name": "c", "rack": "R2", "customer": "acme",
             "current_zero": 480.5},
        ],
    }  # fmt: skip
    data.update(extra)
    return Config.model_validate(data)


def reading(sensor: int, at: datetime, *, watts: float, wh_delta: float,
            **kw: Any) -> Reading:  # fmt: skip
    base: dict[str, Any] = {
        "sensor": sensor,
        "name": f"s{sensor}",
        "time": at,
        "monotonic_s": at.timestamp(),
        "watts": watts,
        "va": watts,
        "vrms": 120.0,
        "irms": watts / 120.0,
        "power_factor": 1.0,
        "wh_total": 1000.0,
        "wh_delta": wh_delta,
        "rssi_dbm": -60,
    }
    base.update(kw)
    return Reading(**base)


T0 = datetime(2024, 3, 9, 12, 0, tzinfo=UTC)


def test_today_sums_deltas_and_splits_the_one_straddling_midnight() -> None:
    board = LiveBoard(config(tariffs={"timezone": "America/New_York"}))
    tz_midnight = local_day_start(T0, board._tz)  # 05:00 UTC in March (EST)
    assert tz_midnight == datetime(2024, 3, 9, 5, 0, tzinfo=UTC)
    board.add(reading(1, tz_midnight - timedelta(seconds=30), watts=60, wh_delta=2.0))
    board.add(reading(1, tz_midnight - timedelta(seconds=10), watts=60, wh_delta=3.0))
    assert board.today_wh(1, tz_midnight - timedelta(seconds=1)) == pytest.approx(5.0)
    # 20 s interval, 10 s of it after midnight: half of the 4 Wh is today's.
    board.add(reading(1, tz_midnight + timedelta(seconds=10), watts=60, wh_delta=4.0))
    board.add(reading(1, tz_midnight + timedelta(seconds=30), watts=60, wh_delta=1.5))
    assert board.today_wh(1, tz_midnight + timedelta(minutes=1)) == pytest.approx(3.5)
    card = board.sensor_json(1)
    assert card["kwh_today"] == pytest.approx(0.0035)
    # Days roll over at each local midnight; 2024-03-10 is 23 h long (the
    # clocks go forward), so the midnight after it is at 04:00 UTC.
    for midnight in (
        datetime(2024, 3, 10, 5, 0, tzinfo=UTC),
        datetime(2024, 3, 11, 4, 0, tzinfo=UTC),
    ):
        board.add(reading(1, midnight - timedelta(seconds=5), watts=60, wh_delta=0.2))
        board.add(reading(1, midnight + timedelta(seconds=15), watts=60, wh_delta=2.0))
        later = midnight + timedelta(seconds=20)
        assert board.today_wh(1, later) == pytest.approx(1.5), midnight


def test_seed_from_the_store_adds_to_later_readings() -> None:
    board = LiveBoard(config())
    board.seed_today({1: 120.0, 9: 3.0}, as_of=T0)
    board.add(reading(1, T0 + timedelta(seconds=2), watts=100, wh_delta=0.5))
    assert board.today_wh(1, T0 + timedelta(seconds=3)) == pytest.approx(120.5)
    # A sensor that is neither configured nor heard yet but has stored energy.
    assert 9 in board.sensors()
    assert board.sensor_json(9)["kwh_today"] == pytest.approx(0.003)
    # Stored energy of yesterday does not count tomorrow.
    assert board.today_wh(1, T0 + timedelta(days=1)) == 0.0


def test_cards_totals_and_changes() -> None:
    board = LiveBoard(config())
    assert board.take_changed()  # every configured sensor starts as changed
    assert board.take_changed() == []
    board.add(
        reading(1, T0, watts=100.0, wh_delta=1.0, cost_today=0.12, currency="EUR")
    )
    board.add(reading(2, T0, watts=50.5, wh_delta=2.0, flags=frozenset({Flag.CLIPPED})))
    board.add(reading(3, T0, watts=10.0, wh_delta=3.0, cost_today=0.01, currency="EUR"))
    board.add(reading(7, T0, watts=1.0, wh_delta=0.0, labels={"rack": "R9"}))
    changed = board.take_changed()
    assert [c["sensor"] for c in changed] == [1, 2, 3, 7]
    assert board.take_changed() == []
    card = board.sensor_json(2)
    assert card["name"] == "b"
    assert card["rack"] == "R1"
    assert card["flags"] == ["clipped"]
    assert card["configured"] is True
    unknown = board.sensor_json(7)
    assert unknown["configured"] is False
    assert unknown["name"] == "s7"  # the reading's name for an unconfigured meter
    assert unknown["rack"] == "R9"
    totals = board.totals(T0)
    assert totals["all"]["sensors"] == 4
    assert totals["all"]["watts"] == pytest.approx(161.5)
    assert totals["racks"]["R1"]["watts"] == pytest.approx(150.5)
    assert totals["racks"]["R1"]["kwh_today"] == pytest.approx(0.003)
    assert totals["customers"]["acme"]["cost_today"] == pytest.approx(0.13)
    assert totals["customers"]["acme"]["currency"] == "EUR"
    assert totals["customers"]["globex"]["cost_today"] is None
    # A configured sensor that was never heard still gets a card.
    fresh = LiveBoard(config())
    assert [c["sensor"] for c in fresh.full()] == [1, 2, 3]
    assert fresh.sensor_json(3)["time_ms"] is None


def test_older_readings_do_not_replace_newer_ones() -> None:
    board = LiveBoard(config())
    board.add(reading(1, T0, watts=100.0, wh_delta=1.0))
    board.add(reading(1, T0 - timedelta(seconds=5), watts=5.0, wh_delta=1.0))
    assert board.sensor_json(1)["watts"] == 100.0


def test_waveform_is_the_last_io_frame_decoded() -> None:
    board = LiveBoard(config())
    model = MeterModel.with_quirks(3, ResistiveLoad(watts=200.0), seed=2)
    sim = Simulator([model], seed=2, api_mode=2)
    frames = [sim.next_frame() for _ in range(3)]
    for f in frames:
        (event,) = FrameDecoder(2).feed(f.frame)
        assert isinstance(event, IoSampleFrame)
        board.add_frame(FrameRecord(time=T0, port="p", api_mode=2, kind="io",
                                    raw=f.frame, sensor=3, io_frame=event))  # fmt: skip
    board.add_frame(FrameRecord(time=T0, port="p", api_mode=2, kind="bad_checksum",
                                raw=b"\x7e\x00", sensor=None))  # fmt: skip
    wave = board.waveform(3)
    assert wave is not None
    assert wave["voltage_counts"] == list(frames[-1].voltage_counts)
    assert wave["current_counts"] == list(frames[-1].current_counts)
    assert wave["current_zero"] == 480.5
    assert wave["current_zero_source"] == "configured"
    # Means over whole mains cycles, as the figures use: the plain mean of the
    # 18 samples (about 1.5 cycles) is off by much more.
    assert wave["current_mean"] == pytest.approx(model.current_zero_counts, abs=1.0)
    assert wave["voltage_zero"] == pytest.approx(model.voltage_zero_counts, abs=2.5)
    assert wave["voltage_zero_source"] == "estimated"
    decoded = FrameDecoder(2).feed(frames[-1].frame)
    assert isinstance(decoded[0], IoSampleFrame)
    assert wave["rssi_dbm"] == decoded[0].rssi_dbm
    assert board.waveform(1) is None


def test_updates_carry_whole_cards_only_for_new_or_reloaded_sensors() -> None:
    board = LiveBoard(config())
    assert {c["sensor"] for c in board.full()} == {1, 2, 3}
    board.take_changed()
    board.add(reading(1, T0, watts=10.0, wh_delta=0.1))
    board.add(reading(8, T0, watts=20.0, wh_delta=0.1))  # never announced
    first = {c["sensor"]: c for c in board.take_changed()}
    assert "name" not in first[1]  # the page already has sensor 1's card
    assert first[1]["watts"] == 10.0
    assert first[8]["name"] == "s8"  # a newcomer comes whole
    board.add(reading(8, T0 + timedelta(seconds=2), watts=21.0, wh_delta=0.1))
    assert "name" not in board.take_changed()[0]
    # A reload may rename meters: the next update sends whole cards again.
    board.reconfigure(config(sensors=[{"address": 1, "name": "renamed"}]))
    after = {c["sensor"]: c for c in board.take_changed()}
    assert after[1]["name"] == "renamed"


def test_a_meter_silent_since_midnight_shows_nothing_today() -> None:
    board = LiveBoard(config())
    board.add(reading(1, T0, watts=100.0, wh_delta=5.0))
    board.add(reading(2, T0, watts=100.0, wh_delta=5.0))
    assert board.sensor_json(1)["kwh_today"] == pytest.approx(0.005)
    # Sensor 2 reports after midnight (UTC here); sensor 1 stays silent.
    board.add(reading(2, T0 + timedelta(days=1), watts=100.0, wh_delta=1.0))
    assert board.sensor_json(1)["kwh_today"] == 0.0
    assert board.totals(T0 + timedelta(days=1))["racks"]["R1"]["kwh_today"] > 0


def test_waveform_shows_the_zeros_the_figures_use() -> None:
    cfg = config(
        sensors=[
            {"address": 1, "name": "lamp"},
            {"address": 2, "name": "fixed", "counts_per_volt": 2.0,
             "voltage_zero": 515.0},
        ]
    )  # fmt: skip
    board = LiveBoard(cfg)
    pipeline = ReadingPipeline(pipeline_settings(cfg))
    lamp = dataclasses.replace(
        MeterModel.with_quirks(1, ResistiveLoad(watts=60.0), seed=4),
        current_zero_counts=481.0,
    )
    other = MeterModel.with_quirks(2, ResistiveLoad(watts=60.0), seed=4)
    sim = Simulator([lamp, other], seed=4)
    decoder = FrameDecoder(sim.api_mode)
    for f in sim.advance(60.0):
        (event,) = decoder.feed(f.frame)
        assert isinstance(event, IoSampleFrame)
        at = T0 + timedelta(seconds=f.time_s)
        record = FrameRecord(time=at, port="p", api_mode=sim.api_mode, kind="io",
                             raw=f.frame, sensor=f.address, io_frame=event)  # fmt: skip
        board.add_frame(record)
        if f.address == 1:  # sensor 2 is heard, but has no reading yet
            r = pipeline.process(event, time=at, monotonic_s=f.time_s)
            assert r is not None
            board.add(r)
    wave = board.waveform(1)
    assert wave is not None
    assert wave["current_zero_source"] == "estimated"
    assert wave["current_zero"] == pytest.approx(481.0, abs=0.3)
    assert wave["current_mean"] == pytest.approx(481.0, abs=1.0)
    assert wave["voltage_zero_source"] == "estimated"
    card = board.sensor_json(1)
    assert card["current_zero"] == wave["current_zero"]
    assert "zero_estimated" in card["flags"]
    fixed = board.waveform(2)
    assert fixed is not None
    assert fixed["current_zero_source"] == "default"
    assert fixed["current_zero"] == 492.0
    assert fixed["voltage_zero_source"] == "configured"
    assert fixed["voltage_zero"] == 515.0


def test_stale_meters_are_left_out_of_live_power() -> None:
    board = LiveBoard(config(web={"stale_after_s": 30}))
    board.add(reading(1, T0, watts=100.0, wh_delta=1.0))
    board.add(reading(2, T0, watts=50.0, wh_delta=2.0))
    board.add(reading(3, T0, watts=20.0, wh_delta=3.0))
    fresh = board.totals(T0 + timedelta(seconds=10))
    assert fresh["all"]["watts"] == pytest.approx(170.0)
    assert fresh["all"]["stale"] == 0
    # Only sensor 1 is heard again; 2 and 3 fall silent.
    board.add(reading(1, T0 + timedelta(seconds=25), watts=110.0, wh_delta=1.0))
    some = board.totals(T0 + timedelta(seconds=40))
    assert some["all"]["watts"] == pytest.approx(110.0)
    assert some["all"]["stale"] == 2
    assert some["all"]["sensors"] == 3
    assert some["all"]["kwh_today"] == pytest.approx(0.007)  # energy still counts
    assert some["racks"]["R1"]["watts"] == pytest.approx(110.0)
    assert some["racks"]["R1"]["stale"] == 1
    assert some["racks"]["R2"]["watts"] is None
    assert some["customers"]["acme"]["watts"] == pytest.approx(110.0)
    # Every meter silent (the link is down): no live power to speak of.
    gone = board.totals(T0 + timedelta(minutes=5))
    assert gone["all"]["watts"] is None
    assert gone["all"]["stale"] == 3
    assert gone["customers"]["globex"]["watts"] is None
    # A configured meter never heard is neither live nor stale.
    never = LiveBoard(config()).totals(T0)
    assert never["all"] == {"sensors": 3, "stale": 0, "watts": None,
                            "kwh_today": 0.0, "cost_today": None}  # fmt: skip


def test_small_costs_are_not_rounded_away() -> None:
    board = LiveBoard(config())
    board.add(reading(1, T0, watts=60.0, wh_delta=0.1, cost_today=0.000025,
                      currency="EUR"))  # fmt: skip
    assert board.sensor_json(1)["cost_today"] == pytest.approx(0.000025)
    assert board.totals(T0)["all"]["cost_today"] == pytest.approx(0.000025)
