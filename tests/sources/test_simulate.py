"""The meter simulator: wire format, quirks, truth, noise, determinism, pacing."""

from __future__ import annotations

import asyncio
import cmath
import itertools
import math
import os
import select
import time
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.clocks import SleepClock
from wattd.core.frames import FrameDecoder, FrameRejected, RejectReason
from wattd.core.iosample import IoSampleFrame
from wattd.errors import ConfigError
from wattd.sources.simulate import (
    IDLE,
    SAMPLES_PER_FRAME,
    InductiveLoad,
    LineNoise,
    MeterModel,
    ResistiveLoad,
    SimFrame,
    Simulator,
    SmpsLoad,
    StepsLoad,
    pace_frames,
    parse_meter_spec,
    run_on_pty,
    varied_meters,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.fixtures.pty import Pty

# -- helpers ------------------------------------------------------------------


def decode(frames: list[SimFrame], mode: int) -> list[IoSampleFrame]:
    dec = FrameDecoder(mode)
    events = dec.feed(b"".join(f.data for f in frames))
    events += dec.close()
    return [e for e in events if isinstance(e, IoSampleFrame)]


def cycle_integral(
    meter: MeterModel, fn: Callable[[float], float], t0: float, points: int = 3600
) -> float:
    """Mean of fn(t) over exactly one mains cycle from t0 (midpoint rule)."""
    period = 1.0 / meter.mains_hz
    total = 0.0
    for k in range(points):
        total += fn(t0 + (k + 0.5) * period / points)
    return total / points


def harmonic(meter: MeterModel, k: int, t0: float = 0.0, points: int = 2048) -> float:
    period = 1.0 / meter.mains_hz
    acc = 0j
    for n in range(points):
        t = t0 + n * period / points
        acc += meter.current_amps(t) * cmath.exp(-2j * math.pi * k * n / points)
    return abs(acc) * 2 / points


LOADS = [
    IDLE,
    ResistiveLoad(watts=100.0),
    ResistiveLoad(watts=1500.0),
    InductiveLoad(watts=300.0, power_factor=0.7),
    SmpsLoad(watts=150.0),
]


# -- wire format ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [1, 2])
def test_frames_decode_to_exactly_the_meters_and_samples(mode: int) -> None:
    meters = varied_meters(12, seed=5)
    sim = Simulator(meters, seed=5, api_mode=mode)
    frames = sim.advance(30.0)
    decoded = decode(frames, mode)
    assert len(decoded) == len(frames)
    for frame, io in zip(frames, decoded, strict=True):
        assert io.api_id == 0x83
        assert io.address16 == frame.address
        assert io.sample_count == SAMPLES_PER_FRAME
        assert io.analog_channels == (0, 4)
        assert io.analog[0] == frame.voltage_counts
        assert io.analog[4] == frame.current_counts
        assert io.rssi_dbm == frame.rssi_dbm
        assert io.raw == frame.frame
    # Every meter speaks, 13-16 times in 30 s at ~2.08 s per frame.
    per_meter = {m.address: sum(f.address == m.address for f in frames) for m in meters}
    assert all(13 <= n <= 16 for n in per_meter.values()), per_meter


def test_frame_layout_is_tweetawatt() -> None:
    sim = Simulator([MeterModel.with_quirks(7, IDLE, seed=1)], seed=1, api_mode=1)
    frame = sim.advance(3.0)[0]
    assert len(frame.frame) == 88
    assert frame.frame[:4] == bytes((0x7E, 0x00, 0x54, 0x83))
    assert frame.frame[4:6] == (7).to_bytes(2, "big")
    assert frame.frame[8:11] == bytes((0x13, 0x22, 0x00))
    sim2 = Simulator([MeterModel.with_quirks(7, IDLE, seed=1)], seed=1, api_mode=2)
    escaped = sim2.advance(3.0)[0].frame
    assert b"\x7d\x33" in escaped  # the sample count 0x13 is always escaped
    assert len(escaped) > 88


def test_frames_are_in_time_order_and_meters_not_in_lockstep() -> None:
    sim = Simulator(varied_meters(50, seed=2), seed=2)
    frames = sim.advance(60.0)
    times = [f.time_s for f in frames]
    assert times == sorted(times)
    by_meter: dict[int, list[float]] = {}
    for f in frames:
        by_meter.setdefault(f.address, []).append(f.time_s)
    gaps = [b - a for ts in by_meter.values() for a, b in itertools.pairwise(ts)]
    assert min(gaps) >= 2.0
    assert max(gaps) <= 2.11
    assert 2.05 <= sum(gaps) / len(gaps) <= 2.09
    firsts = sorted(ts[0] for ts in by_meter.values())
    assert len(set(firsts)) == len(firsts)
    assert firsts[-1] - firsts[0] > 1.0  # spread over the first period
    seqs = [f.seq for f in frames if f.address == frames[0].address]
    assert seqs == list(range(len(seqs)))


def test_unit_quirks_stay_in_the_observed_ranges() -> None:
    meters = varied_meters(300, seed=9)
    assert len({m.current_zero_counts for m in meters}) == 300
    for m in meters:
        assert 470 <= m.current_zero_counts <= 507
        assert 260 <= m.voltage_amplitude_counts <= 390
        assert 505 <= m.voltage_zero_counts <= 525
        assert 1.2 <= m.sample_interval_ms <= 1.4
        assert 0.12 <= m.first_gap_extra <= 0.18
        assert 0.5 <= m.noise_counts <= 1.0
        assert m.counts_per_amp == 15.5
        assert -82 <= m.rssi_dbm <= -40
    kinds = {m.load.kind for m in meters}
    assert kinds == {"idle", "resistive", "inductive", "smps", "steps"}


def test_sample_zero_is_off_grid() -> None:
    m = MeterModel.with_quirks(1, IDLE, seed=3)
    offs = m.sample_offsets_s()
    assert len(offs) == SAMPLES_PER_FRAME
    gaps = [b - a for a, b in itertools.pairwise(offs)]
    dt = m.sample_interval_ms / 1000
    assert all(g == pytest.approx(dt) for g in gaps[1:])
    assert gaps[0] / dt == pytest.approx(1 + m.first_gap_extra)
    assert 1.12 <= gaps[0] / dt <= 1.18


def test_counts_follow_the_continuous_waveforms() -> None:
    """Each sample equals zero + gain x waveform at its own time, within noise."""
    m = MeterModel.with_quirks(3, InductiveLoad(watts=400, power_factor=0.8), seed=4)
    sim = Simulator([m], seed=4)
    for frame in sim.advance(20.0):
        assert len(frame.sample_times_s) == SAMPLES_PER_FRAME
        assert frame.sample_times_s[-1] < frame.time_s
        for t, vc, ic in zip(
            frame.sample_times_s,
            frame.voltage_counts,
            frame.current_counts,
            strict=True,
        ):
            v_expect = m.voltage_zero_counts + m.counts_per_volt * m.voltage_volts(t)
            i_expect = m.current_zero_counts + m.counts_per_amp * m.current_amps(t)
            assert abs(vc - v_expect) <= 0.5 + 5 * m.noise_counts
            assert abs(ic - i_expect) <= 0.5 + 5 * m.noise_counts


def test_effective_interval_matches_the_model() -> None:
    """Time of the samples: ~1.2-1.4 ms apart, 19 samples span < 2 mains cycles."""
    m = MeterModel.with_quirks(3, IDLE, seed=8)
    frame = Simulator([m], seed=8).advance(3.0)[0]
    ts = frame.sample_times_s
    steps = [(b - a) * 1000 for a, b in itertools.pairwise(ts[1:])]
    assert all(s == pytest.approx(m.sample_interval_ms, rel=0.02) for s in steps)
    span_cycles = (ts[-1] - ts[0]) * m.mains_hz
    assert 1.2 < span_cycles < 1.8


def test_noise_is_gaussian_with_the_units_sigma() -> None:
    m = MeterModel.with_quirks(5, IDLE, seed=6)
    frames = Simulator([m], seed=6).advance(400.0)
    residuals = [c - m.current_zero_counts for f in frames for c in f.current_counts]
    mean = sum(residuals) / len(residuals)
    sd = math.sqrt(sum((r - mean) ** 2 for r in residuals) / len(residuals))
    assert abs(mean) < 0.1
    # Rounding adds 1/12 count^2 of variance to the Gaussian noise.
    assert sd == pytest.approx(math.sqrt(m.noise_counts**2 + 1 / 12), rel=0.1)


def test_quantised_and_clipped_to_ten_bits() -> None:
    # 3 kW at 120 V peaks at 35 A = 550 counts from a ~490 zero: both rails.
    m = MeterModel.with_quirks(1, ResistiveLoad(watts=3000), seed=1)
    frames = Simulator([m], seed=1).advance(60.0)
    currents = [c for f in frames for c in f.current_counts]
    assert all(isinstance(c, int) and 0 <= c <= 1023 for c in currents)
    assert 0 in currents
    assert 1023 in currents


def test_fifty_hertz_supply() -> None:
    spec = parse_meter_spec("9:resistive:1000:hz=50:vrms=230:nominal=230")
    m = spec.build(seed=3)
    assert (m.mains_hz, m.vrms, m.nominal_vrms) == (50.0, 230.0, 230.0)
    frames = Simulator([m], seed=3, api_mode=2).advance(10.0)
    assert len(decode(frames, 2)) == len(frames) >= 4
    vrms = math.sqrt(cycle_integral(m, lambda t: m.voltage_volts(t) ** 2, 0.3))
    assert vrms == pytest.approx(230.0, rel=1e-6)
    # 19 samples at 1.2-1.4 ms cover a bit more than one 50 Hz cycle.
    span = frames[0].sample_times_s[-1] - frames[0].sample_times_s[0]
    assert 1.0 < span * 50 < 1.5


# -- truth ---------------------------------------------------------------------


@pytest.mark.parametrize("load", LOADS, ids=lambda ld: ld.spec)
def test_truth_matches_numerical_integration(load: ResistiveLoad) -> None:
    """True watts, Vrms and Irms agree with integrating the continuous waveforms."""
    m = MeterModel.with_quirks(2, load, seed=11)
    sim = Simulator([m], seed=11)
    for frame in sim.advance(7.0):
        t0 = frame.sample_times_s[0]
        p = cycle_integral(m, lambda t: m.voltage_volts(t) * m.current_amps(t), t0)
        v2 = cycle_integral(m, lambda t: m.voltage_volts(t) ** 2, t0)
        i2 = cycle_integral(m, lambda t: m.current_amps(t) ** 2, t0)
        assert frame.true_watts == pytest.approx(p, rel=1e-6, abs=1e-9)
        assert frame.true_vrms == pytest.approx(math.sqrt(v2), rel=1e-6)
        assert frame.true_irms == pytest.approx(math.sqrt(i2), rel=1e-6, abs=1e-9)
        assert frame.true_watts == load.watts


def test_resistive_truth_is_v_squared_over_r() -> None:
    m = MeterModel.with_quirks(4, ResistiveLoad(watts=250), seed=2)
    # Recover R from the waveforms at arbitrary instants, away from zero crossings.
    ratios = [
        m.voltage_volts(t) / m.current_amps(t)
        for t in (0.0031, 0.0102, 0.0137, 1.2345, 77.7771)
    ]
    r = ratios[0]
    assert all(x == pytest.approx(r, rel=1e-9) for x in ratios)
    assert m.true_watts(5.0) == pytest.approx(m.vrms**2 / r, rel=1e-9)


def test_wire_samples_carry_the_true_load() -> None:
    """Regressing decoded current on decoded voltage gives 1/R of the true load."""
    m = MeterModel.with_quirks(6, ResistiveLoad(watts=900), seed=13)
    frames = Simulator([m], seed=13).advance(120.0)
    xs: list[float] = []
    ys: list[float] = []
    for io in decode(frames, 1):
        xs += [(c - m.voltage_zero_counts) / m.counts_per_volt for c in io.analog[0]]
        ys += [(c - m.current_zero_counts) / m.counts_per_amp for c in io.analog[4]]
    slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    assert slope == pytest.approx(900 / m.vrms**2, rel=0.03)


def test_inductive_current_lags_by_acos_pf() -> None:
    m = MeterModel.with_quirks(1, InductiveLoad(watts=300, power_factor=0.6), seed=1)
    period = 1 / m.mains_hz
    # Rising zero crossing of v is at t=0; find the one of i just after it.
    n = 20000
    prev = m.current_amps(0.0)
    crossing = None
    for k in range(1, n):
        t = k * period / n
        cur = m.current_amps(t)
        if prev < 0 <= cur:
            crossing = t
            break
        prev = cur
    assert crossing is not None
    assert crossing * m.mains_hz * 2 * math.pi == pytest.approx(
        math.acos(0.6), abs=1e-3
    )


def test_smps_current_is_pulsed_with_strong_odd_harmonics() -> None:
    smps = MeterModel.with_quirks(1, SmpsLoad(watts=150), seed=1)
    h1, h3, h5 = (harmonic(smps, k) for k in (1, 3, 5))
    assert h3 / h1 > 0.6
    assert h5 / h1 > 0.4
    assert harmonic(smps, 2) / h1 < 1e-6  # half-wave symmetric
    pf = 150 / (smps.vrms * smps.true_irms(0))
    assert 0.5 < pf < 0.75
    lamp = MeterModel.with_quirks(1, ResistiveLoad(watts=150), seed=1)
    assert harmonic(lamp, 3) / harmonic(lamp, 1) < 1e-6


def test_steps_schedule_energy_is_exact() -> None:
    load = StepsLoad(
        steps=((0.0, ResistiveLoad(watts=60)), (30.0, ResistiveLoad(watts=120)))
    )
    m = MeterModel.with_quirks(5, load, seed=1)
    sim = Simulator([m], seed=1)
    assert sim.true_energy_wh(5, 0, 60) == pytest.approx((60 * 30 + 120 * 30) / 3600)
    assert sim.true_energy_wh(5, 10, 20) == pytest.approx(60 * 10 / 3600)
    assert sim.true_watts(5, 29.9) == 60
    assert sim.true_watts(5, 30.0) == 120
    frames = sim.advance(60)
    assert {f.true_watts for f in frames} == {60.0, 120.0}


def test_cycling_schedule_repeats() -> None:
    fridge = StepsLoad(
        steps=((0.0, IDLE), (600.0, InductiveLoad(watts=150, power_factor=0.8))),
        period_s=1500.0,
    )
    m = MeterModel.with_quirks(6, fridge, seed=1)
    assert m.true_watts(100) == 0
    assert m.true_watts(700) == 150
    assert m.true_watts(1500 + 100) == 0
    assert m.true_watts(1500 + 700) == 150
    one = m.true_energy_wh(0, 1500)
    assert one == pytest.approx(150 * 900 / 3600)
    assert m.true_energy_wh(0, 4500) == pytest.approx(3 * one)
    assert m.true_energy_wh(1000, 2000) == pytest.approx(150 * 500 / 3600)


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(0, 5000),
    b=st.floats(0, 5000),
    c=st.floats(0, 5000),
)
def test_energy_is_additive_and_bounded(a: float, b: float, c: float) -> None:
    t0, t1, t2 = sorted((a, b, c))
    load = StepsLoad(
        steps=(
            (0.0, ResistiveLoad(watts=40)),
            (100.0, SmpsLoad(watts=90)),
            (250.0, IDLE),
        ),
        period_s=400.0,
    )
    m = MeterModel(address=1, load=load)
    e01, e12, e02 = (
        m.true_energy_wh(t0, t1),
        m.true_energy_wh(t1, t2),
        m.true_energy_wh(t0, t2),
    )
    assert e01 + e12 == pytest.approx(e02, abs=1e-9)
    assert 0 <= e02 <= 90 * (t2 - t0) / 3600 + 1e-9


