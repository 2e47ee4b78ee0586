from __future__ import annotations

import json
import math
import statistics
from typing import TYPE_CHECKING

import pytest

from wattd.core.calibrate import (
    estimate_gains,
    estimate_zero,
    frame_figures,
    sensor_samples,
    t_quantile_975,
)
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.errors import CalibrationError
from wattd.sources.simulate import (
    IDLE,
    InductiveLoad,
    Load,
    MeterModel,
    ResistiveLoad,
    Simulator,
)

if TYPE_CHECKING:
    from pathlib import Path


def decode(data: bytes, api_mode: int = 1) -> list[IoSampleFrame]:
    decoder = FrameDecoder(api_mode)
    return [e for e in decoder.feed(data) if isinstance(e, IoSampleFrame)]


def meter(load: Load, **quirks: float) -> MeterModel:
    base: dict[str, float] = {
        "current_zero_counts": 487.3,
        "voltage_zero_counts": 512.6,
        "voltage_amplitude_counts": 350.0,
        "counts_per_amp": 15.5,
        "vrms": 120.0,
        "sample_interval_ms": 1.31,
        "noise_counts": 0.7,
    }
    base.update(quirks)
    return MeterModel(address=5, load=load, **base)  # type: ignore[arg-type]


def simulated_samples(
    model: MeterModel, frames: int, seed: int = 1
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    sim = Simulator([model], seed=seed)
    data = b"".join(sim.next_frame().data for _ in range(frames))
    return sensor_samples(decode(data), model.address)


# -- no-load zero ------------------------------------------------------------------


def test_zero_of_a_simulated_idle_meter_recovers_the_true_zero() -> None:
    model = meter(IDLE)
    est = estimate_zero(simulated_samples(model, 60), sensor=5)
    assert est.frames == 60
    assert est.samples == 60 * 18  # sample 0 of each frame is dropped
    lo, hi = est.ci95
    assert lo <= model.current_zero_counts <= hi
    assert est.ci95_counts < 0.1
    # The noise is the simulated ADC noise (plus rounding to whole counts).
    assert est.std_counts == pytest.approx(
        math.hypot(model.noise_counts, 1 / math.sqrt(12)), rel=0.15
    )
    assert est.voltage_zero == pytest.approx(model.voltage_zero_counts, abs=0.5)
    assert est.sample_interval_ms == pytest.approx(model.sample_interval_ms, rel=0.01)


@pytest.mark.parametrize("zero", [471.6, 492.0, 506.25])
def test_zero_tracks_any_zero_across_the_real_range(zero: float) -> None:
    est = estimate_zero(simulated_samples(meter(IDLE, current_zero_counts=zero), 30))
    assert abs(est.current_zero - zero) <= max(est.ci95_counts, 0.05)


def test_interval_narrows_with_more_frames() -> None:
    model = meter(IDLE, noise_counts=1.0)
    few = estimate_zero(simulated_samples(model, 5))
    many = estimate_zero(simulated_samples(model, 80))
    assert many.ci95_counts < few.ci95_counts / 2
    # Student's t makes a handful of frames honestly wide.
    assert few.ci95_counts > 2.5 * few.stderr_counts


def test_zero_refuses_a_meter_with_a_load_plugged_in() -> None:
    samples = simulated_samples(meter(ResistiveLoad(watts=60.0)), 10)
    with pytest.raises(CalibrationError, match="Unplug every load") as info:
        estimate_zero(samples, sensor=5)
    assert info.value.sensor == 5
    assert str(info.value).startswith("sensor 5: ")


def test_zero_needs_at_least_two_frames() -> None:
    samples = simulated_samples(meter(IDLE), 1)
    with pytest.raises(CalibrationError, match="at least 2"):
        estimate_zero(samples)


@pytest.mark.parametrize(
    ("name", "sensor", "expected"),
    [("Noisy_Zeros3", 3, 495.2), ("Noisy_Zeros4", 4, 496.1)],
)
def test_zero_of_the_real_no_load_captures(
    captures_dir: Path, name: str, sensor: int, expected: float
) -> None:
    summary = json.loads((captures_dir / f"{name}.json").read_text())
    reference = summary["per_sensor"][str(sensor)]["ad4_samples_1_18"]
    for suffix, mode in ((".bin", 1), (".ap2.bin", 2)):
        frames = decode((captures_dir / f"{name}{suffix}").read_bytes(), mode)
        est = estimate_zero(sensor_samples(frames, sensor), sensor=sensor)
        assert est.frames == summary["frames"]
        assert est.samples == reference["n"]
        assert est.current_zero == pytest.approx(reference["mean"], abs=1e-9)
        assert est.std_counts == pytest.approx(reference["std"], abs=1e-9)
        assert round(est.current_zero, 1) == expected
        assert est.ci95_counts < 0.05
        # The voltage DC level sits 15-27 counts above the current zero.
        assert est.voltage_zero is not None
        assert 15 <= est.voltage_zero - est.current_zero <= 30


# -- reference load --------------------------------------------------------------


def test_gains_from_a_known_load_and_voltmeter_recover_the_truth() -> None:
    model = meter(ResistiveLoad(watts=500.0), vrms=121.5)
    est = estimate_gains(
        simulated_samples(model, 40),
        reference_watts=500.0,
        reference_volts=121.5,
        sensor=5,
    )
    assert est.frames == 40
    assert est.counts_per_amp == pytest.approx(model.counts_per_amp, rel=0.002)
    assert abs(est.counts_per_amp - model.counts_per_amp) <= 2 * est.counts_per_amp_ci95
    assert est.counts_per_volt == pytest.approx(model.counts_per_volt, rel=0.001)
    assert est.voltage_zero == pytest.approx(model.voltage_zero_counts, abs=0.5)
    assert est.power_factor == pytest.approx(1.0, abs=0.005)


@pytest.mark.parametrize("gain", [12.0, 15.5, 19.3])
def test_current_gain_without_a_voltmeter_matches_the_nominal_scaling(
    gain: float,
) -> None:
    # The supply runs at the nominal voltage, so assuming it loses nothing.
    model = meter(ResistiveLoad(watts=300.0), counts_per_amp=gain, vrms=120.0)
    est = estimate_gains(
        simulated_samples(model, 30), reference_watts=300.0, nominal_vrms=120.0
    )
    assert est.reference_volts is None
    assert est.counts_per_volt is None
    assert est.voltage_zero is None
    assert est.counts_per_amp == pytest.approx(gain, rel=0.003)


def test_gain_without_a_voltmeter_absorbs_the_supply_error() -> None:
    # Off-nominal supply: the fitted gain makes the daemon's nominal-scaled
    # watts right, which means it carries the ratio of the two voltages.
    model = meter(ResistiveLoad(watts=300.0), vrms=115.0)
    est = estimate_gains(
        simulated_samples(model, 30), reference_watts=300.0, nominal_vrms=120.0
    )
    assert est.counts_per_amp == pytest.approx(15.5 * 120.0 / 115.0, rel=0.003)


def test_gains_refuse_a_reactive_load() -> None:
    model = meter(InductiveLoad(watts=300.0, power_factor=0.7))
    with pytest.raises(CalibrationError, match="resistive load"):
        estimate_gains(simulated_samples(model, 10), reference_watts=300.0)


def test_gains_refuse_a_load_too_small_to_measure() -> None:
    model = meter(ResistiveLoad(watts=20.0))
    with pytest.raises(CalibrationError, match="at least 100 W"):
        estimate_gains(simulated_samples(model, 10), reference_watts=20.0)


def test_gains_spot_a_reversed_current_channel() -> None:
    samples = simulated_samples(meter(ResistiveLoad(watts=400.0)), 10)
    flipped = [(v, tuple(2 * 487 - x for x in i)) for v, i in samples]
    with pytest.raises(CalibrationError, match="reversed"):
        estimate_gains(flipped, reference_watts=400.0)


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan, math.inf])
def test_gains_reject_nonsense_reference_values(bad: float) -> None:
    samples = simulated_samples(meter(ResistiveLoad(watts=400.0)), 3)
    with pytest.raises(CalibrationError, match="reference watts"):
        estimate_gains(samples, reference_watts=bad)


