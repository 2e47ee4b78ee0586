"""Calibration maths: a meter's zero and gains from frames with a known load.

Two procedures, both pure (frames in, estimates out):

* **No load** (:func:`estimate_zero`). With nothing plugged into the
  Kill-A-Watt the current channel reads its zero plus ADC noise, so the zero is
  the mean of the current samples (sample 0 dropped, as everywhere in wattd).
  Samples inside one frame are not independent (mains hum, slow drift), so the
  uncertainty comes from the scatter of the *frame* means, with Student's t
  for few frames. A frame whose current swings more than ADC noise means a
  load is still plugged in, which would bias nothing in the mean of a sine but
  says the operator has not done what the procedure assumes, so it is refused.
* **Reference load** (:func:`estimate_gains`). A resistive load of known power
  ``W`` (a heater or incandescent lamp; optionally with the supply voltage
  ``V`` read from a voltmeter). Over whole mains cycles the covariance of the
  voltage and current counts is the real power in counts squared, and the
  daemon computes ``watts = cov / (counts_per_volt * counts_per_amp)``. Setting
  that equal to ``W`` gives ``counts_per_amp = cov * V / (vac * W)``, where
  ``vac`` is the voltage's AC RMS in counts and ``V`` the reference voltage
  (or the nominal voltage the daemon scales to when no voltmeter reading is
  given). The covariance ignores noise that is uncorrelated with the voltage,
  so this is sharper than a ratio of RMS values. With ``V`` the voltage gain is
  ``vac / V`` counts per volt, about the waveform's DC level.

The whole-cycle window statistics come from :func:`wattd.core.power.compute_power`
run with unit gains, so calibration sees the samples exactly as the daemon does.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import TYPE_CHECKING, Final

from wattd.core.calibration import Calibration
from wattd.core.power import compute_power
from wattd.core.readings import Flag
from wattd.errors import CalibrationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from wattd.core.iosample import IoSampleFrame

__all__ = [
    "MIN_FRAMES",
    "FrameFigures",
    "GainEstimate",
    "ZeroEstimate",
    "estimate_gains",
    "estimate_zero",
    "frame_figures",
    "sensor_samples",
    "t_quantile_975",
]

# Two frame means are the fewest that give any spread at all; the CLI asks for
# far more, this is only the floor below which no estimate is honest.
MIN_FRAMES: Final = 2
# ADC noise on a real idle unit is 0.4-1 count RMS (public no-load captures);
# a swing of 3 counts RMS is ~0.2 A, i.e. something is drawing current.
NO_LOAD_MAX_AC_COUNTS: Final = 3.0
# Below ~0.6 A (10 counts RMS at 15.5 counts/A) ADC noise is a sizeable part of
# the current and the fitted gain would be poor; ask for a bigger load.
REFERENCE_MIN_AC_COUNTS: Final = 10.0
# A heater or lamp has a power factor of 1.00; below this the load is not
# resistive (motor, SMPS) and "known watts" do not pin down the current.
REFERENCE_MIN_POWER_FACTOR: Final = 0.95
# A voltage channel with less swing than this carries no mains waveform.
MIN_VOLTAGE_AC_COUNTS: Final = 20.0

# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom.
_T975: Final = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975: Final = 1.959964


def t_quantile_975(dof: int) -> float:
    """The 97.5 % quantile of Student's t (the half-width factor of a 95 % CI)."""
    if dof < 1:
        msg = f"degrees of freedom must be at least 1, got {dof}"
        raise ValueError(msg)
    if dof <= len(_T975):
        return _T975[dof - 1]
    # Beyond 30 the normal quantile plus the first correction term is within
    # 0.1 % of the exact value.
    return _Z975 + (_Z975**3 + _Z975) / (4.0 * dof)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FrameFigures:
    """One frame's figures in ADC counts, over whole mains cycles where possible."""

    current_mean_counts: float
    """Plain mean of the kept current samples (sample 0 dropped)."""
    current_ac_rms_counts: float
    """The current's RMS about its own mean, over the whole-cycle window."""
    voltage_dc_counts: float
    """The voltage waveform's DC level over the whole-cycle window."""
    voltage_ac_rms_counts: float
    vi_cov_counts2: float
    """Covariance of voltage and current: real power in counts squared."""
    sample_interval_ms: float | None
    flags: frozenset[Flag]


# Unit gains make compute_power report its window statistics in counts:
# vrms is the voltage AC RMS, watts the covariance (the voltage is centred on its
# own DC level, so the current zero drops out).
def _probe(mains_hz: float, *, voltage_zero: float | None) -> Calibration:
    return Calibration(
        current_zero=0.0,
        counts_per_amp=1.0,
        counts_per_volt=1.0,
        voltage_zero=voltage_zero,
        mains_hz=mains_hz,
        max_amps=1e6,
    )


