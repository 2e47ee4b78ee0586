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
"""

from __future__ import annotations

import dataclasses
import functools
import math
from array import array
from operator import mul
from typing import TYPE_CHECKING, Final

from wattd.core.readings import Flag
from wattd.errors import CalibrationError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_COUNTS_PER_AMP",
    "DEFAULT_CURRENT_ZERO",
    "NOMINAL_SAMPLE_INTERVAL_MS",
    "Calibration",
    "PowerResult",
    "compute_legacy",
    "compute_power",
]

DEFAULT_CURRENT_ZERO: Final = 492.0
DEFAULT_COUNTS_PER_AMP: Final = 15.5
# What the radio is told to do (IR=1); only used when nothing better is known.
NOMINAL_SAMPLE_INTERVAL_MS: Final = 1.0
# Pinned or fallback intervals outside this range are configuration mistakes
# (the config accepts the same range).
MIN_INTERVAL_MS: Final = 0.2
MAX_INTERVAL_MS: Final = 5.0
MIN_MAINS_HZ: Final = 10.0
MAX_MAINS_HZ: Final = 1000.0
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

# Window weights are cached per frame length and samples-per-cycle, the latter
# rounded to 1/_CYCLE_STEPS of a sample (under 0.05 % of window length).
_CYCLE_STEPS: Final = 256
_WINDOW_STARTS: Final = 32
_FIT_HARMONICS: Final = (1, 3, 5)
# Harmonics are fitted only well below the Nyquist frequency.
_MAX_FIT_RADIANS: Final = 0.8 * math.pi
_SQRT2: Final = math.sqrt(2.0)
# The weakest voltage AC the window may see before it counts as no waveform
# (the flat-voltage peak-to-peak limit, as a sine's variance).
_MIN_VOLTAGE_VAR_COUNTS2: Final = (FLAT_VOLTAGE_MAX_PP_COUNTS / 2.0) ** 2 / 2.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """Per-sensor calibration.

    ``current_zero`` is the current channel's reading at no load (counts) and
    ``zero_drift_counts`` a tracked correction subtracted on top of it. Voltage
    is scaled so its RMS reads ``nominal_vrms`` unless ``counts_per_volt`` is
    set, in which case it is measured (about ``voltage_zero`` if set, else the
    waveform's own DC level). ``sample_interval_ms`` pins the interval instead
    of measuring it per frame.
    """

    current_zero: float = DEFAULT_CURRENT_ZERO
    counts_per_amp: float = DEFAULT_COUNTS_PER_AMP
    nominal_vrms: float = 120.0
    counts_per_volt: float | None = None
    voltage_zero: float | None = None
    mains_hz: float = 60.0
    sample_interval_ms: float | None = None
    voltage_channel: int = 0
    current_channel: int = 4
    max_amps: float = 20.0
    legacy: bool = False
    zero_drift_counts: float = 0.0

    def __post_init__(self) -> None:
        positive = {
            "counts_per_amp": self.counts_per_amp,
            "nominal_vrms": self.nominal_vrms,
            "mains_hz": self.mains_hz,
            "max_amps": self.max_amps,
            "counts_per_volt": self.counts_per_volt,
            "sample_interval_ms": self.sample_interval_ms,
        }
        for name, value in positive.items():
            if value is not None and not (math.isfinite(value) and value > 0.0):
                msg = f"calibration {name} must be a positive number, got {value!r}"
                raise CalibrationError(msg)
        finite = {
            "current_zero": self.current_zero,
            "voltage_zero": self.voltage_zero,
            "zero_drift_counts": self.zero_drift_counts,
        }
        for name, value in finite.items():
            if value is not None and not math.isfinite(value):
                msg = f"calibration {name} must be a finite number, got {value!r}"
                raise CalibrationError(msg)
        if not MIN_MAINS_HZ <= self.mains_hz <= MAX_MAINS_HZ:
            msg = (
                f"calibration mains_hz {self.mains_hz!r} is outside"
                f" {MIN_MAINS_HZ:g}-{MAX_MAINS_HZ:g} Hz; use 50 or 60"
            )
            raise CalibrationError(msg)
        interval = self.sample_interval_ms
        if interval is not None and not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
            msg = (
                f"calibration sample_interval_ms {interval!r} is outside"
                f" {MIN_INTERVAL_MS:g}-{MAX_INTERVAL_MS:g} ms; leave it unset to"
                " measure it from the voltage waveform"
            )
            raise CalibrationError(msg)


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
    key = max(1, round(per_cycle * _CYCLE_STEPS))
    if k * _CYCLE_STEPS >= key:
        moments = _window_moments(x, y, _window_weights(k, key))
    else:
        flags.add(Flag.PARTIAL_CYCLE)
        moments = _fit_moments(x, y, _fit_rows(k, key))
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


def _measure_interval(x: Sequence[int], mains_hz: float) -> float | None:
    """Sample interval (ms) from the voltage, or None if it is no sinusoid.

    Fits ``x[j-1] + x[j+1] = 2 cos(w) x[j] + c`` by least squares. The sums are
    built from whole-frame and lagged products, in exact integer arithmetic
    for integer samples.
    """
    k = len(x)
    count = k - 2
    first, second, last2, last = x[0], x[1], x[-2], x[-1]
    s_x = sum(x)
    s_xx = sum(map(mul, x, x))
    lag1 = sum(map(mul, x[1:], x[:-1]))
    lag2 = sum(map(mul, x[2:], x[:-2]))
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
    # Each of these is ``count`` times the (co)variance.
    var_m = count * s_mm - s_m * s_m
    var_o = count * s_oo - s_o * s_o
    cov = count * s_mo - s_m * s_o
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


@functools.lru_cache(maxsize=4096)
def _window_weights(count: int, key: int) -> Sequence[float]:
    """Weights (summing to 1) of whole-cycle windows averaged over start points.

    Sample ``j`` stands for the interval ``[j, j+1)``. A window covers the
    largest whole number of cycles that fits and may start anywhere in the
    slack; the weights are averaged over evenly spaced starts.

    Raw doubles, shared by every caller (never modified): a fleet shows
    hundreds of sample intervals, and a tuple of float objects per entry took
    three times the memory.
    """
    per_cycle = key / _CYCLE_STEPS
    length = math.floor(count / per_cycle) * per_cycle
    slack = count - length
    totals = [0.0] * count
    starts = _WINDOW_STARTS if slack > 0.0 else 1
    for s in range(starts):
        lo = slack * s / (starts - 1) if starts > 1 else 0.0
        hi = lo + length
        for j in range(math.floor(lo), min(count, math.ceil(hi))):
            overlap = min(j + 1.0, hi) - max(float(j), lo)
            if overlap > 0.0:
                totals[j] += overlap
    norm = 1.0 / (starts * length)
    return array("d", [t * norm for t in totals])


@functools.lru_cache(maxsize=1024)
def _fit_rows(count: int, key: int) -> tuple[tuple[float, ...], ...]:
    """Least-squares projection rows for DC, cos, sin and harmonics.

    Row 0 gives the DC level, rows 1-2 the fundamental's cosine and sine
    amplitudes, later rows the odd harmonics that fit below Nyquist.
    """
    w = 2.0 * math.pi * _CYCLE_STEPS / key
    centre = 0.5 * (count - 1)
    orders = [h for h in _FIT_HARMONICS if h * w <= _MAX_FIT_RADIANS or h == 1]
    # Keep the system well over-determined: at least two samples per unknown.
    while len(orders) > 1 and 2 * (1 + 2 * len(orders)) > count:
        orders.pop()
    while True:
        basis: list[list[float]] = [[1.0] * count]
        for h in orders:
            basis.append([math.cos(h * w * (j - centre)) for j in range(count)])
            basis.append([math.sin(h * w * (j - centre)) for j in range(count)])
        rows = _pseudo_inverse(basis)
        if rows is not None or len(orders) == 1:
            break
        orders.pop()
    if rows is None:
        # Degenerate (should not happen for a sane interval): plain mean, no AC.
        return ((1.0 / count,) * count, (0.0,) * count, (0.0,) * count)
    return tuple(tuple(r) for r in rows)


def _pseudo_inverse(basis: list[list[float]]) -> list[list[float]] | None:
    """Rows of (B B^T)^-1 B for basis vectors B, by Gauss-Jordan elimination."""
    size = len(basis)
    gram = [[sum(map(mul, a, b)) for b in basis] for a in basis]
    inv = [[1.0 if r == c else 0.0 for c in range(size)] for r in range(size)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(gram[r][col]))
        if abs(gram[pivot][col]) < 1e-9 * max(1.0, gram[col][col]):
            return None
        gram[col], gram[pivot] = gram[pivot], gram[col]
        inv[col], inv[pivot] = inv[pivot], inv[col]
        scale = 1.0 / gram[col][col]
        gram[col] = [v * scale for v in gram[col]]
        inv[col] = [v * scale for v in inv[col]]
        for r in range(size):
            if r != col and gram[r][col] != 0.0:
                f = gram[r][col]
                gram[r] = [a - f * b for a, b in zip(gram[r], gram[col], strict=True)]
                inv[r] = [a - f * b for a, b in zip(inv[r], inv[col], strict=True)]
    count = len(basis[0])
    return [
        [sum(inv[r][c] * basis[c][j] for c in range(size)) for j in range(count)]
        for r in range(size)
    ]
