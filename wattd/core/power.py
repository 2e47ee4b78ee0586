"""Kill-A-Watt power maths: ADC samples plus calibration in, true power out.

A Tweet-a-Watt frame holds 19 voltage and 19 current samples (10-bit counts).
Strategy, and why:

* Sample 0 is dropped. It is off the sampling grid (its gap to sample 1 is
  12-18 % longer than the rest) and noisier than the others.
* The sample interval is estimated from the voltage waveform of every frame.
  The radio is set to sample every 1 ms but really samples every ~1.2-1.45 ms,
  so "17 samples = one 60 Hz cycle" is wrong by up to 45 %. A pure sinusoid
  obeys ``x[n-1] + x[n+1] = 2 cos(w) x[n] + const`` at any phase and DC level,
  so a least-squares fit of that line gives ``w`` (radians per sample) in one
  pass, for whole or partial cycles alike.
* Averages are taken over whole mains cycles. Over a whole cycle the AC part of
  ``v*i`` (and of ``v`` and ``i``) averages out; over a fraction of a cycle it
  does not, and the error depends on where in the cycle the frame began. A cycle
  is rarely a whole number of samples, so each sample stands for one sample
  interval and the sample at the window edge counts for the fraction of it that
  falls inside. The window weights are averaged over many start positions
  inside the frame, which uses every sample and cancels most of what is left
  of the edge error.
* Real power is the signed mean of ``v*i`` (never ``|v*i|``). With the voltage
  DC level taken from the same whole-cycle window, an error in the configured
  current zero cannot make phantom watts.
* When the frame spans less than one cycle, figures come from least-squares
  sine fits (fundamental for the voltage; fundamental, 3rd and 5th harmonics for
  the current) and carry :attr:`Flag.PARTIAL_CYCLE`.

Nothing here raises on sample data: bad or odd input yields figures plus flags.
``compute_legacy`` reproduces the 2009 wattcher figures for comparison only.
The calibration is :class:`wattd.core.calibration.Calibration`; the window
weights and fit rows come from :mod:`wattd.core.windows`.
"""

from __future__ import annotations

import dataclasses
import math
from operator import mul
from typing import TYPE_CHECKING, Any, Final

from wattd.core.calibration import MAX_INTERVAL_MS, MIN_INTERVAL_MS
from wattd.core.readings import Flag
from wattd.core.windows import CYCLE_STEPS, fit_rows, window_weights

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wattd.core.calibration import Calibration

__all__ = [
    "NOMINAL_SAMPLE_INTERVAL_MS",
    "PowerResult",
    "compute_legacy",
    "compute_power",
    "kept_sample_count",
]

# What the radio is told to do (IR=1); only used when nothing better is known.
NOMINAL_SAMPLE_INTERVAL_MS: Final = 1.0
ADC_MAX: Final = 1023
# Fewer kept samples than this cannot pin down a sinusoid plus DC level.
MIN_KEPT_SAMPLES: Final = 6
# Real units swing 500-800 counts peak to peak; below this there is no mains
# waveform on the voltage channel (unplugged divider, dead op-amp).
FLAT_VOLTAGE_MAX_PP_COUNTS: Final = 30
# Intervals outside this range are not believed when measured (a clean
# waveform at such an interval would still be implausible for an XBee S1).
MIN_MEASURED_INTERVAL_MS: Final = 0.5
MAX_MEASURED_INTERVAL_MS: Final = 3.0
# The interval fit is rejected when its residual exceeds this fraction of the
# waveform's RMS: the voltage is not a sinusoid (noise, garbage, heavy clipping).
MAX_INTERVAL_FIT_RESIDUAL: Final = 0.2
# Less than half a cycle holds too little curvature to measure the frequency.
MIN_CYCLES_TO_MEASURE: Final = 0.5
# ADC noise alone gives ~0.5-1 count of current RMS; below this much AC current
# a power factor is mostly noise and is reported as None.
PF_MIN_CURRENT_AC_RMS_COUNTS: Final = 2.0
# Per-frame real power scatters by a few watts at no load; only a clearly
# negative figure (reversed current channel, back-feed) is flagged.
NEGATIVE_POWER_MIN_WATTS: Final = 10.0
NEGATIVE_POWER_MIN_VA_FRACTION: Final = 0.1
# The 2009 code's voltage scale: +/-170 V peak for 120 V mains.
LEGACY_MAINS_VPP: Final = 340.0
LEGACY_NOMINAL_VRMS: Final = 120.0
LEGACY_SAMPLES: Final = 17

