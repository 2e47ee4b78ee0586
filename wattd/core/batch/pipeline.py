"""Frames to readings in batches, with the per-frame pipeline's per-sensor state.

:class:`BatchPipeline` gives the readings
:class:`~wattd.core.pipeline.ReadingPipeline` gives for the same frames, in
the same order, and keeps the same state (:meth:`BatchPipeline.state` is a
:class:`~wattd.core.pipeline.PipelineState`, so either pipeline can carry on
from the other). The maths runs over all frames of a batch at once
(:mod:`wattd.core.batch.power`). What one frame hands to the next stays
sequential per sensor, but mostly as array operations too:

* the sample-interval estimate (an exponential average of the measured
  intervals) is a short loop; only frames whose own interval cannot be
  measured use it;
* the running current zero and the no-load drift are interquartile means over
  sliding windows of earlier frames, computed for all windows at once;
* energy is a cumulative sum of trapezoids and its running maximum, as
  :class:`~wattd.core.energy.EnergyIntegrator` adds them; a sensor whose times
  go backwards or whose watts are not finite is integrated frame by frame;
* reading times one frame apart by less than a millisecond are spread out as
  the per-frame pipeline does, in a loop only for sensors that have such.

Frames the arrays do not cover (odd shapes, partial cycles, legacy mode)
are computed by :func:`~wattd.core.power.compute_power` itself, in place.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Final

import numpy as np

from wattd.core.batch.columns import FLAG_BITS, ReadingColumns
from wattd.core.batch.frames import frame_hashes
from wattd.core.batch.power import (
    Scales,
    correlation,
    extremes_and_interval,
    figures,
    window_moments,
)
from wattd.core.batch.sensors import (
    Rows,
    SensorMemory,
    integrate_energy,
    smooth_intervals,
    spread_times,
    track_zero,
)
from wattd.core.pipeline import MIN_SAMPLES, PipelineState
from wattd.core.power import compute_legacy, compute_power
from wattd.core.readings import Flag

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from wattd.core.batch.frames import FrameBatch
    from wattd.core.calibration import Calibration
    from wattd.core.pipeline import PipelineSettings, SensorState

__all__ = ["BatchPipeline"]

_STANDARD_COLUMN: Final = {0: 0, 4: 1}


def _bits(flags: frozenset[Flag]) -> int:
    out = 0
    for flag in flags:
        out |= FLAG_BITS[flag]
    return out


class BatchPipeline:
    """Turn batches of IO frames into readings, one sensor state per address."""

    def __init__(
        self, settings: PipelineSettings, *, state: PipelineState | None = None
    ) -> None:
        self._settings = settings
        self._sensors: dict[int, SensorMemory] = {}
        self._saved: dict[int, SensorState] = dict(state.sensors) if state else {}
        self._new_unknown: list[int] = []
        self.skipped: dict[str, int] = {"single_sample": 0, "missing_channel": 0}

    def state(self) -> PipelineState:
        """Snapshot of all sensor state (including restored, not yet seen sensors)."""
        sensors = dict(self._saved)
        for addr, s in self._sensors.items():
            sensors[addr] = s.sensor_state()
        return PipelineState(sensors=sensors)

    def drain_new_unknown(self) -> list[int]:
        """Addresses seen for the first time without a config entry."""
        out, self._new_unknown = self._new_unknown, []
        return out

    @property
    def sensors_seen(self) -> list[int]:
        """Addresses that produced frames in this process."""
        return sorted(self._sensors)

    def _sensor(self, address: int) -> SensorMemory:
        sensor = self._sensors.get(address)
        if sensor is None:
            settings = self._settings.for_sensor(address)
            sensor = SensorMemory(settings, self._saved.pop(address, None))
            self._sensors[address] = sensor
            if not settings.known:
                self._new_unknown.append(address)
        return sensor

    # -- the batch -------------------------------------------------------------

    def process(self, batch: FrameBatch, *, hashes: bool = False) -> ReadingColumns:
        """Readings of the batch's frames, in order (frames without one left out).

        ``hashes`` computes each reading's ``frame_hash`` (the store keeps it).
        """
        n = len(batch)
        ids = batch.sensor.tolist()
        seen: dict[int, SensorMemory] = {}
        for address in ids:
            if address not in seen:
                seen[address] = self._sensor(address)
        sensors = list(seen.values())
        slot_of = {address: j for j, address in enumerate(seen)}
        slot = np.array([slot_of[a] for a in ids], np.int64)
        cals = [s.cal for s in sensors]
        work = Rows(n)
        self._classify(batch, slot, cals, work)
        groups = _groups(slot, len(sensors))
        ema_before = np.full(n, np.nan)
        for j, rows in enumerate(groups):
            sensors[j].interval_ms = smooth_intervals(
                sensors[j].interval_ms, rows, work, ema_before
            )
        self._settle_scalar(slot, cals, work, ema_before, first=True)
        zero = np.full(n, np.nan)
        drift_used = np.full(n, np.nan)
        drift_after = np.full(n, np.nan)
        for j, rows in enumerate(groups):
            track_zero(sensors[j], rows, work, zero, drift_used, drift_after)
        self._settle_scalar(
            slot, cals, work, ema_before, first=False, zero=zero, drift_used=drift_used
        )
        self._vector_figures(slot, cals, work, zero, drift_used)
        gap = np.full(n, np.nan)
        wh_total = np.zeros(n)
        wh_delta = np.zeros(n)
        time_us = batch.time_us.copy()
        for j, rows in enumerate(groups):
            live = rows[work.has_reading[rows]]
            integrate_energy(
                sensors[j],
                live,
                work.watts,
                batch.monotonic_s,
                gap,
                wh_total,
                wh_delta,
                self._settings.max_gap_s,
            )
            spread_times(sensors[j], live, time_us)
        bits = work.final | work.extra
        bits[~np.isnan(gap)] |= FLAG_BITS[Flag.ENERGY_GAP]
        unknown = np.array([not s.settings.known for s in sensors], np.bool_)[slot]
        bits[unknown] |= FLAG_BITS[Flag.UNKNOWN_SENSOR]
        offsets = np.array([s.settings.energy_offset_wh for s in sensors])[slot]
        keep = np.flatnonzero(work.has_reading)
        zero_counts = np.where(
            np.isnan(zero),
            np.array([c.current_zero for c in cals])[slot]
            + np.where(
                np.isnan(drift_used),
                np.array([c.zero_drift_counts for c in cals])[slot],
                drift_used,
            ),
            zero,
        )
        hashed = frame_hashes(batch, keep) if hashes else None
        return ReadingColumns(
            sensor=batch.sensor[keep],
            settings=[sensors[k].settings for k in slot[keep].tolist()],
            time_us=time_us[keep],
            monotonic_s=batch.monotonic_s[keep],
            watts=work.watts[keep],
            va=work.va[keep],
            vrms=work.vrms[keep],
            irms=work.irms[keep],
            power_factor=work.pf[keep],
            wh_total=(wh_total + offsets)[keep],
            wh_delta=wh_delta[keep],
            rssi_dbm=_rssi(batch, keep),
            flag_bits=bits[keep],
            sample_interval_ms=work.interval[keep],
            cycles=work.cycles[keep],
            gap_s=gap[keep],
            zero_drift_counts=drift_after[keep],
            current_zero_counts=zero_counts[keep],
            ports=[batch.ports[i] for i in keep.tolist()],
            frame_hash=hashed,
        )

    def _classify(
        self,
        batch: FrameBatch,
        slot: NDArray[np.int64],
        cals: list[Calibration],
        work: Rows,
    ) -> None:
        """Split rows into array rows, per-frame rows and rows without a reading.

        Fills the state-free part: intervals, window statistics and flags.
        """
        n = len(batch)
        vcol = np.array(
            [_STANDARD_COLUMN.get(c.voltage_channel, -1) for c in cals], np.int64
        )[slot]
        ccol = np.array(
            [_STANDARD_COLUMN.get(c.current_channel, -1) for c in cals], np.int64
        )[slot]
        legacy = np.array([c.legacy for c in cals], np.bool_)[slot]
        odd = np.zeros(n, np.bool_)
        for i, frame in batch.odd.items():
            odd[i] = True
            cal = cals[slot[i]]
            if frame.sample_count < MIN_SAMPLES:
                self.skipped["single_sample"] += 1
                work.has_reading[i] = False
                continue
            v_seq = frame.analog.get(cal.voltage_channel)
            c_seq = frame.analog.get(cal.current_channel)
            if v_seq is None or c_seq is None:
                self.skipped["missing_channel"] += 1
                work.has_reading[i] = False
                continue
            work.scalar[i] = (v_seq, c_seq)
        missing = ~odd & ((vcol < 0) | (ccol < 0))
        if missing.any():
            self.skipped["missing_channel"] += int(missing.sum())
            work.has_reading &= ~missing
        plain = work.has_reading & ~odd
        vec = np.flatnonzero(plain)
        sets = np.arange(batch.samples.shape[1])
        voltage = batch.samples[vec[:, None], sets[None, :], vcol[vec][:, None]]
        current = batch.samples[vec[:, None], sets[None, :], ccol[vec][:, None]]
        mains = np.array([c.mains_hz for c in cals], np.float64)[slot][vec]
        pinned = np.array(
            [
                math.nan if c.sample_interval_ms is None else c.sample_interval_ms
                for c in cals
            ],
            np.float64,
        )[slot][vec]
        measure = np.isnan(pinned)
        ext = extremes_and_interval(voltage, current, mains, measure)
        interval = np.where(measure, ext.interval_ms, pinned)
        good = ~ext.odd & ~np.isnan(interval) & ~legacy[vec]
        g = np.flatnonzero(good)
        m = window_moments(voltage[g], current[g], interval[g], mains[g])
        ok = g[~m.odd]
        for j in np.flatnonzero(~good).tolist() + g[m.odd].tolist():
            work.scalar[int(vec[j])] = (voltage[j].tolist(), current[j].tolist())
        rows = vec[ok]
        work.vector = rows
        work.interval[rows] = interval[ok]
        work.measured[rows] = measure[ok]
        sub = m.rows(~m.odd)
        work.sub = sub
        work.cycles[rows] = sub.cycles
        work.ymax = ext.ymax[ok]
        work.ymin = ext.ymin[ok]
        work.bits[rows] = np.where(ext.clipped[ok], FLAG_BITS[Flag.CLIPPED], 0)
        work.mean_y[rows] = sub.mean_y
        work.ac_rms[rows] = np.sqrt(sub.var_y)
        work.corr[rows] = correlation(sub)
        for i, (v, c) in work.scalar.items():
            cal = cals[slot[i]]
            result = (
                compute_legacy(v, c, cal) if cal.legacy else compute_power(v, c, cal)
            )
            work.results[i] = result
            if result.interval_measured and result.sample_interval_ms is not None:
                work.interval[i] = result.sample_interval_ms
                work.measured[i] = True

    def _settle_scalar(
        self,
        slot: NDArray[np.int64],
        cals: list[Calibration],
        work: Rows,
        ema_before: NDArray[np.float64],
        *,
        first: bool,
        zero: NDArray[np.float64] | None = None,
        drift_used: NDArray[np.float64] | None = None,
    ) -> None:
        """Per-frame rows: redo with the interval estimate, then with the zero."""
        for i, (v, c) in work.scalar.items():
            cal = cals[slot[i]]
            ema = None if math.isnan(ema_before[i]) else float(ema_before[i])
            if first:
                result = work.results[i]
                if not (cal.legacy or result.interval_measured):
                    result = compute_power(v, c, cal, fallback_interval_ms=ema)
                    work.results[i] = result
                work.bits[i] = _bits(result.flags)
                work.mean_y[i] = result.current_mean_counts
                work.ac_rms[i] = result.current_ac_rms_counts
                work.corr[i] = result.vi_correlation
                continue
            assert zero is not None  # noqa: S101 - passed on the second round
            assert drift_used is not None  # noqa: S101
            z = None if math.isnan(zero[i]) else float(zero[i])
            if not math.isnan(drift_used[i]):
                cal = dataclasses.replace(cal, zero_drift_counts=float(drift_used[i]))
            if z is not None or not math.isnan(drift_used[i]):
                result = (
                    compute_legacy(v, c, cal)
                    if cal.legacy
                    else compute_power(
                        v, c, cal, fallback_interval_ms=ema, current_zero=z
                    )
                )
            else:
                result = work.results[i]
            work.final[i] = _bits(result.flags)
            work.watts[i] = result.watts
            work.va[i] = result.va
            work.vrms[i] = result.vrms
            work.irms[i] = result.irms
            work.pf[i] = (
                math.nan if result.power_factor is None else result.power_factor
            )
            work.interval[i] = (
                math.nan
                if result.sample_interval_ms is None
                else result.sample_interval_ms
            )
            work.cycles[i] = result.cycles

    def _vector_figures(
        self,
        slot: NDArray[np.int64],
        cals: list[Calibration],
        work: Rows,
        zero: NDArray[np.float64],
        drift_used: NDArray[np.float64],
    ) -> None:
        rows = work.vector
        if not len(rows):
            return
        s = slot[rows]

        def per(values: list[float]) -> NDArray[np.float64]:
            return np.array(values, np.float64)[s]

        def opt(values: list[float | None]) -> NDArray[np.float64]:
            return per([math.nan if v is None else v for v in values])

        scales = Scales(
            nominal_vrms=per([c.nominal_vrms for c in cals]),
            counts_per_volt=opt([c.counts_per_volt for c in cals]),
            voltage_zero=opt([c.voltage_zero for c in cals]),
            counts_per_amp=per([c.counts_per_amp for c in cals]),
            max_amps=per([c.max_amps for c in cals]),
        )
        z = zero[rows]
        d = drift_used[rows]
        configured = per([c.current_zero for c in cals])
        drift_cfg = per([c.zero_drift_counts for c in cals])
        i_zero = np.where(np.isnan(z), configured, z) + np.where(
            np.isnan(d), drift_cfg, d
        )
        assert work.sub is not None  # noqa: S101 - set with the vector rows
        f = figures(work.sub, scales, i_zero, work.ymax, work.ymin)
        work.watts[rows] = f.watts
        work.va[rows] = f.va
        work.vrms[rows] = f.vrms
        work.irms[rows] = f.irms
        work.pf[rows] = f.power_factor
        work.final[rows] = (
            work.bits[rows]
            | np.where(f.overcurrent, FLAG_BITS[Flag.OVERCURRENT], 0)
            | np.where(f.negative, FLAG_BITS[Flag.NEGATIVE_POWER], 0)
        )


def _groups(slot: NDArray[np.int64], count: int) -> list[NDArray[np.int64]]:
    """Row indices of each sensor, in order."""
    order = np.argsort(slot, kind="stable")
    bounds = np.searchsorted(slot[order], np.arange(count + 1))
    return [order[bounds[j] : bounds[j + 1]] for j in range(count)]


def _rssi(batch: FrameBatch, keep: NDArray[np.int64]) -> list[int | None]:
    out: list[int | None] = list(batch.rssi_dbm[keep].tolist())
    if batch.odd:
        for j, i in enumerate(keep.tolist()):
            frame = batch.odd.get(i)
            if frame is not None:
                out[j] = frame.rssi_dbm
    return out
