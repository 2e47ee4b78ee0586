"""What the dashboard shows: latest values per sensor, today's energy, last waveform.

Sans-IO and cheap on the reading path: :meth:`LiveBoard.add` stores the reading,
adds its energy to today's total and marks the sensor changed; everything
heavier (JSON, waveform figures, totals) happens only when a browser asks or
when the pusher builds its once-a-second update.

"Today" is the local day in the site calendar (``tariffs.timezone``). Energy
is summed from each reading's ``wh_delta``; the part of a delta that straddles
local midnight is split in proportion to time, as the store's rollups do. At
start the totals are seeded from the store, so a restart does not zero them.

Live power totals count only meters heard within ``web.stale_after_s``: the
last reading of a silent meter says nothing about its power now. Stale meters
are counted separately, and their energy and cost today still add up.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from wattd.core.power import compute_power, kept_sample_count
from wattd.core.readings import Flag

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping

    from wattd.config import Config, SensorConfig, SensorMeta
    from wattd.core.readings import FrameRecord, Reading
    from wattd.core.snapshot import DaemonSnapshot

__all__ = ["LiveBoard", "health_json", "local_day_start"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def local_day_start(moment: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of local midnight starting the day that holds ``moment``."""
    local = moment.astimezone(tz)
    midnight = datetime(local.year, local.month, local.day, tzinfo=tz)
    return midnight.astimezone(UTC)


