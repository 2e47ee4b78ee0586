"""The power maths of :mod:`wattd.core.power`, over many frames at once.

Rows are frames, columns the kept samples (sample 0 dropped). The maths is
split where the per-sensor state comes in:

1. :func:`extremes_and_interval`: clipping, flatness and the measured sample
   interval. None of it depends on any state.
2. :func:`window_moments`: the whole-cycle window statistics for a known
   interval (measured, pinned or the sensor's running estimate).
3. :func:`figures`: volts, amps, watts, VA and PF once the current zero of
   each row is known.

Each step does the per-frame code's arithmetic in the same order: the
interval fit in exact integers, and every sum left to right over the samples
as Python's ``sum`` adds them, so the figures agree to the last bit or
nearly. Rows the arrays do not cover (a frame shorter than a cycle, no
voltage waveform, values outside the ADC range) are marked for the caller to
hand to :func:`wattd.core.power.compute_power`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Final

import numpy as np

from wattd.core.power import (
    ADC_MAX,
    FLAT_VOLTAGE_MAX_PP_COUNTS,
    MAX_INTERVAL_FIT_RESIDUAL,
    MAX_MEASURED_INTERVAL_MS,
    MIN_CYCLES_TO_MEASURE,
    MIN_MEASURED_INTERVAL_MS,
    NEGATIVE_POWER_MIN_VA_FRACTION,
    NEGATIVE_POWER_MIN_WATTS,
    PF_MIN_CURRENT_AC_RMS_COUNTS,
    interval_fit_sums,
)
from wattd.core.windows import CYCLE_STEPS

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "Extremes",
    "Figures",
    "Moments",
    "Scales",
    "correlation",
    "extremes_and_interval",
    "figures",
    "window_moments",
]

_SQRT2: Final = math.sqrt(2.0)
_MIN_VOLTAGE_VAR_COUNTS2: Final = (FLAT_VOLTAGE_MAX_PP_COUNTS / 2.0) ** 2 / 2.0
_RESIDUAL_LIMIT: Final = MAX_INTERVAL_FIT_RESIDUAL * MAX_INTERVAL_FIT_RESIDUAL
# The start points window_weights averages over (wattd.core.windows).
_WINDOW_STARTS: Final = 32


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Extremes:
    """Per row: extremes, flags that need no state, and the measured interval."""

    ymax: NDArray[np.int64]
    ymin: NDArray[np.int64]
    clipped: NDArray[np.bool_]
    odd: NDArray[np.bool_]
    """Rows for the per-frame code: flat voltage or values outside the ADC."""
    interval_ms: NDArray[np.float64]
    """The measured interval, NaN where it could not be measured."""


def _column_sum(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row sums, added left to right as the per-frame code's ``sum`` does."""
    total = values[:, 0].copy()
    for j in range(1, values.shape[1]):
        total += values[:, j]
    return total


def extremes_and_interval(
    voltage: NDArray[np.int64],
    current: NDArray[np.int64],
    mains_hz: NDArray[np.float64],
    measure: NDArray[np.bool_],
) -> Extremes:
    """Step 1 on whole frames (sample 0 included, as the ADC sent them).

    ``measure`` marks the rows whose calibration does not pin the interval.
    """
    x = voltage[:, 1:]
    y = current[:, 1:]
    xmax, xmin = x.max(axis=1), x.min(axis=1)
    ymax, ymin = y.max(axis=1), y.min(axis=1)
    lo = np.minimum(np.minimum(xmin, ymin), np.minimum(voltage[:, 0], current[:, 0]))
    hi = np.maximum(np.maximum(xmax, ymax), np.maximum(voltage[:, 0], current[:, 0]))
    clipped = (lo <= 0) | (hi >= ADC_MAX)
    odd = (lo < 0) | (hi > ADC_MAX) | (xmax - xmin < FLAT_VOLTAGE_MAX_PP_COUNTS)
    interval = np.full(len(x), np.nan)
    todo = measure & ~odd & (xmin > 0) & (xmax < ADC_MAX)
    if todo.any():
        interval[todo] = _measure_interval(x[todo], mains_hz[todo])
    return Extremes(
        ymax=ymax, ymin=ymin, clipped=clipped, odd=odd, interval_ms=interval
    )