# -- building blocks --------------------------------------------------------------


def test_frame_figures_are_the_window_statistics_in_counts() -> None:
    model = meter(ResistiveLoad(watts=600.0), noise_counts=0.0)
    sim = Simulator([model], seed=4)
    frame = sim.next_frame()
    figs = frame_figures(frame.voltage_counts, frame.current_counts)
    amplitude = model.counts_per_volt * math.sqrt(2) * model.vrms
    assert figs.voltage_ac_rms_counts == pytest.approx(
        amplitude / math.sqrt(2), rel=0.01
    )
    assert figs.voltage_dc_counts == pytest.approx(model.voltage_zero_counts, abs=1.0)
    irms_counts = model.counts_per_amp * 600.0 / model.vrms
    assert figs.vi_cov_counts2 == pytest.approx(
        amplitude / math.sqrt(2) * irms_counts, rel=0.02
    )
    assert figs.current_mean_counts == pytest.approx(
        statistics.fmean(frame.current_counts[1:])
    )


def test_t_quantiles() -> None:
    assert t_quantile_975(1) == pytest.approx(12.706)
    assert t_quantile_975(30) == pytest.approx(2.042)
    assert t_quantile_975(60) == pytest.approx(2.000, abs=0.002)
    assert t_quantile_975(10_000) == pytest.approx(1.960, abs=0.001)
    with pytest.raises(ValueError, match="at least 1"):
        t_quantile_975(0)
