"""Frames to readings: calibration lookup, energy, drift, state, unknown sensors."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from wattd.config import Config, parse_config
from wattd.frames import FrameDecoder, encode_frame
from wattd.iosample import IoSampleFrame, encode_rx16_io
from wattd.pipeline import PipelineState, ReadingPipeline
from wattd.readings import Flag
from wattd.simulate import IDLE, InductiveLoad, MeterModel, ResistiveLoad, Simulator

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def config_for(*meters: MeterModel, extra: str = "") -> Config:
    lines = ["sensors:"]
    for m in meters:
        cal = m.calibration_values()
        lines += [
            f"  - address: {m.address}",
            f"    name: meter-{m.address}",
            f"    current_zero: {cal['current_zero']}",
            f"    counts_per_volt: {cal['counts_per_volt']}",
            f"    voltage_zero: {cal['voltage_zero']}",
            "    rack: r1",
            extra,
        ]
    return parse_config("\n".join(lines))


def run(
    pipeline: ReadingPipeline, sim: Simulator, until_s: float, start_s: float = 0.0
):
    decoder = FrameDecoder(sim.api_mode)
    out = []
    for f in sim.advance(until_s):
        for ev in decoder.feed(f.data):
            assert isinstance(ev, IoSampleFrame)
            r = pipeline.process(
                ev,
                time=T0 + timedelta(seconds=f.time_s),
                monotonic_s=start_s + f.time_s,
            )
            assert r is not None
            out.append((f, r))
    return out


def meter(address: int, load, seed: int = 1) -> MeterModel:
    return MeterModel.with_quirks(address, load, seed=seed)


def test_readings_track_the_truth_per_sensor():
    meters = [
        meter(1, ResistiveLoad(watts=500)),
        meter(2, InductiveLoad(watts=300, power_factor=0.6)),
    ]
    sim = Simulator(meters, seed=3)
    pipe = ReadingPipeline(config_for(*meters))
    pairs = run(pipe, sim, 300.0)
    for m in meters:
        mine = [(f, r) for f, r in pairs if r.sensor == m.address]
        assert len(mine) > 100
        watts = statistics.fmean(r.watts for _, r in mine)
        truth = statistics.fmean(f.true_watts for f, _ in mine)
        assert watts == pytest.approx(truth, rel=0.02)
        vrms = statistics.fmean(r.vrms for _, r in mine)
        assert vrms == pytest.approx(m.vrms, rel=0.01)
        first, last = mine[0][0].time_s, mine[-1][0].time_s
        assert mine[-1][1].wh_total == pytest.approx(
            m.true_energy_wh(first, last), rel=0.02
        )
        assert all(r.name == f"meter-{m.address}" for _, r in mine)
        assert all(r.labels == {"rack": "r1"} for _, r in mine)
        assert not any(Flag.UNKNOWN_SENSOR in r.flags for _, r in mine)
    # Energy never decreases and deltas add up to the total.
    for addr in (1, 2):
        totals = [r.wh_total for _, r in pairs if r.sensor == addr]
        assert totals == sorted(totals)
        assert sum(r.wh_delta for _, r in pairs if r.sensor == addr) == pytest.approx(
            totals[-1]
        )


def test_unknown_sensor_uses_defaults_and_is_reported_once():
    m = meter(7, ResistiveLoad(watts=100))
    pipe = ReadingPipeline(Config())
    pairs = run(pipe, Simulator([m], seed=1), 30.0)
    assert pairs
    assert all(
        Flag.UNKNOWN_SENSOR in r.flags and r.name == "sensor-7" for _, r in pairs
    )
    assert pipe.drain_new_unknown() == [7]
    assert pipe.drain_new_unknown() == []


def test_reconfigure_applies_calibration_and_keeps_energy():
    m = meter(1, ResistiveLoad(watts=800))
    sim = Simulator([m], seed=2)
    right = config_for(m)
    wrong = right.model_copy(
        update={
            "sensors": [right.sensors[0].model_copy(update={"counts_per_amp": 31.0})]
        }
    )
    pipe = ReadingPipeline(wrong)
    before = run(pipe, sim, 60.0)
    low = statistics.fmean(r.watts for _, r in before)
    assert low == pytest.approx(400, rel=0.05)  # half the gain error, half the watts
    total_before = before[-1][1].wh_total
    pipe.reconfigure(right)
    after = run(pipe, sim, 120.0)
    assert statistics.fmean(r.watts for _, r in after) == pytest.approx(800, rel=0.02)
    assert after[0][1].wh_total >= total_before
    assert after[-1][1].wh_total > total_before


def test_state_round_trip_resumes_totals():
    m = meter(1, ResistiveLoad(watts=1000))
    sim = Simulator([m], seed=4)
    cfg = config_for(m)
    pipe = ReadingPipeline(cfg)
    pairs = run(pipe, sim, 120.0)
    saved = json.loads(json.dumps(pipe.state().to_json()))
    restored = ReadingPipeline(cfg, state=PipelineState.from_json(saved))
    # A new process has a new monotonic clock: the first frame only re-anchors.
    later = run(restored, sim, 240.0, start_s=10_000.0)
    assert later[0][1].wh_total == pytest.approx(pairs[-1][1].wh_total)
    assert later[-1][1].wh_total > pairs[-1][1].wh_total
    with pytest.raises(ValueError, match="version"):
        PipelineState.from_json({"version": 99, "sensors": {}})


def test_energy_floor_and_offset():
    m = meter(1, ResistiveLoad(watts=100))
    cfg = config_for(m, extra="    energy_offset_wh: 5000")
    pipe = ReadingPipeline(cfg)
    pipe.raise_energy_floor(1, 7000.0)  # a total already published, offset included
    pairs = run(pipe, Simulator([m], seed=5), 60.0)
    assert pairs[0][1].wh_total == pytest.approx(7000.0)
    assert pairs[-1][1].wh_total > 7000.0
    pipe.raise_energy_floor(1, 10.0)  # lower floors never lower the total
    more = run(pipe, Simulator([m], seed=5), 0.0)
    assert more == []
    assert pipe.state().sensors[1].energy.wh_total >= 2000.0 - 1e-9


def test_single_sample_and_missing_channel_frames_yield_no_reading():
    pipe = ReadingPipeline(
        parse_config("sensors:\n  - address: 1\n    voltage_channel: 1\n")
    )
    dec = FrameDecoder(1)
    one = encode_frame(
        encode_rx16_io(address=2, rssi_dbm=-50, analog={0: [512], 4: [500]})
    )
    wrong_ch = encode_frame(
        encode_rx16_io(address=1, rssi_dbm=-50, analog={0: [512] * 19, 4: [500] * 19})
    )
    for raw in (one, wrong_ch):
        (ev,) = dec.feed(raw)
        assert isinstance(ev, IoSampleFrame)
        assert pipe.process(ev, time=T0, monotonic_s=0.0) is None
    assert pipe.skipped == {"single_sample": 1, "missing_channel": 1}


def test_zero_drift_is_tracked_and_corrected_only_when_enabled():
    m = meter(1, IDLE)
    sim = Simulator([m], seed=6)
    cal = m.calibration_values()
    base = (
        "sensors:\n  - address: 1\n"
        f"    current_zero: {cal['current_zero'] - 3}\n"
        f"    counts_per_volt: {cal['counts_per_volt']}\n"
    )
    plain = ReadingPipeline(parse_config(base))
    corrected = ReadingPipeline(parse_config(base + "    correct_zero_drift: true\n"))
    dec = FrameDecoder(1)
    last_plain = last_corr = None
    for f in sim.advance(200.0):
        (ev,) = dec.feed(f.data)
        assert isinstance(ev, IoSampleFrame)
        last_plain = plain.process(ev, time=T0, monotonic_s=f.time_s)
        last_corr = corrected.process(ev, time=T0, monotonic_s=f.time_s)
    assert last_plain is not None
    assert last_corr is not None
    assert last_plain.current_zero_drift_counts == pytest.approx(3.0, abs=0.4)
    assert Flag.DRIFT_CORRECTED not in last_plain.flags
    assert Flag.DRIFT_CORRECTED in last_corr.flags
    # With the drift removed the idle meter's current is just noise.
    assert last_corr.irms < last_plain.irms


def test_legacy_mode_is_flagged():
    m = meter(1, ResistiveLoad(watts=300))
    pipe = ReadingPipeline(config_for(m, extra="    mode: legacy"))
    pairs = run(pipe, Simulator([m], seed=7), 20.0)
    assert pairs
    assert all(Flag.LEGACY in r.flags for _, r in pairs)


def frames_of(*meters: MeterModel, count: int) -> list[IoSampleFrame]:
    sim = Simulator(list(meters), seed=5)
    decoder = FrameDecoder(sim.api_mode)
    return [
        ev
        for _ in range(count)
        for ev in decoder.feed(sim.next_frame().frame)
        if isinstance(ev, IoSampleFrame)
    ]


def test_readings_read_together_get_distinct_times_per_sensor():
    a, b = meter(1, ResistiveLoad(watts=100.0)), meter(2, ResistiveLoad(watts=50.0))
    pipeline = ReadingPipeline(config_for(a, b))
    # One chunk holding a backlog: every frame carries the chunk's arrival time.
    readings = [
        pipeline.process(ev, time=T0, monotonic_s=0.0)
        for ev in frames_of(a, b, count=8)
    ]
    per_sensor: dict[int, list[datetime]] = {}
    for r in readings:
        assert r is not None
        per_sensor.setdefault(r.sensor, []).append(r.time)
    assert set(per_sensor) == {1, 2}
    for times in per_sensor.values():
        # The first keeps the arrival time; the rest follow it 1 ms apart.
        assert times == [T0 + timedelta(milliseconds=k) for k in range(len(times))]


def test_a_wall_clock_set_back_is_kept():
    a = meter(1, ResistiveLoad(watts=100.0))
    pipeline = ReadingPipeline(config_for(a))
    first, second, third = frames_of(a, count=3)
    assert pipeline.process(first, time=T0, monotonic_s=0.0) is not None
    earlier = T0 - timedelta(hours=1)
    r = pipeline.process(second, time=earlier, monotonic_s=2.0)
    assert r is not None
    assert r.time == earlier
    later = pipeline.process(
        third, time=earlier + timedelta(seconds=2), monotonic_s=4.0
    )
    assert later is not None
    assert later.time == earlier + timedelta(seconds=2)


def test_readings_within_a_millisecond_are_spaced_one_apart():
    a = meter(1, ResistiveLoad(watts=100.0))
    pipeline = ReadingPipeline(config_for(a))
    first, second, third = frames_of(a, count=3)
    assert pipeline.process(first, time=T0, monotonic_s=0.0) is not None
    close = pipeline.process(
        second, time=T0 + timedelta(microseconds=300), monotonic_s=0.0003
    )
    assert close is not None
    assert close.time == T0 + timedelta(milliseconds=1)
    apart = pipeline.process(third, time=T0 + timedelta(seconds=2), monotonic_s=2.0)
    assert apart is not None
    assert apart.time == T0 + timedelta(seconds=2)