def _measure_interval(
    x: NDArray[np.int64], mains_hz: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The per-frame interval fit, in exact integers as there (NaN: none)."""
    k = x.shape[1]
    var_m, var_o, cov = interval_fit_sums(
        k - 2,
        (x[:, 0], x[:, 1], x[:, -2], x[:, -1]),
        x.sum(axis=1),
        (x * x).sum(axis=1),
        (x[:, 1:] * x[:, :-1]).sum(axis=1),
        (x[:, 2:] * x[:, :-2]).sum(axis=1),
    )
    out = np.full(len(x), np.nan)
    fit = var_m > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = cov.astype(np.float64) / var_m.astype(np.float64)
        residual = var_o.astype(np.float64) - slope * cov.astype(np.float64)
        fit &= ~(residual > _RESIDUAL_LIMIT * var_m.astype(np.float64))
        cos_w = 0.5 * slope
        fit &= (cos_w > -1.0) & (cos_w < 1.0)
        interval = (
            np.arccos(np.where(fit, cos_w, 0.0)) * 1000.0 / (2.0 * math.pi * mains_hz)
        )
    fit &= (interval >= MIN_MEASURED_INTERVAL_MS) & (
        interval <= MAX_MEASURED_INTERVAL_MS
    )
    fit &= ~(k * interval * mains_hz < MIN_CYCLES_TO_MEASURE * 1000.0)
    out[fit] = interval[fit]
    return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Moments:
    """Whole-cycle window statistics per row, in counts."""

    mean_x: NDArray[np.float64]
    mean_y: NDArray[np.float64]
    var_x: NDArray[np.float64]
    var_y: NDArray[np.float64]
    cov: NDArray[np.float64]
    cycles: NDArray[np.float64]
    odd: NDArray[np.bool_]
    """Rows for the per-frame code: under one cycle, or no AC in the window."""

    def rows(self, which: NDArray[np.bool_]) -> Moments:
        """The statistics of some rows only."""
        return Moments(
            mean_x=self.mean_x[which],
            mean_y=self.mean_y[which],
            var_x=self.var_x[which],
            var_y=self.var_y[which],
            cov=self.cov[which],
            cycles=self.cycles[which],
            odd=self.odd[which],
        )


def window_moments(
    voltage: NDArray[np.int64],
    current: NDArray[np.int64],
    interval_ms: NDArray[np.float64],
    mains_hz: NDArray[np.float64],
) -> Moments:
    """Step 2: window statistics of the kept samples at the given intervals."""
    x = voltage[:, 1:]
    y = current[:, 1:]
    k = x.shape[1]
    per_cycle = 1000.0 / (interval_ms * mains_hz)
    keys = np.maximum(1, np.rint(per_cycle * CYCLE_STEPS)).astype(np.int64)
    partial = k * CYCLE_STEPS < keys
    unique, inverse = np.unique(np.where(partial, 0, keys), return_inverse=True)
    table = _weights(k, unique)
    weights = table[inverse.reshape(-1)]
    xf = x.astype(np.float64)
    yf = y.astype(np.float64)
    wx = weights * xf
    wy = weights * yf
    mean_x = _column_sum(wx)
    mean_y = _column_sum(wy)
    var_x = np.maximum(0.0, _column_sum(wx * xf) - mean_x * mean_x)
    var_y = np.maximum(0.0, _column_sum(wy * yf) - mean_y * mean_y)
    cov = _column_sum(wx * yf) - mean_x * mean_y
    odd = partial | (var_x < _MIN_VOLTAGE_VAR_COUNTS2)
    return Moments(
        mean_x=mean_x,
        mean_y=mean_y,
        var_x=var_x,
        var_y=var_y,
        cov=cov,
        cycles=k / per_cycle,
        odd=odd,
    )


def _weights(count: int, keys: NDArray[np.int64]) -> NDArray[np.float64]:
    """:func:`~wattd.core.windows.window_weights` for many keys at once.

    The same operations in the same order, over all keys and samples at once
    (an empty overlap adds 0.0, which changes nothing), so the weights are
    equal to the bit. Key 0 (a placeholder for rows that use no window) gets
    a plain mean.
    """
    per_cycle = keys.astype(np.float64) / CYCLE_STEPS
    with np.errstate(divide="ignore", invalid="ignore"):
        length = np.floor(count / per_cycle) * per_cycle
    slack = count - length
    sliding = slack > 0.0
    starts = np.where(sliding, _WINDOW_STARTS, 1)
    j = np.arange(count, dtype=np.float64)[None, :]
    totals = np.zeros((len(keys), count))
    for s in range(_WINDOW_STARTS):
        lo = np.where(sliding, slack * s / (_WINDOW_STARTS - 1), 0.0)[:, None]
        hi = lo + length[:, None]
        inside = (j >= np.floor(lo)) & (j < np.minimum(count, np.ceil(hi)))
        overlap = np.minimum(j + 1.0, hi) - np.maximum(j, lo)
        use = inside & (overlap > 0.0) & ((s < starts)[:, None])
        totals += np.where(use, overlap, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = 1.0 / (starts * length)
        table = totals * norm[:, None]
    table[keys == 0] = 1.0 / count
    return table


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """Step 3's results per row; ``power_factor`` is NaN where there is none."""

    watts: NDArray[np.float64]
    va: NDArray[np.float64]
    vrms: NDArray[np.float64]
    irms: NDArray[np.float64]
    power_factor: NDArray[np.float64]
    ac_rms_y: NDArray[np.float64]
    correlation: NDArray[np.float64]
    overcurrent: NDArray[np.bool_]
    negative: NDArray[np.bool_]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Scales:
    """Per-row calibration for step 3; NaN stands for a setting left unset."""

    nominal_vrms: NDArray[np.float64]
    counts_per_volt: NDArray[np.float64]
    voltage_zero: NDArray[np.float64]
    counts_per_amp: NDArray[np.float64]
    max_amps: NDArray[np.float64]


def correlation(m: Moments) -> NDArray[np.float64]:
    """Correlation of voltage and current in each row's window (0: no AC)."""
    denom = m.var_x * m.var_y
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0.0, np.clip(m.cov / np.sqrt(denom), -1.0, 1.0), 0.0)


