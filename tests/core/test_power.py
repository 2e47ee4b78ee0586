"""Power maths against synthetic waveforms with known truth and real captures."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
import zlib
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import waveforms as wf
from wattd.core.calibration import Calibration
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.core.power import (
    NOMINAL_SAMPLE_INTERVAL_MS,
    PowerResult,
    compute_legacy,
    compute_power,
)
from wattd.core.readings import Flag

if TYPE_CHECKING:
    from pathlib import Path

FRAMES = 200

# (mains Hz, true sample interval ms): every case spans at least one cycle.
WHOLE_CYCLE_TIMINGS = [
    (60.0, 1.0),
    (60.0, 1.2),
    (60.0, 1.41),
    (60.0, 1.45),
    (50.0, 1.2),
    (50.0, 1.45),
]
LOADS = [
    wf.resistive(1000.0),
    wf.resistive(100.0),
    wf.resistive(50.0),
    wf.reactive(200.0, 0.5),
    wf.reactive(150.0, 0.7, leading=True),
    wf.reactive(100.0, 0.9),
    wf.reactive(120.0, 0.6, leading=True),
    wf.switch_mode(100.0),
    wf.switch_mode(60.0),
    wf.resistive(5.0),
    wf.reactive(5.0, 0.5),
    wf.no_load(),
]


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    truth: wf.Truth
    results: list[PowerResult]
    true_intervals: list[float]

    def mean(self, field: str) -> float:
        return statistics.fmean(getattr(r, field) for r in self.results)


def simulate(
    load: wf.Load,
    *,
    mains_hz: float,
    interval_ms: float,
    seed: int,
    measured_voltage: bool = True,
    frames: int = FRAMES,
    zero_error: float = 0.0,
    known_voltage_zero: bool = False,
    cal_changes: dict[str, Any] | None = None,
) -> Run:
    """Random unit, random phases, jitter, noise, an off-grid sample 0."""
    rng = random.Random(seed)
    meter = wf.random_meter(rng, mains_hz=mains_hz)
    radio = wf.Radio(
        interval_ms=interval_ms,
        jitter_ms=0.01 * interval_ms,
        first_gap_extra=rng.uniform(0.12, 0.18),
        noise_counts=rng.uniform(0.5, 1.0),
    )
    cal = Calibration(
        current_zero=meter.current_zero_counts + zero_error,
        counts_per_amp=meter.counts_per_amp,
        mains_hz=mains_hz,
        counts_per_volt=meter.counts_per_volt if measured_voltage else None,
        voltage_zero=meter.voltage_offset_counts if known_voltage_zero else None,
        **(cal_changes or {}),
    )
    results = []
    intervals = []
    for _ in range(frames):
        frame = wf.make_frame(load, meter, radio, rng)
        results.append(compute_power(frame.voltage, frame.current, cal))
        intervals.append(frame.interval_ms)
    return Run(truth=wf.truth(load, meter), results=results, true_intervals=intervals)


def assert_watts(run: Run) -> None:
    got = run.mean("watts")
    want = run.truth.watts
    if want >= 50.0:
        assert got == pytest.approx(want, rel=0.01)
    else:
        assert got == pytest.approx(want, abs=0.5)


@pytest.mark.parametrize(("mains_hz", "interval_ms"), WHOLE_CYCLE_TIMINGS)
@pytest.mark.parametrize("load", LOADS, ids=lambda load: load.name)
def test_accuracy_on_synthetic_waveforms(
    load: wf.Load, mains_hz: float, interval_ms: float
) -> None:
    seed = zlib.crc32(f"{load.name}/{mains_hz}/{interval_ms}".encode())
    run = simulate(load, mains_hz=mains_hz, interval_ms=interval_ms, seed=seed)
    assert_watts(run)
    assert run.mean("vrms") == pytest.approx(run.truth.vrms, rel=0.01)
    for result, true_interval in zip(run.results, run.true_intervals, strict=True):
        assert result.interval_measured
        assert result.sample_interval_ms == pytest.approx(true_interval, rel=0.02)
        assert Flag.PARTIAL_CYCLE not in result.flags
        assert result.cycles >= 1.0
    if run.truth.watts >= 50.0:
        assert run.mean("irms") == pytest.approx(run.truth.irms, rel=0.02)
        assert run.truth.power_factor is not None
        factors = [r.power_factor for r in run.results]
        assert all(pf is not None for pf in factors)
        mean_pf = statistics.fmean(pf for pf in factors if pf is not None)
        assert mean_pf == pytest.approx(run.truth.power_factor, abs=0.02)
    if run.truth.watts == 0.0:
        assert all(r.power_factor is None for r in run.results)


@pytest.mark.parametrize(
    "load",
    [wf.resistive(100.0), wf.reactive(200.0, 0.5), wf.switch_mode(100.0), wf.no_load()],
    ids=lambda load: load.name,
)
@pytest.mark.parametrize(("mains_hz", "interval_ms"), [(60.0, 1.41), (50.0, 1.2)])
def test_nominal_voltage_mode(
    load: wf.Load, mains_hz: float, interval_ms: float
) -> None:
    """Without counts_per_volt the waveform is scaled to read the nominal Vrms."""
    run = simulate(
        load,
        mains_hz=mains_hz,
        interval_ms=interval_ms,
        seed=11,
        measured_voltage=False,
    )
    assert_watts(run)
    assert all(r.vrms == pytest.approx(120.0, rel=1e-9) for r in run.results)


@pytest.mark.parametrize(
    "load",
    [wf.resistive(100.0), wf.reactive(200.0, 0.7), wf.switch_mode(80.0), wf.no_load()],
    ids=lambda load: load.name,
)
def test_measured_voltage_about_a_configured_zero(load: wf.Load) -> None:
    run = simulate(
        load, mains_hz=60.0, interval_ms=1.3, seed=31, known_voltage_zero=True
    )
    assert_watts(run)
    assert run.mean("vrms") == pytest.approx(run.truth.vrms, rel=0.01)


def test_nominal_mode_follows_configured_voltage() -> None:
    """The same counts read twice the watts when the nominal voltage doubles."""
    meter = wf.Meter(mains_vrms=240.0, mains_hz=50.0)
    radio = wf.Radio(interval_ms=1.3)
    frame = wf.make_frame(wf.resistive(500.0), meter, radio, random.Random(4))
    at_240 = compute_power(
        frame.voltage,
        frame.current,
        Calibration(current_zero=495.0, nominal_vrms=240.0, mains_hz=50.0),
    )
    at_120 = compute_power(
        frame.voltage,
        frame.current,
        Calibration(current_zero=495.0, nominal_vrms=120.0, mains_hz=50.0),
    )
    assert at_240.vrms == pytest.approx(240.0)
    assert at_240.watts == pytest.approx(2.0 * at_120.watts)
    assert at_240.watts == pytest.approx(500.0, rel=0.03)


@pytest.mark.parametrize(
    "load",
    [
        wf.resistive(100.0),
        wf.reactive(200.0, 0.5),
        wf.reactive(200.0, 0.8, leading=True),
        wf.switch_mode(100.0),
        wf.resistive(5.0),
        wf.no_load(),
    ],
    ids=lambda load: load.name,
)
def test_partial_cycle_still_gives_figures(load: wf.Load) -> None:
    """50 Hz sampled every 1.0 ms: 18 samples span only 0.9 of a cycle."""
    run = simulate(load, mains_hz=50.0, interval_ms=1.0, seed=23)
    assert all(Flag.PARTIAL_CYCLE in r.flags for r in run.results)
    assert all(r.cycles < 1.0 for r in run.results)
    assert_watts(run)
    assert run.mean("vrms") == pytest.approx(run.truth.vrms, rel=0.01)
    assert run.mean("sample_interval_ms") == pytest.approx(1.0, rel=0.02)
    if run.truth.watts >= 50.0:
        assert run.mean("irms") == pytest.approx(run.truth.irms, rel=0.02)


def test_pinned_interval_is_used_as_given() -> None:
    meter = wf.Meter()
    frame = wf.make_frame(wf.resistive(300.0), meter, wf.Radio(), random.Random(2))
    cal = Calibration(current_zero=meter.current_zero_counts, sample_interval_ms=1.25)
    result = compute_power(frame.voltage, frame.current, cal)
    assert result.sample_interval_ms == 1.25
    assert not result.interval_measured
    assert Flag.INTERVAL_FALLBACK not in result.flags


def flat(value: int = 512) -> list[int]:
    return [value] * 19


def sine(
    amplitude: float, *, offset: float = 512.0, per_cycle: float = 11.8
) -> list[int]:
    return [
        round(offset + amplitude * math.sin(2.0 * math.pi * j / per_cycle + 0.3))
        for j in range(19)
    ]


@pytest.mark.parametrize("fallback", [None, 1.37])
def test_flat_voltage_gives_zero_figures(fallback: float | None) -> None:
    result = compute_power(
        flat(), sine(40.0, offset=495.0), Calibration(), fallback_interval_ms=fallback
    )
    assert Flag.FLAT_VOLTAGE in result.flags
    assert Flag.INTERVAL_FALLBACK in result.flags
    assert (result.watts, result.va, result.vrms, result.irms) == (0.0, 0.0, 0.0, 0.0)
    assert result.power_factor is None
    assert not result.interval_measured
    want = NOMINAL_SAMPLE_INTERVAL_MS if fallback is None else fallback
    assert result.sample_interval_ms == want


def test_noise_on_the_voltage_channel_is_not_measured_as_an_interval() -> None:
    rng = random.Random(8)
    voltage = [rng.randint(200, 800) for _ in range(19)]
    result = compute_power(voltage, flat(495), Calibration(), fallback_interval_ms=1.4)
    assert not result.interval_measured
    assert result.sample_interval_ms == 1.4
    assert Flag.INTERVAL_FALLBACK in result.flags


def test_clipped_voltage_falls_back_for_the_interval() -> None:
    voltage = [min(1023, max(0, v)) for v in sine(600.0)]
    result = compute_power(voltage, flat(495), Calibration(), fallback_interval_ms=1.4)
    assert Flag.CLIPPED in result.flags
    assert Flag.INTERVAL_FALLBACK in result.flags
    assert result.sample_interval_ms == 1.4
    assert result.vrms > 0.0


@pytest.mark.parametrize("where", [0, 7])
@pytest.mark.parametrize("value", [0, 1023])
def test_any_sample_at_a_rail_is_clipped(where: int, value: int) -> None:
    current = flat(495)
    current[where] = value
    result = compute_power(sine(300.0), current, Calibration(current_zero=495.0))
    assert Flag.CLIPPED in result.flags


@pytest.mark.parametrize(
    ("mains_hz", "interval_ms"), [*WHOLE_CYCLE_TIMINGS, (50.0, 1.0)]
)
def test_voltage_level_is_the_midline_over_whole_cycles(
    mains_hz: float, interval_ms: float
) -> None:
    rng = random.Random(f"midline/{mains_hz}/{interval_ms}")
    meter = wf.random_meter(rng, mains_hz=mains_hz)
    radio = wf.Radio(interval_ms=interval_ms, jitter_ms=0.01 * interval_ms)
    cal = Calibration(current_zero=meter.current_zero_counts, mains_hz=mains_hz)
    plain_worst = level_worst = 0.0
    for _ in range(100):
        frame = wf.make_frame(wf.resistive(300.0), meter, radio, rng)
        result = compute_power(frame.voltage, frame.current, cal)
        kept = frame.voltage[1:]
        plain = sum(kept) / len(kept)
        plain_worst = max(plain_worst, abs(plain - meter.voltage_offset_counts))
        level = result.voltage_mean_counts
        level_worst = max(level_worst, abs(level - meter.voltage_offset_counts))
    # 1.1-1.5 cycles of samples put their plain mean tens of counts off the
    # midline; the whole-cycle level stays within a few (1.0 ms: ~one cycle).
    assert plain_worst > 20.0
    assert level_worst < (5.0 if interval_ms == 1.0 else 2.5)


def test_a_given_current_zero_stands_in_for_the_configured_one() -> None:
    voltage, current = sine(300.0), sine(20.0, offset=481.0)
    given = compute_power(voltage, current, Calibration(), current_zero=481.0)
    configured = compute_power(voltage, current, Calibration(current_zero=481.0))
    assert given == configured
    assert compute_power(voltage, current, Calibration()).irms > 1.2 * given.irms


def test_clean_frame_has_no_flags() -> None:
    result = compute_power(
        sine(300.0), sine(20.0, offset=495.0), Calibration(current_zero=495)
    )
    assert result.flags == frozenset()


def test_out_of_range_values_are_clipped_not_fatal() -> None:
    voltage = [v * 100 for v in sine(300.0)]
    current = [-5000] * 19
    result = compute_power(voltage, current, Calibration())
    assert Flag.CLIPPED in result.flags
    assert all(math.isfinite(v) for v in (result.watts, result.vrms, result.irms))


def test_overcurrent() -> None:
    meter = wf.Meter()
    rng = random.Random(6)
    frame = wf.make_frame(wf.resistive(2600.0), meter, wf.Radio(), rng)
    cal = Calibration(current_zero=meter.current_zero_counts)
    assert Flag.OVERCURRENT in compute_power(frame.voltage, frame.current, cal).flags
    frame = wf.make_frame(wf.resistive(1500.0), meter, wf.Radio(), rng)
    assert (
        Flag.OVERCURRENT not in compute_power(frame.voltage, frame.current, cal).flags
    )
    low_limit = dataclasses.replace(cal, max_amps=10.0)
    assert (
        Flag.OVERCURRENT in compute_power(frame.voltage, frame.current, low_limit).flags
    )


def test_reversed_current_is_negative_power() -> None:
    meter = wf.Meter(current_zero_counts=495.0)
    frame = wf.make_frame(wf.resistive(300.0), meter, wf.Radio(), random.Random(1))
    reversed_current = [990 - c for c in frame.current]
    cal = Calibration(current_zero=495.0)
    result = compute_power(frame.voltage, reversed_current, cal)
    assert result.watts == pytest.approx(-300.0, rel=0.03)
    assert Flag.NEGATIVE_POWER in result.flags
    assert result.power_factor == pytest.approx(-1.0, abs=0.02)
    forward = compute_power(frame.voltage, frame.current, cal)
    assert Flag.NEGATIVE_POWER not in forward.flags


def test_no_load_noise_is_not_negative_power() -> None:
    run = simulate(wf.no_load(), mains_hz=60.0, interval_ms=1.41, seed=5)
    assert not any(Flag.NEGATIVE_POWER in r.flags for r in run.results)


def test_wrong_current_zero_makes_no_phantom_watts_but_drift_fixes_irms() -> None:
    good = simulate(wf.no_load(), mains_hz=60.0, interval_ms=1.41, seed=9, frames=100)
    off = simulate(
        wf.no_load(),
        mains_hz=60.0,
        interval_ms=1.41,
        seed=9,
        frames=100,
        zero_error=4.0,
    )
    assert off.mean("watts") == pytest.approx(0.0, abs=0.5)
    # A 4-count offset is a 4/15.5 A phantom DC current in Irms (and so in VA).
    assert good.mean("irms") < 0.1
    assert off.mean("irms") == pytest.approx(4.0 / 15.5, rel=0.05)
    corrected = simulate(
        wf.no_load(),
        mains_hz=60.0,
        interval_ms=1.41,
        seed=9,
        frames=100,
        zero_error=4.0,
        cal_changes={"zero_drift_counts": -4.0},
    )
    assert corrected.mean("irms") == pytest.approx(good.mean("irms"), rel=1e-9)


def test_missing_channel() -> None:
    result = compute_power((), sine(20.0), Calibration())
    assert Flag.MISSING_CHANNEL in result.flags
    assert result.watts == 0.0


def test_too_few_samples() -> None:
    result = compute_power([500, 600, 400], [495, 495, 495], Calibration())
    assert Flag.TOO_FEW_SAMPLES in result.flags
    assert (result.watts, result.vrms) == (0.0, 0.0)


def test_unequal_channel_lengths_use_the_common_part() -> None:
    voltage = sine(300.0)
    current = sine(30.0, offset=495.0)
    whole = compute_power(voltage[:15], current[:15], Calibration(current_zero=495.0))
    ragged = compute_power(voltage, current[:15], Calibration(current_zero=495.0))
    assert ragged == whole


def test_legacy_calibration_selects_the_legacy_method() -> None:
    cal = Calibration(current_zero=495.0, legacy=True)
    result = compute_power(sine(300.0), sine(30.0, offset=495.0), cal)
    assert Flag.LEGACY in result.flags
    assert result == compute_legacy(sine(300.0), sine(30.0, offset=495.0), cal)


samples = st.lists(st.integers(min_value=-3000, max_value=70000), max_size=40)
adc_samples = st.lists(st.integers(min_value=0, max_value=1023), max_size=25)
calibrations = st.builds(
    Calibration,
    current_zero=st.floats(0.0, 1023.0),
    counts_per_amp=st.floats(0.5, 100.0),
    nominal_vrms=st.floats(50.0, 480.0),
    counts_per_volt=st.none() | st.floats(0.1, 100.0),
    voltage_zero=st.none() | st.floats(0.0, 1023.0),
    mains_hz=st.sampled_from([50.0, 60.0]),
    sample_interval_ms=st.none() | st.floats(0.2, 5.0),
    zero_drift_counts=st.floats(-50.0, 50.0),
)
fallbacks = st.none() | st.floats(allow_nan=True, allow_infinity=True)


def check_sane(result: PowerResult) -> None:
    numbers = (
        result.watts,
        result.va,
        result.vrms,
        result.irms,
        result.cycles,
        result.current_mean_counts,
        result.current_ac_rms_counts,
        result.vi_correlation,
    )
    assert all(math.isfinite(v) for v in numbers)
    assert result.va >= 0.0
    assert result.vrms >= 0.0
    assert result.irms >= 0.0
    assert -1.0 <= result.vi_correlation <= 1.0
    assert result.power_factor is None or -1.0 <= result.power_factor <= 1.0
    assert all(isinstance(f, Flag) for f in result.flags)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    voltage=samples | adc_samples,
    current=samples | adc_samples,
    cal=calibrations,
    fallback=fallbacks,
)
def test_garbage_never_raises(
    voltage: list[int], current: list[int], cal: Calibration, fallback: float | None
) -> None:
    check_sane(compute_power(voltage, current, cal, fallback_interval_ms=fallback))
    check_sane(compute_legacy(voltage, current, cal))


@settings(max_examples=200, deadline=None)
@given(
    value=st.integers(0, 1023),
    current=st.lists(st.integers(0, 1023), min_size=19, max_size=19),
)
def test_constant_voltage_is_flat(value: int, current: list[int]) -> None:
    result = compute_power([value] * 19, current, Calibration())
    assert Flag.FLAT_VOLTAGE in result.flags
    assert result.watts == 0.0
    assert result.power_factor is None


# -- the 2009 method ---------------------------------------------------------------


def wattcher_2009(
    voltage: list[int], current: list[int], vref: int
) -> tuple[float, float]:
    """The original per-packet loop, written out with Python 2 integer maths."""
    volts = voltage[1:]
    amps = current[1:]
    min_v = 1024
    max_v = 0
    for v in volts:
        min_v = min(min_v, v)
        max_v = max(max_v, v)
    avgv = (max_v + min_v) // 2
    vpp = max_v - min_v
    volts = [((v - avgv) * 340) // vpp for v in volts]
    amps_f = [(a - vref) / 15.5 for a in amps]
    watts = [v * a for v, a in zip(volts, amps_f, strict=True)]
    avgamp = 0.0
    avgwatt = 0.0
    for i in range(17):
        avgamp += abs(amps_f[i])
        avgwatt += abs(watts[i])
    return avgwatt / 17.0, avgamp / 17.0


def test_legacy_hand_computed() -> None:
    # Sample 0 is dropped; the rest swing 400..601 so mid = 500 and vpp = 201:
    # 601 -> 101*340//201 = 170, 400 -> -100*340//201 = -170 (floor division).
    voltage = [999] + [601, 400] * 9
    current = [495] + [526, 464] * 9  # +-31 counts = +-2 A about 495
    result = compute_legacy(voltage, current, Calibration(current_zero=495.0))
    assert result.watts == pytest.approx(340.0)
    assert result.irms == pytest.approx(2.0)
    assert result.vrms == 120.0
    assert result.flags == frozenset({Flag.LEGACY})
    assert result.power_factor is None


def test_legacy_matches_the_original_loop() -> None:
    rng = random.Random(12)
    for _ in range(50):
        meter = wf.random_meter(rng)
        load = rng.choice([wf.resistive(300.0), wf.reactive(200.0, 0.6), wf.no_load()])
        frame = wf.make_frame(load, meter, wf.Radio(), rng)
        vref = rng.randint(485, 505)
        result = compute_legacy(
            list(frame.voltage), list(frame.current), Calibration(current_zero=vref)
        )
        watts, amps = wattcher_2009(list(frame.voltage), list(frame.current), vref)
        assert result.watts == watts
        assert result.irms == amps


def test_legacy_scales_mains_vpp_with_nominal_voltage() -> None:
    voltage = [0, *sine(300.0)[1:]]
    current = [0, *sine(30.0, offset=495.0)[1:]]
    at_120 = compute_legacy(voltage, current, Calibration(current_zero=495.0))
    at_230 = compute_legacy(
        voltage, current, Calibration(current_zero=495.0, nominal_vrms=230.0)
    )
    assert at_230.vrms == 230.0
    assert at_230.watts == pytest.approx(at_120.watts * 230.0 / 120.0, rel=0.02)


def test_legacy_survives_flat_voltage() -> None:
    result = compute_legacy(flat(), sine(30.0, offset=495.0), Calibration())
    assert result.watts == 0.0
    assert {Flag.LEGACY, Flag.FLAT_VOLTAGE} <= result.flags


def paired(
    load: wf.Load, *, interval_ms: float, zero_error: float = 0.0, frames: int = FRAMES
) -> tuple[float, float, float]:
    rng = random.Random(17)
    meter = wf.Meter(current_zero_counts=495.0, voltage_amplitude_counts=330.0)
    radio = wf.Radio(interval_ms=interval_ms)
    cal = Calibration(current_zero=495.0 + zero_error)
    legacy = []
    new = []
    for _ in range(frames):
        frame = wf.make_frame(load, meter, radio, rng)
        legacy.append(compute_legacy(frame.voltage, frame.current, cal).watts)
        new.append(compute_power(frame.voltage, frame.current, cal).watts)
    return wf.truth(load, meter).watts, statistics.fmean(legacy), statistics.fmean(new)


@pytest.mark.parametrize("leading", [False, True])
def test_legacy_over_reads_at_low_power_factor(leading: bool) -> None:
    truth, legacy, new = paired(
        wf.reactive(200.0, 0.5, leading=leading), interval_ms=1.41
    )
    assert legacy > 1.35 * truth  # mean |v*i| counts returned energy as drawn
    assert legacy < 1.55 * truth
    assert new == pytest.approx(truth, rel=0.01)


def test_legacy_phantom_watts_from_a_slightly_wrong_zero() -> None:
    truth, legacy, new = paired(wf.no_load(), interval_ms=1.41, zero_error=3.0)
    assert truth == 0.0
    assert legacy > 15.0  # ~7 W per count of zero error
    assert new == pytest.approx(0.0, abs=0.5)


def phase_sweep(interval_ms: float, *, legacy: bool) -> list[float]:
    """Relative error per frame over a sweep of start phases, noise-free."""
    meter = wf.Meter(current_zero_counts=495.0, voltage_amplitude_counts=330.0)
    radio = wf.Radio(interval_ms=interval_ms, noise_counts=0.0, jitter_ms=0.0)
    load = wf.resistive(300.0)
    cal = Calibration(current_zero=495.0)
    method = compute_legacy if legacy else compute_power
    errors = []
    for k in range(72):
        frame = wf.make_frame(
            load, meter, radio, random.Random(0), phase=k * 2.0 * math.pi / 72
        )
        errors.append(method(frame.voltage, frame.current, cal).watts / 300.0 - 1.0)
    return errors


def test_legacy_timing_bias_from_assuming_17_samples_per_cycle() -> None:
    # At the nominal 1 ms, 17 samples are ~1 cycle and the phase matters little;
    # at a real radio's 1.2 ms they are 1.2 cycles and the error swings with it.
    nominal = phase_sweep(1.0, legacy=True)
    real = phase_sweep(1.2, legacy=True)
    assert max(nominal) - min(nominal) < 0.06
    assert max(real) - min(real) > 0.2
    fixed = phase_sweep(1.2, legacy=False)
    assert max(map(abs, fixed)) < 0.01


# -- real captures ------------------------------------------------------------------


def capture_frames(captures_dir: Path, name: str) -> list[IoSampleFrame]:
    events = FrameDecoder(1).feed((captures_dir / f"{name}.bin").read_bytes())
    return [e for e in events if isinstance(e, IoSampleFrame)]


def capture_zero(captures_dir: Path, name: str) -> float:
    info = json.loads((captures_dir / f"{name}.json").read_text())
    (sensor,) = info["per_sensor"].values()
    return float(sensor["ad4_samples_1_18"]["mean"])


@pytest.mark.parametrize("name", ["Noisy_Zeros3", "Noisy_Zeros4"])
def test_real_no_load_captures(captures_dir: Path, name: str) -> None:
    zero = capture_zero(captures_dir, name)
    frames = capture_frames(captures_dir, name)
    assert len(frames) > 150
    cal = Calibration(current_zero=zero)
    results = [compute_power(f.analog[0], f.analog[4], cal) for f in frames]
    assert statistics.fmean(r.watts for r in results) == pytest.approx(0.0, abs=0.5)
    assert all(r.interval_measured for r in results)
    interval = statistics.median(r.sample_interval_ms or 0.0 for r in results)
    assert interval == pytest.approx(1.41, abs=0.02)
    assert 1000.0 / (60.0 * interval) == pytest.approx(11.8, abs=0.15)
    assert statistics.median(r.cycles for r in results) == pytest.approx(1.52, abs=0.03)
    # The 2009 method turns a 3-count zero error into tens of phantom watts.
    off = Calibration(current_zero=zero - 3.0)
    legacy = [compute_legacy(f.analog[0], f.analog[4], off).watts for f in frames]
    assert statistics.fmean(legacy) > 15.0
    new = [compute_power(f.analog[0], f.analog[4], off).watts for f in frames]
    assert statistics.fmean(new) == pytest.approx(0.0, abs=0.5)


def test_real_captures_measure_the_same_interval_everywhere(captures_dir: Path) -> None:
    for name in ("tweetawatt_data", "voltage_output_27bba8f"):
        frames = capture_frames(captures_dir, name)
        results = [
            compute_power(f.analog[0], f.analog[4], Calibration()) for f in frames
        ]
        measured = [r.sample_interval_ms for r in results if r.interval_measured]
        assert len(measured) >= 0.99 * len(results)
        assert statistics.median(m or 0.0 for m in measured) == pytest.approx(
            1.41, abs=0.02
        )
