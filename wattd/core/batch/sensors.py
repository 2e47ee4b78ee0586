"""What one frame of a sensor hands to the next, over a batch's rows at once.

The running sample-interval estimate, the running current zero and no-load
drift, the energy register and the spreading of reading times: the state
:class:`~wattd.core.pipeline.ReadingPipeline` keeps per sensor, computed for
one sensor's rows of a batch in order (docs/batch.md says how).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import numpy as np

from wattd.core.batch.columns import FLAG_BITS
from wattd.core.drift import (
    DEFAULT_MIN_FRAMES,
    DEFAULT_WINDOW,
    DEFAULT_ZERO_WINDOW,
    NO_LOAD_MAX_AC_RMS_COUNTS,
    NO_LOAD_MAX_CORRELATION,
    DriftState,
)
from wattd.core.energy import EnergyIntegrator, EnergyState
from wattd.core.pipeline import SAME_READ, TIME_STEP, SensorState
from wattd.core.readings import Flag

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from wattd.core.batch.power import Moments
    from wattd.core.calibration import Calibration
    from wattd.core.pipeline import SensorSettings
    from wattd.core.power import PowerResult

__all__ = [
    "Rows",
    "SensorMemory",
    "integrate_energy",
    "smooth_intervals",
    "spread_times",
    "track_zero",
]

_SMOOTHING: Final = 0.1
_SAME_READ_US: Final = SAME_READ // timedelta(microseconds=1)
_TIME_STEP_US: Final = TIME_STEP // timedelta(microseconds=1)
_SECONDS_PER_HOUR: Final = 3600.0
_UNUSABLE: Final = (
    FLAG_BITS[Flag.FLAT_VOLTAGE]
    | FLAG_BITS[Flag.CLIPPED]
    | FLAG_BITS[Flag.MISSING_CHANNEL]
    | FLAG_BITS[Flag.TOO_FEW_SAMPLES]
)
_NOT_WHOLE_CYCLES: Final = (
    _UNUSABLE | FLAG_BITS[Flag.INTERVAL_FALLBACK] | FLAG_BITS[Flag.LEGACY]
)


class SensorMemory:
    """One sensor's settings and carried state."""

    __slots__ = (
        "cal",
        "cycle_means",
        "energy",
        "interval_ms",
        "last_time_us",
        "no_load_frames",
        "observations",
        "settings",
    )

    def __init__(self, settings: SensorSettings, state: SensorState | None) -> None:
        self.settings = settings
        self.cal: Calibration = settings.calibration
        drift = state.drift if state else DriftState()
        self.energy = state.energy if state else EnergyState()
        self.observations = list(drift.observations[-DEFAULT_WINDOW:])
        self.no_load_frames = drift.no_load_frames
        self.cycle_means = list(drift.cycle_means[-DEFAULT_ZERO_WINDOW:])
        self.interval_ms = state.interval_ms if state else None
        self.last_time_us: int | None = None

    def sensor_state(self) -> SensorState:
        """The state as the per-frame pipeline saves it."""
        return SensorState(
            energy=self.energy,
            drift=DriftState(
                observations=tuple(self.observations),
                no_load_frames=self.no_load_frames,
                cycle_means=tuple(self.cycle_means),
            ),
            interval_ms=self.interval_ms,
        )


def _iqm(values: Sequence[float]) -> float:
    """Interquartile mean, as the drift tracker takes it."""
    ordered = sorted(values)
    drop = len(ordered) // 4
    middle = ordered[drop : len(ordered) - drop]
    return math.fsum(middle) / len(middle)