def test_numeric_energy_matches_true_energy() -> None:
    load = StepsLoad(
        steps=(
            (0.0, ResistiveLoad(watts=75)),
            (3.3, InductiveLoad(watts=200, power_factor=0.5)),
        )
    )
    m = MeterModel(address=1, load=load)
    # Integrate v*i finely over 6 s (360 cycles), independently of the closed form.
    n = 6 * 60 * 200
    dt = 6.0 / n
    e = sum(
        m.voltage_volts((k + 0.5) * dt) * m.current_amps((k + 0.5) * dt)
        for k in range(n)
    )
    assert e * dt / 3600 == pytest.approx(m.true_energy_wh(0, 6), rel=2e-3)


# -- noise and drops ---------------------------------------------------------


@pytest.mark.parametrize("mode", [1, 2])
def test_drops_and_line_noise_behave_as_configured(mode: int) -> None:
    meters = varied_meters(20, seed=21)
    sim = Simulator(meters, seed=21, api_mode=mode, noise=0.1, drop_rate=0.2)
    frames = sim.advance(200.0)
    n = len(frames)
    dropped = [f for f in frames if f.dropped]
    kept = [f for f in frames if not f.dropped]
    corrupted = [f for f in kept if f.corrupted]
    garbled = [f for f in kept if f.garbage]
    # Binomial bounds, > 5 sigma wide.
    assert abs(len(dropped) / n - 0.2) < 5 * math.sqrt(0.2 * 0.8 / n)
    k = len(kept)
    assert abs(len(corrupted) / k - 0.1) < 5 * math.sqrt(0.1 * 0.9 / k)
    assert abs(len(garbled) / k - 0.1) < 5 * math.sqrt(0.1 * 0.9 / k)
    assert all(f.data == b"" for f in dropped)
    for f in kept:
        assert 0 <= f.garbage <= 24
        assert f.data.endswith(f.frame) != f.corrupted
        assert len(f.data) == f.garbage + len(f.frame)
    # The decoder recovers every clean frame and nothing else.
    dec = FrameDecoder(mode)
    events = dec.feed(b"".join(f.data for f in frames)) + dec.close()
    got = [(e.address16, e.analog[4]) for e in events if isinstance(e, IoSampleFrame)]
    want = [(f.address, f.current_counts) for f in kept if not f.corrupted]
    assert got == want
    rejected = [e for e in events if isinstance(e, FrameRejected)]
    assert any(e.reason is RejectReason.GARBAGE for e in rejected)