def frame_figures(
    voltage: Sequence[int], current: Sequence[int], *, mains_hz: float = 60.0
) -> FrameFigures:
    """Window statistics of one frame's samples, in counts.

    Raises:
        CalibrationError: if the frame holds too few samples for any figure.
    """
    kept = current[1:]
    if len(kept) < 2 or len(voltage) < 2:
        msg = f"a frame with {len(current)} current samples is too short to use"
        raise CalibrationError(msg)
    centred = compute_power(voltage, current, _probe(mains_hz, voltage_zero=None))
    # Measured about a zero of 0 counts, the voltage RMS also holds the DC level:
    # rms0^2 = ac^2 + dc^2.
    about_zero = compute_power(
        voltage,
        current,
        _probe(mains_hz, voltage_zero=0.0),
        fallback_interval_ms=centred.sample_interval_ms,
    )
    dc_sq = about_zero.vrms**2 - centred.vrms**2
    return FrameFigures(
        current_mean_counts=statistics.fmean(kept),
        current_ac_rms_counts=centred.current_ac_rms_counts,
        voltage_dc_counts=math.sqrt(max(0.0, dc_sq)),
        voltage_ac_rms_counts=centred.vrms,
        vi_cov_counts2=centred.watts,
        sample_interval_ms=centred.sample_interval_ms
        if centred.interval_measured
        else None,
        flags=centred.flags,
    )


