"""Zero-drift tracking from no-load frames, synthetic and real."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
from typing import TYPE_CHECKING

import pytest

from tests.fixtures import waveforms as wf
from wattd.core.calibration import Calibration
from wattd.core.drift import (
    DEFAULT_MIN_FRAMES,
    DEFAULT_ZERO_WINDOW,
    DriftState,
    ZeroDriftTracker,
)
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.core.power import PowerResult, compute_legacy, compute_power
from wattd.core.readings import Flag
from wattd.errors import ConfigError, StateError

if TYPE_CHECKING:
    from pathlib import Path


class Bench:
    """A meter whose real zero sits ``drift`` counts above the configured one."""

    def __init__(self, drift: float, *, seed: int = 1, noise: float = 0.8) -> None:
        self.rng = random.Random(seed)
        self.meter = wf.random_meter(self.rng)
        self.radio = wf.Radio(noise_counts=noise)
        self.configured_zero = self.meter.current_zero_counts - drift
        self.cal = Calibration(current_zero=self.configured_zero)

    def result(self, load: wf.Load) -> PowerResult:
        frame = wf.make_frame(load, self.meter, self.radio, self.rng)
        return compute_power(frame.voltage, frame.current, self.cal)

    def tracker(self) -> ZeroDriftTracker:
        return ZeroDriftTracker(current_zero=self.configured_zero)


@pytest.mark.parametrize("drift", [-4.2, -1.0, 0.0, 2.7, 5.5])
def test_synthetic_drift_is_found(drift: float) -> None:
    bench = Bench(drift)
    tracker = bench.tracker()
    counted = sum(tracker.observe(bench.result(wf.no_load())) for _ in range(60))
    assert counted >= 50
    assert tracker.no_load_frames == counted
    assert tracker.estimate_counts == pytest.approx(drift, abs=0.3)


def test_no_estimate_before_enough_frames() -> None:
    bench = Bench(3.0, noise=0.5)
    tracker = bench.tracker()
    seen = 0
    while seen < DEFAULT_MIN_FRAMES - 1:
        seen += tracker.observe(bench.result(wf.no_load()))
        assert tracker.estimate_counts is None
        assert tracker.level_counts is None
    while not tracker.observe(bench.result(wf.no_load())):
        pass
    assert tracker.estimate_counts == pytest.approx(3.0, abs=0.3)


@pytest.mark.parametrize(
    "load",
    [
        wf.resistive(50.0),
        wf.resistive(1000.0),
        wf.reactive(200.0, 0.5),
        wf.switch_mode(40.0),
        wf.resistive(20.0),
    ],
    ids=lambda load: load.name,
)
def test_loaded_frames_do_not_move_the_estimate(load: wf.Load) -> None:
    bench = Bench(2.5, seed=4)
    tracker = bench.tracker()
    for _ in range(40):
        tracker.observe(bench.result(wf.no_load()))
    before = tracker.estimate_counts
    state = tracker.state
    assert before is not None
    for _ in range(100):
        assert not tracker.observe(bench.result(load))
    assert tracker.estimate_counts == before
    assert tracker.state.observations == state.observations
    assert tracker.state.no_load_frames == state.no_load_frames


def test_tiny_loads_that_pass_as_no_load_do_not_bias_it() -> None:
    # A few watts barely rise above the ADC noise, so some such frames count;
    # their current is AC, so the whole-cycle mean still sits on the zero.
    bench = Bench(-2.0, seed=8)
    tracker = bench.tracker()
    for _ in range(30):
        tracker.observe(bench.result(wf.no_load()))
    for load in (wf.resistive(4.0), wf.reactive(5.0, 0.5), wf.switch_mode(3.0)):
        for _ in range(60):
            tracker.observe(bench.result(load))
    assert tracker.estimate_counts == pytest.approx(-2.0, abs=0.3)


def test_outliers_do_not_drag_the_estimate() -> None:
    bench = Bench(1.5, seed=9)
    tracker = bench.tracker()
    rng = random.Random(2)
    for k in range(100):
        result = bench.result(wf.no_load())
        if k % 10 == 3:
            # A glitch: a flat current far from the zero still looks "no load".
            result = dataclasses.replace(
                result,
                current_mean_counts=result.current_mean_counts
                + rng.choice([-40.0, 35.0, 60.0]),
            )
        tracker.observe(result)
    assert tracker.estimate_counts == pytest.approx(1.5, abs=0.3)


def test_unusable_frames_are_skipped() -> None:
    tracker = ZeroDriftTracker(current_zero=495.0, min_frames=1)
    flat_voltage = compute_power([512] * 19, [495] * 19, Calibration())
    clipped = compute_power([0] * 19, [495] * 19, Calibration())
    missing = compute_power([], [495] * 19, Calibration())
    for result in (flat_voltage, clipped, missing):
        assert not tracker.observe(result)
    assert tracker.estimate_counts is None


def test_window_follows_a_moving_zero() -> None:
    bench = Bench(0.0, seed=5)
    tracker = ZeroDriftTracker(current_zero=bench.configured_zero, window=40)
    for _ in range(60):
        tracker.observe(bench.result(wf.no_load()))
    assert tracker.estimate_counts == pytest.approx(0.0, abs=0.3)
    warmer = dataclasses.replace(
        bench.meter, current_zero_counts=bench.meter.current_zero_counts + 3.0
    )
    bench.meter = warmer
    for _ in range(60):
        tracker.observe(bench.result(wf.no_load()))
    assert tracker.estimate_counts == pytest.approx(3.0, abs=0.3)


def test_state_round_trips_through_json() -> None:
    bench = Bench(3.3, seed=6)
    tracker = bench.tracker()
    for _ in range(45):
        tracker.observe(bench.result(wf.no_load()))
    saved = json.loads(json.dumps(tracker.state.to_json_dict()))
    restored = ZeroDriftTracker(
        current_zero=bench.configured_zero, state=DriftState.from_json_dict(saved)
    )
    assert restored.estimate_counts == tracker.estimate_counts
    assert restored.no_load_frames == tracker.no_load_frames
    # Observations are raw counts, so a recalibrated zero still gives the truth.
    recalibrated = ZeroDriftTracker(
        current_zero=bench.configured_zero + 3.3, state=DriftState.from_json_dict(saved)
    )
    assert recalibrated.estimate_counts == pytest.approx(0.0, abs=0.3)
    follow_up = bench.result(wf.no_load())
    assert restored.observe(follow_up) == tracker.observe(follow_up)
    assert restored.state == tracker.state


def test_restoring_into_a_smaller_window_keeps_the_newest() -> None:
    state = DriftState(
        observations=tuple(float(v) for v in range(10)), no_load_frames=25
    )
    tracker = ZeroDriftTracker(current_zero=0.0, min_frames=2, window=4, state=state)
    assert tracker.state.observations == (6.0, 7.0, 8.0, 9.0)
    assert tracker.no_load_frames == 25


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"observations": "495", "no_load_frames": 1},
        {"observations": [495.0, None], "no_load_frames": 2},
        {"observations": [495.0], "no_load_frames": 1.5},
        {"observations": [495.0, 496.0], "no_load_frames": 1},
        {"observations": [float("nan")], "no_load_frames": 1},
        {"observations": [], "no_load_frames": 0, "cycle_means": 495.0},
        {"observations": [], "no_load_frames": 0, "cycle_means": [495.0, "x"]},
        {"observations": [], "no_load_frames": 0, "cycle_means": [float("inf")]},
    ],
)
def test_bad_saved_state_is_a_state_error(data: dict[str, object]) -> None:
    with pytest.raises(StateError):
        DriftState.from_json_dict(data)


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="min_frames"):
        ZeroDriftTracker(current_zero=495.0, min_frames=50, window=10)
    with pytest.raises(ConfigError, match="zero_window"):
        ZeroDriftTracker(current_zero=495.0, zero_window=0)


def test_correcting_with_the_estimate_restores_irms() -> None:
    bench = Bench(4.0, seed=7, noise=0.6)
    tracker = bench.tracker()
    for _ in range(40):
        tracker.observe(bench.result(wf.no_load()))
    drift = tracker.estimate_counts
    assert drift is not None
    uncorrected = [bench.result(wf.no_load()).irms for _ in range(50)]
    bench.cal = dataclasses.replace(bench.cal, zero_drift_counts=drift)
    corrected = [bench.result(wf.no_load()).irms for _ in range(50)]
    assert statistics.fmean(uncorrected) == pytest.approx(4.0 / 15.5, rel=0.05)
    assert statistics.fmean(corrected) < 0.06


@pytest.mark.parametrize(
    ("name", "configured"), [("Noisy_Zeros3", 490.0), ("Noisy_Zeros4", 500.0)]
)
def test_real_captures_with_a_wrong_zero(
    captures_dir: Path, name: str, configured: float
) -> None:
    info = json.loads((captures_dir / f"{name}.json").read_text())
    (sensor,) = info["per_sensor"].values()
    true_zero = sensor["ad4_samples_1_18"]["mean"]
    events = FrameDecoder(1).feed((captures_dir / f"{name}.bin").read_bytes())
    frames = [e for e in events if isinstance(e, IoSampleFrame)]
    cal = Calibration(current_zero=configured)
    tracker = ZeroDriftTracker(current_zero=configured)
    counted = sum(
        tracker.observe(compute_power(f.analog[0], f.analog[4], cal)) for f in frames
    )
    assert counted >= 0.9 * len(frames)
    assert tracker.estimate_counts == pytest.approx(true_zero - configured, abs=0.3)
    assert tracker.zero_counts == pytest.approx(true_zero, abs=0.3)


# -- the running zero, from every frame -----------------------------------------

RUNNING_ZERO_LOADS = [
    wf.no_load(),
    wf.resistive(50.0),
    wf.resistive(1000.0),
    wf.reactive(200.0, 0.5),
    wf.reactive(150.0, 0.7, leading=True),
    wf.switch_mode(100.0),
    wf.pulse_train(500.0),
]


@pytest.mark.parametrize(
    ("mains_hz", "interval_ms"), [(60.0, 1.2), (60.0, 1.41), (50.0, 1.45), (50.0, 1.0)]
)
@pytest.mark.parametrize("load", RUNNING_ZERO_LOADS, ids=lambda load: load.name)
def test_running_zero_is_found_under_any_load(
    load: wf.Load, mains_hz: float, interval_ms: float
) -> None:
    rng = random.Random(f"{load.name}:{mains_hz}:{interval_ms}")
    meter = wf.random_meter(rng, mains_hz=mains_hz)
    radio = wf.Radio(interval_ms=interval_ms, jitter_ms=0.01 * interval_ms)
    # Configured nowhere near the truth: the running zero does not look at it.
    cal = Calibration(current_zero=492.0, mains_hz=mains_hz)
    tracker = ZeroDriftTracker(current_zero=492.0)
    assert tracker.zero_counts is None
    for _ in range(DEFAULT_ZERO_WINDOW):
        frame = wf.make_frame(load, meter, radio, rng)
        tracker.observe(compute_power(frame.voltage, frame.current, cal))
    assert tracker.zero_counts == pytest.approx(meter.current_zero_counts, abs=0.25)


def spliced(
    before: wf.Load, after: wf.Load, meter: wf.Meter, radio: wf.Radio, seed: int
) -> wf.Frame:
    """A frame in which the load switches from ``before`` to ``after`` mid-way."""
    phase = random.Random(seed).uniform(0.0, 2.0 * math.pi)
    first = wf.make_frame(before, meter, radio, random.Random(seed), phase=phase)
    second = wf.make_frame(after, meter, radio, random.Random(seed), phase=phase)
    cut = 4 + seed % 12
    return dataclasses.replace(
        first, current=first.current[:cut] + second.current[cut:]
    )


def test_load_steps_inside_frames_do_not_drag_the_running_zero() -> None:
    rng = random.Random(3)
    meter = wf.random_meter(rng)
    radio = wf.Radio()
    cal = Calibration()
    tracker = ZeroDriftTracker(current_zero=492.0)
    heater = wf.resistive(1500.0)
    for _ in range(40):
        frame = wf.make_frame(heater, meter, radio, rng)
        tracker.observe(compute_power(frame.voltage, frame.current, cal))
    settled = tracker.zero_counts
    assert settled == pytest.approx(meter.current_zero_counts, abs=0.25)
    # A thermostat clicking on and off: six frames in a row catch the switch.
    worst = 0.0
    for seed in range(6):
        before, after = (heater, wf.no_load()) if seed % 2 else (wf.no_load(), heater)
        frame = spliced(before, after, meter, radio, seed)
        result = compute_power(frame.voltage, frame.current, cal)
        worst = max(worst, abs(result.current_mean_counts - meter.current_zero_counts))
        tracker.observe(result)
        zero = tracker.zero_counts
        assert zero == pytest.approx(meter.current_zero_counts, abs=0.5)
    # Those frames were far off (a plain running mean would have followed).
    assert worst > 5.0


def test_running_zero_skips_frames_that_are_not_whole_cycles() -> None:
    tracker = ZeroDriftTracker(current_zero=495.0)
    rng = random.Random(4)
    meter = wf.random_meter(rng)
    frame = wf.make_frame(wf.resistive(300.0), meter, wf.Radio(), rng)
    legacy = compute_legacy(frame.voltage, frame.current, Calibration(legacy=True))
    # A waveform the interval cannot be measured on, with no estimate to use.
    square = [200 if (j // 5) % 2 else 800 for j in range(19)]
    guessed = compute_power(square, list(frame.current), Calibration())
    assert Flag.INTERVAL_FALLBACK in guessed.flags
    flat_voltage = compute_power([512] * 19, [495] * 19, Calibration())
    clipped = compute_power([0] * 19, [495] * 19, Calibration())
    for result in (legacy, guessed, flat_voltage, clipped):
        tracker.observe(result)
    assert tracker.zero_counts is None
    assert tracker.state.cycle_means == ()


def test_running_zero_follows_a_warming_unit() -> None:
    rng = random.Random(5)
    meter = wf.random_meter(rng)
    radio = wf.Radio()
    cal = Calibration()
    tracker = ZeroDriftTracker(current_zero=492.0, zero_window=30)
    load = wf.reactive(300.0, 0.8)
    for _ in range(30):
        frame = wf.make_frame(load, meter, radio, rng)
        tracker.observe(compute_power(frame.voltage, frame.current, cal))
    warmer = dataclasses.replace(
        meter, current_zero_counts=meter.current_zero_counts + 3.0
    )
    for _ in range(30):
        frame = wf.make_frame(load, warmer, radio, rng)
        tracker.observe(compute_power(frame.voltage, frame.current, cal))
    assert tracker.zero_counts == pytest.approx(warmer.current_zero_counts, abs=0.25)
    assert len(tracker.state.cycle_means) == 30


def test_running_zero_round_trips_and_old_states_still_load() -> None:
    bench = Bench(0.0, seed=10)
    tracker = bench.tracker()
    for _ in range(45):
        tracker.observe(bench.result(wf.resistive(400.0)))
    saved = json.loads(json.dumps(tracker.state.to_json_dict()))
    restored = ZeroDriftTracker(
        current_zero=bench.configured_zero, state=DriftState.from_json_dict(saved)
    )
    assert restored.zero_counts == tracker.zero_counts
    assert restored.zero_counts == pytest.approx(
        bench.meter.current_zero_counts, abs=0.25
    )
    smaller = ZeroDriftTracker(
        current_zero=0.0, zero_window=5, state=DriftState.from_json_dict(saved)
    )
    assert smaller.state.cycle_means == tuple(saved["cycle_means"][-5:])
    del saved["cycle_means"]
    older = DriftState.from_json_dict(saved)
    assert older.cycle_means == ()
    assert ZeroDriftTracker(current_zero=0.0, state=older).zero_counts is None
