"""From IO sample frames to readings: calibration, energy and drift per sensor.

Sans-IO like the decoder: the caller passes each frame with its arrival times
(wall clock for the record, monotonic clock for integration) and gets a
:class:`~wattd.core.readings.Reading` back. All per-sensor memory lives here: the
energy register, the current-zero tracker (drift, and the running zero used
when ``current_zero`` is not configured) and a running sample-interval
estimate that stands in when one frame's waveform is too poor to measure its
own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from wattd.core.calibration import Calibration
from wattd.core.drift import DriftState, ZeroDriftTracker
from wattd.core.energy import EnergyIntegrator, EnergyState
from wattd.core.iosample import IoSampleFrame
from wattd.core.power import compute_legacy, compute_power
from wattd.core.readings import Flag, Reading

# The interval estimate is smoothed so one odd frame cannot move the fallback far;
# real radios drift slowly (temperature), so a slow average loses nothing.
_INTERVAL_SMOOTHING: Final = 0.1
# Fewer samples than this cannot describe a mains cycle at any real sample rate.
MIN_SAMPLES: Final = 6
TIME_STEP: Final = timedelta(milliseconds=1)
"""Least spacing of a sensor's reading times: the finest precision of common
time-series stores (VictoriaMetrics keeps ms). Real frames are ~2 s apart."""
SAME_READ: Final = timedelta(seconds=1)
"""A sensor's reading no more than this before its previous one is taken as
read in the same chunk; an earlier one means the wall clock was set back."""


FRAME_HASH_BITS: Final = 53
"""Frame hashes stay below 2**53, so a store that keeps fields as floats keeps
them exactly."""


def frame_hash(frame: IoSampleFrame) -> int:
    """A short hash of what the meter sent: its address and its sample sets.

    RSSI and receive options are left out: they differ between coordinators
    that hear one transmission, and the hash must not.
    """
    values = [frame.sensor_id, frame.digital_mask, len(frame.analog_channels)]
    for channel in frame.analog_channels:
        values.append(channel)
        values.extend(frame.channel(channel))
    values.extend(frame.digital or ())
    packed = struct.pack(f">{len(values)}Q", *values)
    digest = hashlib.blake2b(packed, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - FRAME_HASH_BITS)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SensorState:
    """What the pipeline remembers about one sensor between frames."""

    energy: EnergyState
    drift: DriftState
    interval_ms: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PipelineState:
    """Snapshot of every sensor's state, for saving and restoring."""

    sensors: Mapping[int, SensorState]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (addresses become string keys)."""
        return {
            "version": 1,
            "sensors": {
                str(addr): {
                    "energy": st.energy.to_json_dict(),
                    "drift": st.drift.to_json_dict(),
                    "interval_ms": st.interval_ms,
                }
                for addr, st in self.sensors.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PipelineState:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: if the data does not have the expected shape.
        """
        if data.get("version") != 1:
            msg = f"unsupported state version {data.get('version')!r}"
            raise ValueError(msg)
        sensors: dict[int, SensorState] = {}
        for key, item in dict(data["sensors"]).items():
            sensors[int(key)] = SensorState(
                energy=EnergyState.from_json_dict(item["energy"]),
                drift=DriftState.from_json_dict(item["drift"]),
                interval_ms=item.get("interval_ms"),
            )
        return cls(sensors=sensors)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SensorSettings:
    """What the pipeline needs to know about one sensor, from wherever it comes."""

    calibration: Calibration
    name: str
    labels: Mapping[str, str]
    energy_offset_wh: float = 0.0
    """Added to every published total (a replaced meter keeps counting on)."""
    correct_zero_drift: bool = False
    estimates_zero: bool = True
    """The current zero comes from the waveform: none is configured."""
    known: bool = True
    """False for an address that no configuration names."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSettings:
    """Per-sensor settings, and those an address nobody configured gets."""

    sensors: Mapping[int, SensorSettings]
    unknown: Callable[[int], SensorSettings]
    max_gap_s: float = 10.0
    """Longer silences are reported as gaps instead of being integrated."""

    def for_sensor(self, address: int) -> SensorSettings:
        """The settings of ``address``, configured or not."""
        found = self.sensors.get(address)
        return found if found is not None else self.unknown(address)


class _Sensor:
    """Mutable per-sensor working state."""

    __slots__ = (
        "drift",
        "energy",
        "interval_ms",
        "last_time",
        "settings",
    )

    def __init__(
        self,
        settings: SensorSettings,
        *,
        max_gap_s: float,
        state: SensorState | None,
    ) -> None:
        self.settings = settings
        calibration = settings.calibration
        self.last_time: datetime | None = None
        self.energy = EnergyIntegrator(
            max_gap_s=max_gap_s, state=state.energy if state else None
        )
        self.drift = ZeroDriftTracker(
            current_zero=calibration.current_zero, state=state.drift if state else None
        )
        self.interval_ms = state.interval_ms if state else None


class ReadingPipeline:
    """Turn IO sample frames into readings, one sensor state per address."""

    def __init__(
        self, settings: PipelineSettings, *, state: PipelineState | None = None
    ) -> None:
        self._settings = settings
        self._sensors: dict[int, _Sensor] = {}
        self._saved: dict[int, SensorState] = dict(state.sensors) if state else {}
        self._new_unknown: list[int] = []
        # One shared frozenset per combination of flags: most readings of a
        # sensor carry the same few, and each reading is kept by several sinks.
        self._flag_sets: dict[frozenset[Flag], frozenset[Flag]] = {}
        self.skipped: dict[str, int] = {"single_sample": 0, "missing_channel": 0}

    # -- public -----------------------------------------------------------------

    def process(
        self,
        frame: IoSampleFrame,
        *,
        time: datetime,
        monotonic_s: float,
        port: str = "",
    ) -> Reading | None:
        """Compute the reading for one frame, or ``None`` if it cannot carry one."""
        sensor = self._sensor(frame.sensor_id)
        cal = sensor.settings.calibration
        if frame.sample_count < MIN_SAMPLES:
            # A 0x92 frame carries one sample: no waveform, so no power figures.
            self.skipped["single_sample"] += 1
            return None
        voltage = frame.analog.get(cal.voltage_channel)
        current = frame.analog.get(cal.current_channel)
        if voltage is None or current is None:
            self.skipped["missing_channel"] += 1
            return None
        flags: set[Flag] = set()
        drift_estimate = sensor.drift.estimate_counts
        settings = sensor.settings
        zero = sensor.drift.zero_counts if settings.estimates_zero else None
        if zero is not None:
            flags.add(Flag.ZERO_ESTIMATED)
        elif (
            not settings.estimates_zero
            and settings.correct_zero_drift
            and drift_estimate is not None
        ):
            cal = dataclasses.replace(cal, zero_drift_counts=drift_estimate)
            flags.add(Flag.DRIFT_CORRECTED)
        if cal.legacy:
            result = compute_legacy(voltage, current, cal)
        else:
            result = compute_power(
                voltage,
                current,
                cal,
                fallback_interval_ms=sensor.interval_ms,
                current_zero=zero,
            )
        if result.interval_measured and result.sample_interval_ms is not None:
            prev = sensor.interval_ms
            sensor.interval_ms = (
                result.sample_interval_ms
                if prev is None
                else prev + _INTERVAL_SMOOTHING * (result.sample_interval_ms - prev)
            )
        sensor.drift.observe(result)
        if settings.estimates_zero and zero is None:
            zero = sensor.drift.zero_counts
            if zero is not None:
                # The first usable frame of a sensor without a configured zero:
                # its own whole-cycle mean beats the default by several counts.
                flags.add(Flag.ZERO_ESTIMATED)
                result = compute_power(
                    voltage,
                    current,
                    cal,
                    fallback_interval_ms=sensor.interval_ms,
                    current_zero=zero,
                )
        step = sensor.energy.update(result.watts, monotonic_s)
        flags |= result.flags
        if step.gap_s is not None:
            flags.add(Flag.ENERGY_GAP)
        if not settings.known:
            flags.add(Flag.UNKNOWN_SENSOR)
        frozen = frozenset(flags)
        last = sensor.last_time
        if last is not None and last - SAME_READ < time < last + TIME_STEP:
            # Frames read in one chunk share its arrival time (a backlog after a
            # stall, or a fast replay), and a store with ms timestamps cannot
            # tell apart two read within the same ms. Series and timestamp name
            # one point, so the later reading would overwrite the earlier one.
            # A step back of more than SAME_READ is the wall clock being set,
            # and is kept as it is.
            time = last + TIME_STEP
        sensor.last_time = time
        return Reading(
            sensor=frame.sensor_id,
            name=settings.name,
            time=time,
            monotonic_s=monotonic_s,
            watts=result.watts,
            va=result.va,
            vrms=result.vrms,
            irms=result.irms,
            power_factor=result.power_factor,
            wh_total=step.wh_total + settings.energy_offset_wh,
            wh_delta=step.wh_delta,
            rssi_dbm=frame.rssi_dbm,
            flags=self._flag_sets.setdefault(frozen, frozen),
            sample_interval_ms=result.sample_interval_ms,
            cycles=result.cycles,
            gap_s=step.gap_s,
            current_zero_drift_counts=sensor.drift.estimate_counts,
            current_zero_counts=(
                cal.current_zero + cal.zero_drift_counts if zero is None else zero
            ),
            port=port,
            labels=settings.labels,
            frame_hash=frame_hash(frame),
        )

    def reconfigure(self, settings: PipelineSettings) -> None:
        """Apply new settings; energy, drift and interval state are kept."""
        self._settings = settings
        for addr, sensor in self._sensors.items():
            sensor.settings = settings.for_sensor(addr)
            sensor.energy.max_gap_s = settings.max_gap_s
            sensor.drift.current_zero = sensor.settings.calibration.current_zero

    def state(self) -> PipelineState:
        """Snapshot of all sensor state (including restored, not yet seen sensors)."""
        sensors = dict(self._saved)
        for addr, s in self._sensors.items():
            sensors[addr] = SensorState(
                energy=s.energy.state, drift=s.drift.state, interval_ms=s.interval_ms
            )
        return PipelineState(sensors=sensors)

    def raise_energy_floor(self, sensor: int, wh_total: float) -> None:
        """Never publish below ``wh_total`` (a published total including the offset).

        Used at startup with the last total recorded elsewhere, so a crash between
        state saves neither loses that energy nor counts it twice.
        """
        s = self._sensor(sensor, register_unknown=False)
        floor = wh_total - s.settings.energy_offset_wh
        current = s.energy.state
        if floor <= current.wh_total:
            return
        # The energy up to the floor is already published elsewhere: count it as
        # integrated (register and total), keeping the last sample for continuity.
        s.energy = EnergyIntegrator(
            max_gap_s=s.energy.max_gap_s,
            state=dataclasses.replace(current, wh_total=floor, wh_register=floor),
        )

    def drain_new_unknown(self) -> list[int]:
        """Addresses seen for the first time without a config entry."""
        out, self._new_unknown = self._new_unknown, []
        return out

    @property
    def sensors_seen(self) -> list[int]:
        """Addresses that produced frames in this process."""
        return sorted(self._sensors)

    # -- private ------------------------------------------------------------------

    def _sensor(self, address: int, *, register_unknown: bool = True) -> _Sensor:
        sensor = self._sensors.get(address)
        if sensor is None:
            settings = self._settings.for_sensor(address)
            sensor = _Sensor(
                settings,
                max_gap_s=self._settings.max_gap_s,
                state=self._saved.pop(address, None),
            )
            self._sensors[address] = sensor
            if not settings.known and register_unknown:
                self._new_unknown.append(address)
        return sensor