def sensor_samples(
    frames: Iterable[IoSampleFrame],
    sensor: int,
    *,
    voltage_channel: int = 0,
    current_channel: int = 4,
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (voltage, current) samples of every frame from ``sensor`` that has both."""
    out = []
    for frame in frames:
        if frame.sensor_id != sensor:
            continue
        v = frame.channel(voltage_channel)
        i = frame.channel(current_channel)
        if len(v) >= 2 and len(i) >= 2:
            out.append((v, i))
    return out


def _mean_and_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, standard error and 95 % half-width of independent values."""
    mean = statistics.fmean(values)
    n = len(values)
    if n < 2:
        return mean, math.inf, math.inf
    stderr = statistics.stdev(values, mean) / math.sqrt(n)
    return mean, stderr, t_quantile_975(n - 1) * stderr


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ZeroEstimate:
    """The current channel's zero from no-load frames, with its uncertainty."""

    sensor: int | None
    current_zero: float
    """Mean of all kept current samples, in counts."""
    std_counts: float
    """Population standard deviation of those samples: the ADC noise."""
    frames: int
    samples: int
    stderr_counts: float
    """Standard error of the zero, from the scatter of frame means."""
    ci95_counts: float
    """Half-width of the 95 % confidence interval of the zero."""
    voltage_zero: float | None
    """The voltage channel's DC level (counts), if the voltage was usable."""
    sample_interval_ms: float | None

    @property
    def ci95(self) -> tuple[float, float]:
        """The 95 % confidence interval of the zero."""
        return (
            self.current_zero - self.ci95_counts,
            self.current_zero + self.ci95_counts,
        )


def estimate_zero(
    samples: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    sensor: int | None = None,
    mains_hz: float = 60.0,
    max_ac_counts: float = NO_LOAD_MAX_AC_COUNTS,
) -> ZeroEstimate:
    """The current zero from no-load frames (``(voltage, current)`` samples each).

    Raises:
        CalibrationError: too few frames, or the current swings like a load is
            still plugged in.
    """
    if len(samples) < MIN_FRAMES:
        msg = (
            f"{len(samples)} usable frame(s); at least {MIN_FRAMES} are needed"
            " (a Tweet-a-Watt sends one every ~2 s: collect for longer)"
        )
        raise CalibrationError(msg, sensor=sensor)
    figures = [frame_figures(v, i, mains_hz=mains_hz) for v, i in samples]
    swing = statistics.median(f.current_ac_rms_counts for f in figures)
    if swing > max_ac_counts:
        msg = (
            f"the current swings {swing:.1f} counts RMS within a frame (ADC noise"
            f" alone is under {max_ac_counts:g}); something is drawing current."
            " Unplug every load from the Kill-A-Watt and calibrate again"
        )
        raise CalibrationError(msg, sensor=sensor)
    kept = [x for _, current in samples for x in current[1:]]
    mean = statistics.fmean(kept)
    frame_means = [f.current_mean_counts for f in figures]
    _, stderr, half = _mean_and_ci(frame_means)
    usable = [
        f
        for f in figures
        if f.voltage_ac_rms_counts >= MIN_VOLTAGE_AC_COUNTS
        and Flag.CLIPPED not in f.flags
    ]
    intervals = [f.sample_interval_ms for f in figures if f.sample_interval_ms]
    return ZeroEstimate(
        sensor=sensor,
        current_zero=mean,
        std_counts=statistics.pstdev(kept, mean),
        frames=len(samples),
        samples=len(kept),
        stderr_counts=stderr,
        ci95_counts=half,
        voltage_zero=statistics.fmean(f.voltage_dc_counts for f in usable)
        if usable
        else None,
        sample_interval_ms=statistics.median(intervals) if intervals else None,
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GainEstimate:
    """Current and voltage gains fitted to a known resistive load."""

    sensor: int | None
    reference_watts: float
    reference_volts: float | None
    """The voltmeter reading, or None when the nominal voltage was assumed."""
    volts_used: float
    """``reference_volts`` or the nominal voltage the daemon scales to."""
    counts_per_amp: float
    counts_per_amp_ci95: float
    counts_per_volt: float | None
    """Only with a voltmeter reading: without one the voltage is not measured."""
    counts_per_volt_ci95: float | None
    voltage_zero: float | None
    power_factor: float
    """Mean correlation of voltage and current: 1.00 for a resistive load."""
    frames: int
    sample_interval_ms: float | None


def estimate_gains(
    samples: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    reference_watts: float,
    reference_volts: float | None = None,
    nominal_vrms: float = 120.0,
    sensor: int | None = None,
    mains_hz: float = 60.0,
) -> GainEstimate:
    """Fit counts per amp (and counts per volt with a voltmeter reading).

    Raises:
        CalibrationError: bad reference values, too few usable frames, or a load
            that is too small or not resistive.
    """
    for name, value in (
        ("reference watts", reference_watts),
        ("reference volts", reference_volts),
        ("nominal volts", nominal_vrms),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            msg = f"{name} must be a positive number, got {value!r}"
            raise CalibrationError(msg, sensor=sensor)
    figures = [frame_figures(v, i, mains_hz=mains_hz) for v, i in samples]
    usable = [
        f
        for f in figures
        if f.voltage_ac_rms_counts >= MIN_VOLTAGE_AC_COUNTS
        and not f.flags & {Flag.CLIPPED, Flag.FLAT_VOLTAGE}
    ]
    if len(usable) < MIN_FRAMES:
        msg = (
            f"{len(usable)} usable frame(s) of {len(figures)} (the others had a flat"
            " or clipped waveform); at least"
            f" {MIN_FRAMES} are needed"
        )
        raise CalibrationError(msg, sensor=sensor)
    current_ac = statistics.median(f.current_ac_rms_counts for f in usable)
    if current_ac < REFERENCE_MIN_AC_COUNTS:
        msg = (
            f"the current is only {current_ac:.1f} counts RMS; use a reference load"
            " of at least 100 W so that noise does not dominate"
        )
        raise CalibrationError(msg, sensor=sensor)
    pfs = [
        f.vi_cov_counts2 / (f.voltage_ac_rms_counts * f.current_ac_rms_counts)
        for f in usable
        if f.current_ac_rms_counts > 0
    ]
    power_factor = statistics.fmean(pfs) if pfs else 0.0
    if power_factor < REFERENCE_MIN_POWER_FACTOR:
        msg = (
            f"the load's power factor is {power_factor:.2f}, not ~1.00; use a"
            " resistive load (heater, kettle, incandescent lamp), not a motor or"
            " a switch-mode supply"
            if power_factor > 0
            else "voltage and current are not in phase: is the current channel"
            " reversed, or are voltage_channel/current_channel swapped?"
        )
        raise CalibrationError(msg, sensor=sensor)
    volts = reference_volts if reference_volts is not None else nominal_vrms
    cpa, _, cpa_half = _mean_and_ci(
        [
            f.vi_cov_counts2 * volts / (f.voltage_ac_rms_counts * reference_watts)
            for f in usable
        ]
    )
    cpv: float | None = None
    cpv_half: float | None = None
    v_zero: float | None = None
    if reference_volts is not None:
        cpv, _, cpv_half = _mean_and_ci(
            [f.voltage_ac_rms_counts / reference_volts for f in usable]
        )
        v_zero = statistics.fmean(f.voltage_dc_counts for f in usable)
    intervals = [f.sample_interval_ms for f in usable if f.sample_interval_ms]
    return GainEstimate(
        sensor=sensor,
        reference_watts=reference_watts,
        reference_volts=reference_volts,
        volts_used=volts,
        counts_per_amp=cpa,
        counts_per_amp_ci95=cpa_half,
        counts_per_volt=cpv,
        counts_per_volt_ci95=cpv_half,
        voltage_zero=v_zero,
        power_factor=power_factor,
        frames=len(usable),
        sample_interval_ms=statistics.median(intervals) if intervals else None,
    )