def _window_iqms(
    history: list[float], new: NDArray[np.float64], window: int, least: int
) -> tuple[NDArray[np.float64], list[float]]:
    """IQM of the last ``window`` values after 0..len(new) new ones (NaN: too few).

    Returns the means (index c: after the first c new values) and the kept
    history for the next batch.
    """
    seq = np.concatenate([np.array(history, np.float64), new])
    base = len(history)
    out = np.full(len(new) + 1, np.nan)
    ends = np.arange(base, len(seq) + 1)
    short = ends < window
    for c in ends[short].tolist():
        if c >= least and c > 0:
            out[c - base] = _iqm(seq[:c].tolist())
    full = ends[~short]
    if len(full):
        views = np.lib.stride_tricks.sliding_window_view(seq, window)[full - window]
        ordered = np.sort(views, axis=1)
        drop = window // 4
        middle = ordered[:, drop : window - drop]
        out[full - base] = middle.sum(axis=1) / middle.shape[1]
    return out, seq[-window:].tolist()


class Rows:
    """Per-row working arrays of one batch."""

    def __init__(self, n: int) -> None:
        self.has_reading = np.ones(n, np.bool_)
        self.scalar: dict[int, tuple[Sequence[int], Sequence[int]]] = {}
        self.results: dict[int, PowerResult] = {}
        self.vector = np.zeros(0, np.int64)
        self.interval = np.full(n, np.nan)
        self.measured = np.zeros(n, np.bool_)
        self.cycles = np.zeros(n)
        self.bits = np.zeros(n, np.int64)
        """Flags that need no state: what the drift tracker looks at."""
        self.final = np.zeros(n, np.int64)
        self.extra = np.zeros(n, np.int64)
        """Flags the per-sensor state adds (zero estimated, drift corrected)."""
        self.mean_y = np.full(n, np.nan)
        self.ac_rms = np.full(n, np.nan)
        self.corr = np.zeros(n)
        self.watts = np.zeros(n)
        self.va = np.zeros(n)
        self.vrms = np.zeros(n)
        self.irms = np.zeros(n)
        self.pf = np.full(n, np.nan)
        self.ymax = np.zeros(0, np.int64)
        self.ymin = np.zeros(0, np.int64)
        self.sub: Moments | None = None


def smooth_intervals(
    start: float | None,
    rows: NDArray[np.int64],
    work: Rows,
    ema_before: NDArray[np.float64],
) -> float | None:
    """The running interval estimate before each row; returns the last."""
    prev = start
    measured = work.measured[rows].tolist()
    values = work.interval[rows].tolist()
    before: list[float] = []
    for flag, value in zip(measured, values, strict=True):
        before.append(math.nan if prev is None else prev)
        if flag:
            prev = value if prev is None else prev + _SMOOTHING * (value - prev)
    ema_before[rows] = before
    return prev


def track_zero(
    sensor: SensorMemory,
    rows: NDArray[np.int64],
    work: Rows,
    zero: NDArray[np.float64],
    drift_used: NDArray[np.float64],
    drift_after: NDArray[np.float64],
) -> None:
    """Running zero and no-load drift of one sensor, before and after each row."""
    rows = rows[work.has_reading[rows]]
    if not len(rows):
        return
    settings = sensor.settings
    cal = sensor.cal
    bits = work.bits[rows]
    mean_y = work.mean_y[rows]
    finite = np.isfinite(mean_y)
    usable = ((bits & _NOT_WHOLE_CYCLES) == 0) & finite
    no_load = (
        ((bits & _UNUSABLE) == 0)
        & finite
        & (work.ac_rms[rows] <= NO_LOAD_MAX_AC_RMS_COUNTS)
        & (np.abs(work.corr[rows]) <= NO_LOAD_MAX_CORRELATION)
    )
    after = np.cumsum(usable)
    if settings.estimates_zero:
        means, sensor.cycle_means = _window_iqms(
            sensor.cycle_means, mean_y[usable], DEFAULT_ZERO_WINDOW, 1
        )
        before = means[after - usable]
        z = np.where(np.isnan(before), means[after], before)
        zero[rows] = z
        work.extra[rows] |= np.where(np.isnan(z), 0, FLAG_BITS[Flag.ZERO_ESTIMATED])
    else:
        kept = sensor.cycle_means + mean_y[usable].tolist()
        sensor.cycle_means = kept[-DEFAULT_ZERO_WINDOW:]
    seen = np.cumsum(no_load)
    levels, sensor.observations = _window_iqms(
        sensor.observations, mean_y[no_load], DEFAULT_WINDOW, DEFAULT_MIN_FRAMES
    )
    sensor.no_load_frames += int(seen[-1])
    drift_after[rows] = levels[seen] - cal.current_zero
    if not settings.estimates_zero and settings.correct_zero_drift:
        used = levels[seen - no_load] - cal.current_zero
        drift_used[rows] = used
        work.extra[rows] |= np.where(np.isnan(used), 0, FLAG_BITS[Flag.DRIFT_CORRECTED])