def _ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _num(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


@dataclasses.dataclass(slots=True)
class _Sensor:
    reading: Reading | None = None
    today_wh: float = 0.0
    day_start: datetime | None = None
    frame: FrameRecord | None = None


class LiveBoard:
    """Latest state of every sensor, as the dashboard presents it."""

    def __init__(self, config: Config) -> None:
        self._sensors: dict[int, _Sensor] = {}
        self._changed: set[int] = set()
        self._announced: set[int] = set()
        self._tz = ZoneInfo(config.tariffs.timezone)
        # The local day readings currently fall in, as UTC instants; an empty
        # range until the first reading.
        self._day_start = _EPOCH
        self._next_day_start = _EPOCH
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Take new sensor metadata and calendar; values are kept."""
        self._config = config
        self._stale_after = timedelta(seconds=config.web.stale_after_s)
        self._sensor_cfg: dict[int, SensorConfig] = config.sensor_map()
        # Built once per config: cards and totals need them every second.
        self._meta: Mapping[int, SensorMeta] = config.sensor_meta()
        tz = ZoneInfo(config.tariffs.timezone)
        if tz != self._tz:
            self._tz = tz
            self._day_start = self._next_day_start = _EPOCH
        self._changed.update(self._sensor_cfg)
        self._announced.clear()  # names and labels may have changed

    # -- the reading path (cheap) ----------------------------------------------

    def add(self, reading: Reading) -> None:
        """Take one reading (arrival order)."""
        sensor = reading.sensor
        state = self._sensors.get(sensor)
        if state is None:
            state = self._sensors[sensor] = _Sensor()
        t = reading.time
        if not self._day_start <= t < self._next_day_start:
            self._roll_day(t)
        day_start = self._day_start if t >= self._day_start else None
        if day_start is None:
            day_start = local_day_start(t, self._tz)  # an old reading: rare
        delta = reading.wh_delta if math.isfinite(reading.wh_delta) else 0.0
        previous = state.reading
        if state.day_start == day_start:
            state.today_wh += delta
        elif state.day_start is None or state.day_start < day_start:
            state.today_wh = delta * self._share_after(day_start, previous, t)
            state.day_start = day_start
        # else: a reading from a day already closed; today's total is unaffected.
        if previous is None or previous.time <= t:
            state.reading = reading
        self._changed.add(sensor)

    def add_frame(self, frame: FrameRecord) -> None:
        """Keep an IO frame (decoded, see its ``io_frame``) as its sensor's waveform."""
        if frame.kind != "io" or frame.sensor is None:
            return
        state = self._sensors.get(frame.sensor)
        if state is None:
            state = self._sensors[frame.sensor] = _Sensor()
        state.frame = frame

    def seed_today(self, wh_by_sensor: Mapping[int, float], *, as_of: datetime) -> None:
        """Start today's totals from stored energy (up to ``as_of``).

        Readings the board already took after ``as_of`` are kept on top.
        """
        day_start = local_day_start(as_of, self._tz)
        for sensor, wh in wh_by_sensor.items():
            state = self._sensors.get(sensor)
            if state is None:
                state = self._sensors[sensor] = _Sensor()
            if state.day_start is None or state.day_start < day_start:
                state.today_wh = 0.0
                state.day_start = day_start
            if state.day_start == day_start:
                state.today_wh += wh
            self._changed.add(sensor)

    def _roll_day(self, t: datetime) -> None:
        start = local_day_start(t, self._tz)
        if start < self._day_start:
            return  # an old reading; keep the current day
        self._day_start = start
        # The next local midnight, found from noon tomorrow so DST days work.
        noon = (start + timedelta(hours=36)).astimezone(self._tz)
        self._next_day_start = local_day_start(noon, self._tz)

    @staticmethod
    def _share_after(
        day_start: datetime, previous: Reading | None, t: datetime
    ) -> float:
        """The share of the time since ``previous`` that falls after midnight."""
        if previous is None or previous.time >= day_start or previous.time >= t:
            return 1.0
        return (t - day_start) / (t - previous.time)

    # -- views -----------------------------------------------------------------

    def take_changed(self) -> list[dict[str, Any]]:
        """JSON of the sensors changed since the last call (and forget them).

        A sensor already sent whole gets only its live fields (pages merge
        them into the card they have); a new one, or all after a reload, whole.
        """
        return list(self.iter_changed())

    def iter_changed(self) -> Iterator[dict[str, Any]]:
        """:meth:`take_changed` one card at a time (the set is taken at once)."""
        changed, self._changed = self._changed, set()
        return self._cards(sorted(changed))

    def _cards(self, sensors: list[int]) -> Iterator[dict[str, Any]]:
        for sensor in sensors:
            yield self.sensor_json(sensor, live=sensor in self._announced)
            self._announced.add(sensor)

    def sensors(self, only: Collection[int] | None = None) -> list[int]:
        """Every sensor heard or configured (of ``only``, if given)."""
        if only is not None:
            return sorted(
                s for s in only if s in self._sensors or s in self._sensor_cfg
            )
        return sorted(set(self._sensors) | set(self._sensor_cfg))

    def full(self, only: Collection[int] | None = None) -> list[dict[str, Any]]:
        """JSON of every sensor heard or configured (of ``only``, if given)."""
        sensors = self.sensors(only)
        self._announced.update(sensors)
        return [self.sensor_json(s) for s in sensors]

    def today_wh(self, sensor: int, now: datetime) -> float | None:
        """Energy of ``sensor`` since local midnight, if the board has any."""
        state = self._sensors.get(sensor)
        if state is None or state.day_start is None:
            return None
        if state.day_start != local_day_start(now, self._tz):
            return 0.0
        return state.today_wh

    def _name_labels(
        self, sensor: int, r: Reading | None
    ) -> tuple[str, Mapping[str, str]]:
        meta = self._meta.get(sensor)
        if meta is not None:
            return meta
        if r is not None:
            return r.name, r.labels
        return f"sensor-{sensor}", {}

    def sensor_json(self, sensor: int, *, live: bool = False) -> dict[str, Any]:
        """One card's data; ``live`` leaves out what only a reload changes."""
        state = self._sensors.get(sensor) or _Sensor()
        r = state.reading
        out: dict[str, Any] = {"sensor": sensor}
        if not live:
            name, labels = self._name_labels(sensor, r)
            out.update(
                name=name,
                configured=sensor in self._meta,
                rack=labels.get("rack"),
                customer=labels.get("customer"),
                location=labels.get("location"),
            )
        if state.day_start is None:
            out["kwh_today"] = None
        elif state.day_start < self._day_start:
            out["kwh_today"] = 0.0  # silent since the day rolled over
        else:
            out["kwh_today"] = round(state.today_wh / 1000.0, 6)
        if r is None:
            out["time_ms"] = None
            return out
        out.update(
            time_ms=_ms(r.time),
            port=r.port,
            watts=_num(r.watts, 2),
            va=_num(r.va, 2),
            vrms=_num(r.vrms, 2),
            irms=_num(r.irms, 4),
            pf=_num(r.power_factor, 3),
            wh_total=_num(r.wh_total, 3),
            current_zero=_num(r.current_zero_counts, 2),
            rssi_dbm=r.rssi_dbm,
            flags=sorted(r.flags),
            cost_today=_num(r.cost_today, 6),
            cost_per_hour=_num(r.cost_per_hour, 5),
            currency=r.currency,
            price_band=r.price_band,
        )
        return out

    def totals(
        self, now: datetime, only: Collection[int] | None = None
    ) -> dict[str, Any]:
        """Sums over all sensors (or those in ``only``), per rack and per customer.

        ``watts`` sums the meters heard within ``web.stale_after_s`` of ``now``
        (``None`` if none was); ``stale`` counts those heard before that.
        """
        today = local_day_start(now, self._tz)
        fresh_after = now - self._stale_after
        racks: dict[str, _Total] = {}
        customers: dict[str, _Total] = {}
        overall = _Total()
        for sensor in self.sensors(only):
            state = self._sensors.get(sensor)
            r = state.reading if state is not None else None
            wh = state.today_wh if state and state.day_start == today else 0.0
            fresh = r is not None and r.time >= fresh_after
            _, labels = self._name_labels(sensor, r)
            overall.add(r, wh, fresh=fresh)
            rack = labels.get("rack")
            if rack:
                racks.setdefault(rack, _Total()).add(r, wh, fresh=fresh)
            customer = labels.get("customer")
            if customer:
                customers.setdefault(customer, _Total()).add(r, wh, fresh=fresh)
        return {
            "all": overall.json(),
            "racks": {k: v.json() for k, v in racks.items()},
            "customers": {k: v.json() for k, v in customers.items()},
        }

    def waveform(self, sensor: int) -> dict[str, Any] | None:
        """The last IO frame's samples (counts and calibrated units), if any.

        The zeros are the ones the figures use: the current zero as configured,
        drift-corrected, estimated or the default, and the voltage zero as
        configured or else the waveform's midline. Means are over whole mains
        cycles, like the figures.
        """
        state = self._sensors.get(sensor)
        if state is None or state.frame is None:
            return None
        record = state.frame
        frame = record.io_frame
        if frame is None:
            return None
        cfg = self._sensor_cfg.get(sensor) or _default_sensor(sensor)
        cal = cfg.calibration(self._config.mains)
        voltage = list(frame.channel(cal.voltage_channel))
        current = list(frame.channel(cal.current_channel))
        r = state.reading
        interval = r.sample_interval_ms if r and r.sample_interval_ms else None
        flags = r.flags if r is not None else frozenset()
        if Flag.ZERO_ESTIMATED in flags:
            zero_source = "estimated"
        elif Flag.DRIFT_CORRECTED in flags:
            zero_source = "drift-corrected"
        elif cfg.current_zero_configured:
            zero_source = "configured"
        else:
            zero_source = "default"
        i_zero = cal.current_zero
        if r is not None and r.current_zero_counts is not None:
            i_zero = r.current_zero_counts
        # The means of 1.5 cycles of raw samples sit tens of counts off the
        # midline; the power maths' whole-cycle window does not.
        means = compute_power(
            voltage,
            current,
            dataclasses.replace(cal, legacy=False) if cal.legacy else cal,
            fallback_interval_ms=interval,
            current_zero=i_zero,
        )
        has_samples = kept_sample_count(voltage, current) > 0
        v_zero = cal.voltage_zero
        if v_zero is None and has_samples:
            v_zero = means.voltage_mean_counts
        return {
            "sensor": sensor,
            "time_ms": _ms(record.time),
            "rssi_dbm": frame.rssi_dbm,
            "voltage_channel": cal.voltage_channel,
            "current_channel": cal.current_channel,
            "voltage_counts": voltage,
            "current_counts": current,
            "current_zero": round(i_zero, 2),
            "current_zero_source": zero_source,
            "current_mean": means.current_mean_counts if has_samples else None,
            "voltage_zero": v_zero,
            "voltage_zero_source": (
                "estimated" if cal.voltage_zero is None else "configured"
            ),
            "counts_per_amp": cal.counts_per_amp,
            "counts_per_volt": cal.counts_per_volt,
            "sample_interval_ms": interval,
            "watts": _num(r.watts, 2) if r else None,
            "vrms": _num(r.vrms, 2) if r else None,
            "irms": _num(r.irms, 4) if r else None,
        }


def _default_sensor(address: int) -> SensorConfig:
    from wattd.config import SensorConfig

    return SensorConfig(address=address)


@dataclasses.dataclass(slots=True)
class _Total:
    sensors: int = 0
    fresh: int = 0
    stale: int = 0
    watts: float = 0.0
    wh_today: float = 0.0
    cost_today: float | None = None
    currency: str | None = None

    def add(self, r: Reading | None, wh_today: float, *, fresh: bool) -> None:
        self.sensors += 1
        self.wh_today += wh_today
        if r is None:
            return
        if not fresh:
            self.stale += 1
        else:
            self.fresh += 1
            if math.isfinite(r.watts):
                self.watts += r.watts
        if r.cost_today is not None and math.isfinite(r.cost_today):
            self.cost_today = (self.cost_today or 0.0) + r.cost_today
            self.currency = r.currency

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sensors": self.sensors,
            "stale": self.stale,
            "watts": round(self.watts, 2) if self.fresh else None,
            "kwh_today": round(self.wh_today / 1000.0, 6),
            "cost_today": _num(self.cost_today, 6),
        }
        if self.currency is not None:
            out["currency"] = self.currency
        return out