_SQRT2: Final = math.sqrt(2.0)
# The weakest voltage AC the window may see before it counts as no waveform
# (the flat-voltage peak-to-peak limit, as a sine's variance).
_MIN_VOLTAGE_VAR_COUNTS2: Final = (FLAT_VOLTAGE_MAX_PP_COUNTS / 2.0) ** 2 / 2.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PowerResult:
    """Figures computed from one frame's samples.

    ``sample_interval_ms`` is the interval used (measured, pinned or fallback;
    ``None`` in legacy mode) and ``interval_measured`` tells whether it came
    from this frame. ``cycles`` is the mains cycles spanned by the kept samples.
    The last four fields feed the current-zero tracker and the waveform view:
    the raw current counts' mean over the window, their AC RMS about that mean,
    the correlation of voltage and current, and the voltage's DC level (counts)
    over the same window.
    """

    watts: float
    va: float
    vrms: float
    irms: float
    power_factor: float | None
    sample_interval_ms: float | None
    interval_measured: bool
    cycles: float
    flags: frozenset[Flag]
    current_mean_counts: float
    current_ac_rms_counts: float
    vi_correlation: float
    voltage_mean_counts: float


def compute_power(
    voltage: Sequence[int],
    current: Sequence[int],
    cal: Calibration,
    *,
    fallback_interval_ms: float | None = None,
    current_zero: float | None = None,
) -> PowerResult:
    """Compute power figures from one frame's voltage and current samples.

    ``fallback_interval_ms`` (the caller's running estimate for this sensor) is
    used when this frame's interval cannot be measured. ``current_zero`` (the
    caller's estimate, in counts) stands in for ``cal.current_zero``.
    ``cal.legacy`` selects :func:`compute_legacy`.
    """
    if cal.legacy:
        return compute_legacy(voltage, current, cal)
    flags: set[Flag] = set()
    x, y, extremes = _kept(voltage, current, flags)
    k = len(x)
    if k < MIN_KEPT_SAMPLES:
        if Flag.MISSING_CHANNEL not in flags:
            flags.add(Flag.TOO_FEW_SAMPLES)
        return _empty(flags, cal.sample_interval_ms, x, y)
    xmax, xmin, ymax, ymin = extremes
    interval = cal.sample_interval_ms
    measured = False
    if xmax - xmin < FLAT_VOLTAGE_MAX_PP_COUNTS:
        flags.add(Flag.FLAT_VOLTAGE)
        if interval is None:
            interval = _fallback(fallback_interval_ms, flags)
        return _empty(
            flags, interval, x, y, cycles=k * interval * cal.mains_hz / 1000.0
        )
    if interval is None:
        if xmin > 0 and xmax < ADC_MAX:
            interval = _measure_interval(x, cal.mains_hz)
            measured = interval is not None
        if interval is None:
            interval = _fallback(fallback_interval_ms, flags)
    per_cycle = 1000.0 / (interval * cal.mains_hz)
    key = max(1, round(per_cycle * CYCLE_STEPS))
    if k * CYCLE_STEPS >= key:
        moments = _window_moments(x, y, window_weights(k, key))
    else:
        flags.add(Flag.PARTIAL_CYCLE)
        moments = _fit_moments(x, y, fit_rows(k, key))
    if moments[2] < _MIN_VOLTAGE_VAR_COUNTS2:
        # A step or spike, not a waveform: the window sees no AC voltage.
        flags.add(Flag.FLAT_VOLTAGE)
        return _empty(flags, interval, x, y, cycles=k / per_cycle)
    return _figures(
        moments,
        cal,
        cal.current_zero if current_zero is None else current_zero,
        flags,
        ypeak=(ymax, ymin),
        interval=interval,
        measured=measured,
        cycles=k / per_cycle,
    )