def test_single_bit_flips_never_decode_as_valid_frames() -> None:
    sim = Simulator(varied_meters(5, seed=1), seed=1, noise=LineNoise(flip_rate=1.0))
    frames = sim.advance(100.0)
    assert all(f.corrupted for f in frames)
    for f in frames:
        diff = [a ^ b for a, b in zip(f.data, f.frame, strict=True) if a != b]
        assert len(diff) == 1
        assert bin(diff[0]).count("1") == 1
    assert decode(frames, 1) == []


def test_noise_and_drops_do_not_change_the_samples() -> None:
    meters = varied_meters(8, seed=4)
    clean = Simulator(meters, seed=4).advance(50.0)
    noisy = Simulator(meters, seed=4, noise=0.3, drop_rate=0.3).advance(50.0)
    assert [f.frame for f in clean] == [f.frame for f in noisy]
    assert [f.time_s for f in clean] == [f.time_s for f in noisy]


# -- determinism -------------------------------------------------------------


def test_same_seed_same_bytes_different_seed_different_bytes() -> None:
    def run(seed: int) -> bytes:
        sim = Simulator(
            varied_meters(10, seed=seed), seed=seed, noise=0.05, drop_rate=0.05
        )
        return b"".join(f.data for f in sim.advance(40.0))

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_chunked_advance_equals_one_advance() -> None:
    meters = varied_meters(15, seed=8)
    whole = Simulator(meters, seed=8, noise=0.1, drop_rate=0.1).advance(30.0)
    sim = Simulator(meters, seed=8, noise=0.1, drop_rate=0.1)
    parts: list[SimFrame] = []
    for t in (0.3, 2.0, 2.0, 9.7, 17.1, 30.0):
        parts += sim.advance(t)
    assert parts == whole
    assert sim.now_s == 30.0