def health_json(snap: DaemonSnapshot, *, stale_after_s: float) -> dict[str, Any]:
    """The health panel: ports, decoder errors, sinks and spool backlogs."""
    return {
        "version": snap.version,
        "uptime_s": round(snap.uptime_s, 1),
        "readings_total": snap.readings_total,
        "frames_per_s": round(snap.frames_per_s, 2),
        "sensors_total": len(snap.sensors),
        "sensors_seen": snap.sensors_seen(stale_after_s),
        "last_reload_error": snap.last_reload_error,
        "state_save_error": snap.state_save_error,
        "ports": [
            {
                "name": p.name,
                "device": p.device,
                "connected": p.connected,
                "frames_per_s": round(p.frames_per_s, 2),
                "frames_ok": p.frames_ok,
                "bad_checksum": p.bad_checksum,
                "rejected": sum(p.rejected.values()),
                "garbage_bytes": p.garbage_bytes,
                "outages": p.outages,
                "last_error": p.last_error,
            }
            for p in snap.ports
        ],
        "sinks": [
            {
                "name": s.name,
                "started": s.started,
                "queue_depth": s.queue_depth,
                "queue_capacity": s.queue_capacity,
                "written": s.written,
                "dropped": s.dropped + s.frames_dropped,
                "errors": s.errors,
                "spool_depth": _backlog(s.extra),
                "last_error": s.last_error,
            }
            for s in snap.sinks
        ],
    }


def _backlog(extra: Mapping[str, float]) -> float | None:
    for key in ("spool_depth", "backlog"):
        if key in extra:
            return extra[key]
    return None