def figures(
    m: Moments,
    scales: Scales,
    i_zero: NDArray[np.float64],
    ymax: NDArray[np.int64],
    ymin: NDArray[np.int64],
) -> Figures:
    """Step 3: ``i_zero`` is each row's current zero plus its drift correction."""
    nominal = np.isnan(scales.counts_per_volt)
    with np.errstate(divide="ignore", invalid="ignore"):
        v_zero = np.where(
            nominal | np.isnan(scales.voltage_zero), m.mean_x, scales.voltage_zero
        )
        v_scale = np.where(
            nominal,
            scales.nominal_vrms / np.sqrt(m.var_x),
            1.0 / scales.counts_per_volt,
        )
        dv = m.mean_x - v_zero
        di = m.mean_y - i_zero
        a_scale = 1.0 / scales.counts_per_amp
        vrms = np.sqrt(m.var_x + dv * dv) * v_scale
        irms = np.sqrt(m.var_y + di * di) * a_scale
        watts = (m.cov + dv * di) * v_scale * a_scale
        va = vrms * irms
        ac_rms_y = np.sqrt(m.var_y)
        has_pf = (va > 0.0) & (ac_rms_y >= PF_MIN_CURRENT_AC_RMS_COUNTS)
        pf = np.where(has_pf, np.clip(watts / va, -1.0, 1.0), np.nan)
        peak = np.maximum(ymax - i_zero, i_zero - ymin) * a_scale
        overcurrent = (irms > scales.max_amps) | (peak > scales.max_amps * _SQRT2)
        negative = watts < -np.maximum(
            NEGATIVE_POWER_MIN_WATTS, NEGATIVE_POWER_MIN_VA_FRACTION * va
        )
        corr = correlation(m)
    return Figures(
        watts=watts,
        va=va,
        vrms=vrms,
        irms=irms,
        power_factor=pf,
        ac_rms_y=ac_rms_y,
        correlation=corr,
        overcurrent=overcurrent,
        negative=negative,
    )