def test_meter_quirks_do_not_depend_on_the_fleet() -> None:
    a = MeterModel.with_quirks(42, IDLE, seed=3)
    b = varied_meters(50, seed=3)[41]
    assert b.address == 42
    assert a.current_zero_counts == b.current_zero_counts
    assert a.sample_interval_ms == b.sample_interval_ms


def test_scales_to_a_thousand_meters() -> None:
    meters = varied_meters(1000, seed=1)
    sim = Simulator(meters, seed=1)
    frames = sim.advance(4.5)
    addresses = {f.address for f in frames}
    assert addresses == {m.address for m in meters}
    assert 2000 <= len(frames) <= 2300


def test_bad_simulator_settings_are_config_errors() -> None:
    m = MeterModel.with_quirks(1, IDLE, seed=0)
    with pytest.raises(ConfigError, match="share address 1"):
        Simulator([m, m])
    with pytest.raises(ConfigError, match="drop rate"):
        Simulator([m], drop_rate=1.5)
    with pytest.raises(ConfigError, match="garbage_rate"):
        Simulator([m], noise=-0.1)
    with pytest.raises(ConfigError, match="no simulated meter"):
        Simulator([m]).meter(2)
    with pytest.raises(ConfigError, match="no meters"):
        Simulator([]).next_frame()
    with pytest.raises(ConfigError, match="address must be"):
        MeterModel(address=0xFFFE, load=IDLE)


