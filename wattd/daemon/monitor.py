"""What the running daemon knows about its ports, sensors and sinks, for status.

The supervisor tells the :class:`Monitor` what happened (a frame heard from a
sensor, a reading made, a corrupt frame that names a sensor, a config applied
or rejected). The monitor keeps each sensor's counters in one place and builds
the :class:`~wattd.core.snapshot.DaemonSnapshot` that the console, ``STATUS=``,
the dashboard, ``/metrics`` and the MQTT sink read. Port and sink figures are
read from the port readers and the bus when a snapshot is taken. No IO, no
awaiting: every call is cheap enough for the reading path.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from wattd import __version__
from wattd.core.snapshot import DaemonSnapshot, SensorSnapshot

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from pathlib import Path

    from wattd.config import Config
    from wattd.core.readings import Flag, Reading
    from wattd.daemon.bus import Bus
    from wattd.daemon.ports import PortReader
    from wattd.sources.serial import Clock
    from wattd.storage.state import StateFile


@dataclasses.dataclass(slots=True)
class SensorTrack:
    """The running counters of one sensor."""

    sensor: int
    port: str = ""
    frames: int = 0
    readings: int = 0
    bad_checksum: int = 0
    last_reading: Reading | None = None
    last_seen_wall: datetime | None = None
    last_seen_mono: float | None = None


class Monitor:
    """Per-sensor counters and the daemon snapshot built from them."""

    def __init__(
        self,
        *,
        clock: Clock,
        ports: Mapping[str, PortReader],
        bus: Bus,
        state_file: StateFile,
        config_path: Path | None = None,
    ) -> None:
        self._clock = clock
        self._ports = ports
        self._bus = bus
        self._state_file = state_file
        self._config_path = config_path
        self._sensors: dict[int, SensorTrack] = {}
        self._readings_total = 0
        self._started_wall = clock.wall()
        self._started_mono = clock.monotonic()
        self._config_loaded_at = self._started_wall
        self._last_reload_error: str | None = None

    # -- what happened (the reading path) ----------------------------------------

    def heard(
        self, sensor: int, port: str, wall_time: datetime, monotonic_s: float
    ) -> SensorTrack:
        """Count an IO frame of ``sensor``; returns its track for :meth:`produced`."""
        track = self._sensors.get(sensor)
        if track is None:
            track = self._sensors[sensor] = SensorTrack(sensor=sensor)
        track.frames += 1
        track.port = port
        track.last_seen_wall = wall_time
        track.last_seen_mono = monotonic_s
        return track

    def produced(self, track: SensorTrack, reading: Reading) -> None:
        """Count a reading made from the frame :meth:`heard` counted."""
        track.readings += 1
        track.last_reading = reading
        self._readings_total += 1

    def corrupt_frame(self, claimed_sensor: int) -> None:
        """Count a corrupt frame against the sensor it names.

        The address may itself be corrupt, so only sensors already heard from
        are counted.
        """
        track = self._sensors.get(claimed_sensor)
        if track is not None:
            track.bad_checksum += 1

    def config_applied(self) -> None:
        """A config (re)load was applied now."""
        self._last_reload_error = None
        self._config_loaded_at = self._clock.wall()

    def config_rejected(self, error: str) -> None:
        """A reload failed; the previous config stays."""
        self._last_reload_error = error

    # -- the snapshot ------------------------------------------------------------

    def snapshot(self, config: Config) -> DaemonSnapshot:
        """The current counters as one typed, frozen object."""
        now = self._clock.monotonic()
        # Built once per config: rebuilding the names and labels of every
        # sensor each time cost more than the rest of the snapshot.
        meta = config.sensor_meta()
        ports = tuple(r.snapshot(now) for r in self._ports.values())
        sensors = []
        no_labels: Mapping[str, str] = {}
        for sensor in sorted(self._sensors.keys() | meta.keys()):
            track = self._sensors.get(sensor) or SensorTrack(sensor=sensor)
            cfg = meta.get(sensor)
            last = track.last_reading
            flags: frozenset[Flag] = last.flags if last is not None else frozenset()
            sensors.append(
                SensorSnapshot(
                    sensor=sensor,
                    name=cfg[0] if cfg else (last.name if last else f"sensor-{sensor}"),
                    configured=cfg is not None,
                    port=track.port,
                    frames=track.frames,
                    readings=track.readings,
                    bad_checksum=track.bad_checksum,
                    last_seen=track.last_seen_wall,
                    last_seen_age_s=(
                        None
                        if track.last_seen_mono is None
                        else now - track.last_seen_mono
                    ),
                    watts=last.watts if last else None,
                    wh_total=last.wh_total if last else None,
                    vrms=last.vrms if last else None,
                    irms=last.irms if last else None,
                    power_factor=last.power_factor if last else None,
                    current_zero_counts=last.current_zero_counts if last else None,
                    rssi_dbm=last.rssi_dbm if last else None,
                    flags=flags,
                    labels=cfg[1] if cfg else no_labels,
                )
            )
        return DaemonSnapshot(
            version=__version__,
            started_at=self._started_wall,
            uptime_s=now - self._started_mono,
            config_path=str(self._config_path) if self._config_path else None,
            config_loaded_at=self._config_loaded_at,
            last_reload_error=self._last_reload_error,
            ports=ports,
            sinks=tuple(c.snapshot() for c in self._bus.channels),
            sensors=tuple(sensors),
            readings_total=self._readings_total,
            state_saved_at=self._state_file.saved_at,
            state_save_error=self._state_file.last_error,
        )


__all__ = ["Monitor", "SensorTrack"]