def compute_legacy(
    voltage: Sequence[int], current: Sequence[int], cal: Calibration
) -> PowerResult:
    """Reproduce the 2009 wattcher figures (mean ``|v*i|``), for comparison only.

    Sample 0 is dropped; the voltage is centred on the midpoint of its measured
    extremes and scaled so that its peak-to-peak reads 340 V per 120 V of
    ``cal.nominal_vrms``, with the original's integer (floor) divisions; the
    current is ``(raw - current_zero) / counts_per_amp``. ``watts`` is the mean
    of ``|v*i|`` and ``irms`` the mean of ``|i|`` (not an RMS) over the first
    17 kept samples. ``vrms`` is the assumed nominal voltage.
    """
    flags: set[Flag] = {Flag.LEGACY}
    x, y, _ = _kept(voltage, current, flags)
    k = len(x)
    if k == 0:
        if Flag.MISSING_CHANNEL not in flags:
            flags.add(Flag.TOO_FEW_SAMPLES)
        return dataclasses.replace(
            _empty(flags, None, x, y), sample_interval_ms=None, cycles=1.0
        )
    vmax = max(x)
    vmin = min(x)
    mid = (vmax + vmin) // 2
    vpp = vmax - vmin
    mains_vpp = LEGACY_MAINS_VPP * cal.nominal_vrms / LEGACY_NOMINAL_VRMS
    if vpp == 0:
        flags.add(Flag.FLAT_VOLTAGE)
        volts = [0.0] * k
    else:
        volts = [((raw - mid) * mains_vpp) // vpp for raw in x]
    amps = [(raw - cal.current_zero) / cal.counts_per_amp for raw in y]
    used = min(LEGACY_SAMPLES, k)
    watts = sum(abs(volts[j] * amps[j]) for j in range(used)) / used
    mean_abs_amps = sum(abs(a) for a in amps[:used]) / used
    if mean_abs_amps > cal.max_amps:
        flags.add(Flag.OVERCURRENT)
    mean_y = sum(y) / k
    var_y = max(0.0, sum(v * v for v in y) / k - mean_y * mean_y)
    mean_x = sum(x) / k
    var_x = max(0.0, sum(v * v for v in x) / k - mean_x * mean_x)
    cov = sum(map(mul, x, y)) / k - mean_x * mean_y
    return PowerResult(
        watts=watts,
        va=watts,
        vrms=0.0 if vpp == 0 else cal.nominal_vrms,
        irms=mean_abs_amps,
        power_factor=None,
        sample_interval_ms=None,
        interval_measured=False,
        cycles=1.0,
        flags=frozenset(flags),
        current_mean_counts=mean_y,
        current_ac_rms_counts=math.sqrt(var_y),
        vi_correlation=_correlation(cov, var_x, var_y),
        voltage_mean_counts=mean_x,
    )


# -- helpers -------------------------------------------------------------------


# Window statistics in counts, as a plain tuple because it is built per frame:
# (mean_x, mean_y, var_x, var_y, cov) of voltage x and current y.
_Moments = tuple[float, float, float, float, float]
_Extremes = tuple[int, int, int, int]


def kept_sample_count(voltage: Sequence[int], current: Sequence[int]) -> int:
    """How many sample pairs of a frame the figures use: all but sample 0."""
    if not voltage or not current:
        return 0
    return min(len(voltage), len(current)) - 1


def _kept(
    voltage: Sequence[int], current: Sequence[int], flags: set[Flag]
) -> tuple[Sequence[int], Sequence[int], _Extremes]:
    """Samples 1.. of both channels (equal length, inside the ADC range).

    Also returns (max, min) of the kept voltage and current samples and flags
    clipping anywhere in the frame, sample 0 included.
    """
    if not voltage or not current:
        flags.add(Flag.MISSING_CHANNEL)
        return (), (), (0, 0, 0, 0)
    n = min(len(voltage), len(current))
    x = voltage[1:n]
    y = current[1:n]
    if not x:
        lo = min(voltage[0], current[0])
        hi = max(voltage[0], current[0])
        extremes = (0, 0, 0, 0)
    else:
        extremes = (max(x), min(x), max(y), min(y))
        lo = min(extremes[1], extremes[3], voltage[0], current[0])
        hi = max(extremes[0], extremes[2], voltage[0], current[0])
    if lo <= 0 or hi >= ADC_MAX:
        flags.add(Flag.CLIPPED)
        if x and (lo < 0 or hi > ADC_MAX):
            # Not a 10-bit reading at all; pinning it to the rails keeps the
            # arithmetic bounded and the CLIPPED flag says what happened.
            x = [min(ADC_MAX, max(0, v)) for v in x]
            y = [min(ADC_MAX, max(0, v)) for v in y]
            extremes = (max(x), min(x), max(y), min(y))
    return x, y, extremes


def _fallback(fallback_interval_ms: float | None, flags: set[Flag]) -> float:
    flags.add(Flag.INTERVAL_FALLBACK)
    if (
        fallback_interval_ms is not None
        and MIN_INTERVAL_MS <= fallback_interval_ms <= MAX_INTERVAL_MS
    ):
        return fallback_interval_ms
    return NOMINAL_SAMPLE_INTERVAL_MS


def interval_fit_sums(
    count: int,
    ends: tuple[Any, Any, Any, Any],
    s_x: Any,
    s_xx: Any,
    lag1: Any,
    lag2: Any,
) -> tuple[Any, Any, Any]:
    """``count`` times the variances of the fit's two sides and their covariance.

    From whole-frame sums (``ends``: the first two and last two samples). Plain
    arithmetic, so the batch path hands in arrays and gets the same numbers.
    """
    first, second, last2, last = ends
    s_m = s_x - first - last
    s_o = 2 * s_x - first - second - last2 - last
    s_mm = s_xx - first * first - last * last
    s_mo = 2 * lag1 - first * second - last2 * last
    s_oo = (
        2 * s_xx
        - first * first
        - second * second
        - last2 * last2
        - last * last
        + 2 * lag2
    )
    var_m = count * s_mm - s_m * s_m
    var_o = count * s_oo - s_o * s_o
    cov = count * s_mo - s_m * s_o
    return var_m, var_o, cov


def _measure_interval(x: Sequence[int], mains_hz: float) -> float | None:
    """Sample interval (ms) from the voltage, or None if it is no sinusoid.

    Fits ``x[j-1] + x[j+1] = 2 cos(w) x[j] + c`` by least squares. The sums are
    built from whole-frame and lagged products, in exact integer arithmetic
    for integer samples.
    """
    k = len(x)
    var_m, var_o, cov = interval_fit_sums(
        k - 2,
        (x[0], x[1], x[-2], x[-1]),
        sum(x),
        sum(map(mul, x, x)),
        sum(map(mul, x[1:], x[:-1])),
        sum(map(mul, x[2:], x[:-2])),
    )
    if var_m <= 0:
        return None
    slope = cov / var_m
    residual = var_o - slope * cov
    if residual > (MAX_INTERVAL_FIT_RESIDUAL * MAX_INTERVAL_FIT_RESIDUAL) * var_m:
        return None
    cos_w = 0.5 * slope
    if not -1.0 < cos_w < 1.0:
        return None
    interval = math.acos(cos_w) * 1000.0 / (2.0 * math.pi * mains_hz)
    if not MIN_MEASURED_INTERVAL_MS <= interval <= MAX_MEASURED_INTERVAL_MS:
        return None
    if k * interval * mains_hz < MIN_CYCLES_TO_MEASURE * 1000.0:
        return None
    return interval


def _window_moments(
    x: Sequence[int], y: Sequence[int], weights: Sequence[float]
) -> _Moments:
    wx = list(map(mul, weights, x))
    wy = list(map(mul, weights, y))
    mean_x = sum(wx)
    mean_y = sum(wy)
    return (
        mean_x,
        mean_y,
        max(0.0, sum(map(mul, wx, x)) - mean_x * mean_x),
        max(0.0, sum(map(mul, wy, y)) - mean_y * mean_y),
        sum(map(mul, wx, y)) - mean_x * mean_y,
    )


def _fit_moments(
    x: Sequence[int], y: Sequence[int], rows: tuple[tuple[float, ...], ...]
) -> _Moments:
    """Least-squares sine fits: DC + fundamental (x), DC + harmonics (y).

    Real power only needs the current's fundamental when the voltage is a
    sinusoid; fitting the harmonics too keeps them from leaking into it.
    """
    vdc, vc, vs = (sum(map(mul, rows[r], x)) for r in range(3))
    coef_y = [sum(map(mul, row, y)) for row in rows]
    return (
        vdc,
        coef_y[0],
        0.5 * (vc * vc + vs * vs),
        0.5 * sum(c * c for c in coef_y[1:]),
        0.5 * (vc * coef_y[1] + vs * coef_y[2]),
    )


def _figures(
    moments: _Moments,
    cal: Calibration,
    current_zero: float,
    flags: set[Flag],
    *,
    ypeak: tuple[int, int],
    interval: float,
    measured: bool,
    cycles: float,
) -> PowerResult:
    """Turn window moments in counts into volts, amps and watts."""
    mean_x, mean_y, var_x, var_y, cov = moments
    i_zero = current_zero + cal.zero_drift_counts
    if cal.counts_per_volt is None:
        v_zero = mean_x
        v_scale = cal.nominal_vrms / math.sqrt(var_x)
    else:
        v_zero = mean_x if cal.voltage_zero is None else cal.voltage_zero
        v_scale = 1.0 / cal.counts_per_volt
    dv = mean_x - v_zero
    di = mean_y - i_zero
    a_scale = 1.0 / cal.counts_per_amp
    vrms = math.sqrt(var_x + dv * dv) * v_scale
    irms = math.sqrt(var_y + di * di) * a_scale
    watts = (cov + dv * di) * v_scale * a_scale
    va = vrms * irms
    ac_rms_y = math.sqrt(var_y)
    power_factor = None
    if va > 0.0 and ac_rms_y >= PF_MIN_CURRENT_AC_RMS_COUNTS:
        power_factor = max(-1.0, min(1.0, watts / va))
    peak = max(ypeak[0] - i_zero, i_zero - ypeak[1]) * a_scale
    if irms > cal.max_amps or peak > cal.max_amps * _SQRT2:
        flags.add(Flag.OVERCURRENT)
    if watts < -max(NEGATIVE_POWER_MIN_WATTS, NEGATIVE_POWER_MIN_VA_FRACTION * va):
        flags.add(Flag.NEGATIVE_POWER)
    return PowerResult(
        watts=watts,
        va=va,
        vrms=vrms,
        irms=irms,
        power_factor=power_factor,
        sample_interval_ms=interval,
        interval_measured=measured,
        cycles=cycles,
        flags=frozenset(flags),
        current_mean_counts=mean_y,
        current_ac_rms_counts=ac_rms_y,
        vi_correlation=_correlation(cov, var_x, var_y),
        voltage_mean_counts=mean_x,
    )


def _empty(
    flags: set[Flag],
    interval: float | None,
    x: Sequence[int],
    y: Sequence[int],
    *,
    cycles: float = 0.0,
) -> PowerResult:
    """All-zero figures for a frame with no usable voltage waveform."""
    mean_y = sum(y) / len(y) if y else 0.0
    var_y = sum((v - mean_y) ** 2 for v in y) / len(y) if y else 0.0
    return PowerResult(
        watts=0.0,
        va=0.0,
        vrms=0.0,
        irms=0.0,
        power_factor=None,
        sample_interval_ms=interval,
        interval_measured=False,
        cycles=cycles,
        flags=frozenset(flags),
        current_mean_counts=mean_y,
        current_ac_rms_counts=math.sqrt(var_y),
        vi_correlation=0.0,
        voltage_mean_counts=sum(x) / len(x) if x else 0.0,
    )


def _correlation(cov: float, var_x: float, var_y: float) -> float:
    denom = var_x * var_y
    if denom <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, cov / math.sqrt(denom)))