# -- specs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "watts_at_40"),
    [
        ("1:resistive:100", "resistive", 100.0),
        ("2:inductive:300:0.7", "inductive", 300.0),
        ("3:smps:150", "smps", 150.0),
        ("4:idle", "idle", 0.0),
        ("5:steps:60@0,120@30", "steps", 120.0),
        ("0x10:steps:idle@0,inductive/150/0.8@20,smps/40@35:period=50", "steps", 40.0),
    ],
)
def test_meter_specs(text: str, kind: str, watts_at_40: float) -> None:
    spec = parse_meter_spec(text)
    assert spec.address == int(text.split(":")[0], 0)
    assert spec.load.kind == kind
    meter = spec.build(seed=1)
    assert meter.true_watts(40.0) == watts_at_40
    # The load's own spec round-trips.
    again = parse_meter_spec(f"{spec.address}:{spec.load.spec}")
    assert again.load == spec.load


def test_spec_options() -> None:
    spec = parse_meter_spec("7:smps:20:rssi=-71:hz=50:vrms=228.5:nominal=230")
    m = spec.build(seed=0)
    assert m.rssi_dbm == -71
    assert m.mains_hz == 50
    assert m.vrms == 228.5
    assert m.nominal_vrms == 230
    unset = parse_meter_spec("7:smps:20").build(seed=0, mains_hz=50, nominal_vrms=230)
    assert unset.mains_hz == 50
    assert 225 < unset.vrms < 235


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7", "expected ADDR:LOAD"),
        ("resistive:100", "address 'resistive' is not a number"),
        ("x:resistive:100", "not a number"),
        ("70000:idle", "outside"),
        ("1:heater:100", "unknown load 'heater'"),
        ("1:resistive", "takes 1 value"),
        ("1:resistive:lots", "not a number"),
        ("1:resistive:20000", "0..10000"),
        ("1:inductive:100:1.5", "power factor"),
        ("1:steps:60@0,30@0", "increasing"),
        ("1:steps:60", "LOAD@SECONDS"),
        ("1:resistive:100:period=60", "only applies to a steps"),
        ("1:steps:60@0,120@30:period=20", "must exceed"),
        ("1:idle:hz=55", "50 or 60"),
        ("1:idle:volume=11", "unknown option"),
        ("1:hz=50:idle", "after the load"),
    ],
)
def test_bad_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_meter_spec(text)
    assert repr(text) in str(info.value)