def integrate_energy(
    sensor: SensorMemory,
    rows: NDArray[np.int64],
    watts_all: NDArray[np.float64],
    mono_all: NDArray[np.float64],
    gap: NDArray[np.float64],
    wh_total: NDArray[np.float64],
    wh_delta: NDArray[np.float64],
    max_gap_s: float,
) -> None:
    """Energy as :class:`EnergyIntegrator` counts it, trapezoid by trapezoid."""
    if not len(rows):
        return
    watts = watts_all[rows]
    at = mono_all[rows]
    state = sensor.energy
    if np.isfinite(watts).all() and np.isfinite(at).all():
        fresh = state.last_at_s is None or state.last_watts is None
        prev_w = np.concatenate([[0.0 if fresh else state.last_watts], watts[:-1]])
        prev_t = np.concatenate([[at[0] if fresh else state.last_at_s], at[:-1]])
        elapsed = at - prev_t
        if not (elapsed < 0.0).any():
            is_gap = elapsed > max_gap_s
            inc = np.where(
                is_gap, 0.0, 0.5 * (prev_w + watts) * elapsed / _SECONDS_PER_HOUR
            )
            if fresh:
                inc[0] = 0.0
            register = np.add.accumulate(np.concatenate([[state.wh_register], inc]))
            if np.isfinite(register).all():
                total = np.maximum.accumulate(
                    np.concatenate([[state.wh_total], register[1:]])
                )
                wh_total[rows] = total[1:]
                wh_delta[rows] = total[1:] - total[:-1]
                gap[rows] = np.where(is_gap, elapsed, np.nan)
                sensor.energy = EnergyState(
                    wh_total=float(total[-1]),
                    wh_register=float(register[-1]),
                    last_watts=float(watts[-1]),
                    last_at_s=float(at[-1]),
                )
                return
    integrator = EnergyIntegrator(max_gap_s=max_gap_s, state=state)
    for i, w, t in zip(rows.tolist(), watts.tolist(), at.tolist(), strict=True):
        step = integrator.update(w, t)
        wh_total[i] = step.wh_total
        wh_delta[i] = step.wh_delta
        gap[i] = math.nan if step.gap_s is None else step.gap_s
    sensor.energy = integrator.state


def spread_times(
    sensor: SensorMemory, rows: NDArray[np.int64], time_us: NDArray[np.int64]
) -> None:
    """Times of one sensor at least a millisecond apart, as the pipeline keeps them."""
    if not len(rows):
        return
    times = time_us[rows]
    last = sensor.last_time_us
    prev = np.concatenate([[times[0] if last is None else last], times[:-1]])
    close = (prev - _SAME_READ_US < times) & (times < prev + _TIME_STEP_US)
    if last is None:
        close[0] = False
    if close.any():
        out: list[int] = []
        for t in times.tolist():
            if last is not None and last - _SAME_READ_US < t < last + _TIME_STEP_US:
                t = last + _TIME_STEP_US
            out.append(t)
            last = t
        time_us[rows] = out
    sensor.last_time_us = int(time_us[rows[-1]])