# -- pacing ------------------------------------------------------------------


@pytest.mark.parametrize("speed", [1.0, 4.0])
async def test_pacing_follows_simulated_time(speed: float) -> None:
    clock = SleepClock(100.0)
    meters = varied_meters(4, seed=3)
    sim = Simulator(meters, seed=3)
    emitted: list[tuple[float, SimFrame]] = []

    async def emit(frame: SimFrame) -> None:
        emitted.append((clock.now, frame))

    stats = await pace_frames(
        sim, emit, speed=speed, until_s=20.0, clock=clock, sleep=clock.sleep
    )
    assert stats.frames == len(emitted) > 30
    for real, frame in emitted:
        assert real - 100.0 == pytest.approx(frame.time_s / speed)
    # Waits out the rest of the duration.
    assert clock.now - 100.0 == pytest.approx(20.0 / speed)
    assert emitted == sorted(emitted, key=lambda x: x[0])


async def test_speed_zero_never_sleeps_and_stops_at_max_frames() -> None:
    clock = SleepClock(100.0)
    sim = Simulator(varied_meters(4, seed=3), seed=3, drop_rate=0.5)
    out: list[SimFrame] = []

    async def emit(frame: SimFrame) -> None:
        out.append(frame)

    stats = await pace_frames(
        sim, emit, speed=0, max_frames=25, clock=clock, sleep=clock.sleep
    )
    assert clock.sleeps == []
    assert stats.frames == 25 == len(out)
    assert stats.dropped == sum(f.dropped for f in out)
    assert stats.bytes_written == sum(len(f.data) for f in out)


async def test_stop_event_ends_a_real_time_run_promptly() -> None:
    sim = Simulator(varied_meters(2, seed=1), seed=1)
    stop = asyncio.Event()
    out: list[SimFrame] = []

    async def emit(frame: SimFrame) -> None:
        out.append(frame)

    async def stopper() -> None:
        await asyncio.sleep(0.1)
        stop.set()

    started = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(stopper())
        stats = await pace_frames(sim, emit, speed=1.0, stop_event=stop)
    assert time.monotonic() - started < 1.0
    assert stats.frames == len(out) <= 1


# -- pty ---------------------------------------------------------------------


def read_all(fd: int, timeout: float = 0.3) -> bytes:
    out = bytearray()
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return bytes(out)
        out += os.read(fd, 65536)


@pytest.mark.parametrize("mode", [1, 2])
async def test_run_on_pty_writes_decodable_frames(pty: Pty, mode: int) -> None:
    sim = Simulator(varied_meters(3, seed=7), seed=7, api_mode=mode)
    seen: list[SimFrame] = []
    stats = await run_on_pty(
        sim, pty.master, speed=0, max_frames=30, on_frame=seen.append
    )
    data = await asyncio.to_thread(read_all, pty.slave)
    assert stats.frames == 30 == len(seen)
    assert data == b"".join(f.data for f in seen)
    assert stats.bytes_written == len(data)
    assert len(decode(seen, mode)) == 30
    assert os.get_blocking(pty.master)  # the caller's fd mode is restored


def slow_read(fd: int, want: int, timeout: float = 30.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            out += os.read(fd, 512)
            time.sleep(0.0005)  # slower than the writer
    return bytes(out)


async def test_run_on_pty_speed_zero_waits_for_a_slow_reader(pty: Pty) -> None:
    sim = Simulator(varied_meters(50, seed=2), seed=2)
    seen: list[SimFrame] = []
    async with asyncio.TaskGroup() as tg:
        reading = tg.create_task(asyncio.to_thread(slow_read, pty.slave, 2000 * 88))
        stats = await run_on_pty(
            sim, pty.master, speed=0, max_frames=2000, on_frame=seen.append
        )
    assert stats.overrun_bytes == 0
    assert reading.result() == b"".join(f.data for f in seen)
    assert stats.bytes_written == 2000 * 88


async def test_run_on_pty_real_time_discards_when_nobody_reads(pty: Pty) -> None:
    sim = Simulator(varied_meters(400, seed=2), seed=2)
    started = time.monotonic()
    stats = await run_on_pty(
        sim,
        pty.master,
        speed=1e6,
        max_frames=3000,
        slave_fd=pty.slave,
        stall_limit_s=0.01,
    )
    assert time.monotonic() - started < 20
    assert stats.frames == 3000
    assert stats.overrun_bytes > 0
    assert stats.bytes_written + stats.overrun_bytes == 3000 * 88
