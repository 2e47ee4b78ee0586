"""A point-in-time view of the running daemon, for people and monitoring.

The daemon's monitor builds a :class:`DaemonSnapshot` on request (cheap: it
copies counters, no IO). The live console, systemd's ``STATUS=`` line, the web
dashboard and the Prometheus exporter all read this one typed object, so they
always agree. Everything here is frozen; counters only ever grow while the
daemon runs (they restart at zero with the process).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from wattd.core.readings import Flag

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PortSnapshot:
    """One serial port: link state, throughput and decoder counters."""

    name: str
    device: str
    api_mode: int
    baud: int
    connected: bool
    connections: int
    """Successful opens so far (1 + reconnects)."""
    outages: int
    last_error: str | None
    outage_s: float | None
    """How long the current outage has lasted, or None while connected."""
    bytes_read: int
    frames_per_s: float
    """Valid frames per second over the recent window."""
    frames_ok: int
    io_frames: int
    rejected: Mapping[str, int]
    """Rejected candidates by reason (``bad_checksum``, ``garbage``, ...)."""
    garbage_bytes: int
    modem_status: Mapping[str, int]
    """Modem status frames (radio resets...) by description."""
    last_frame_age_s: float | None

    @property
    def bad_checksum(self) -> int:
        """Frames with a wrong checksum."""
        return self.rejected.get("bad_checksum", 0)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SinkSnapshot:
    """One sink: its queue and what became of what was given to it."""

    name: str
    started: bool
    queue_depth: int
    queue_capacity: int
    frame_queue_depth: int
    written: int
    """Readings the sink accepted."""
    frames_written: int
    dropped: int
    """Readings lost because the queue was full or shutdown ran out of time."""
    frames_dropped: int
    rejected: int
    """Readings the sink refused for good (their batch was not retried)."""
    errors: int
    """Failed write/start attempts (each retry counts)."""
    last_error: str | None
    last_write_age_s: float | None
    extra: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """The sink's own figures (:meth:`wattd.sinks.base.Sink.stats`)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SensorSnapshot:
    """One meter as last heard."""

    sensor: int
    name: str
    configured: bool
    port: str
    frames: int
    """IO frames received from this sensor."""
    readings: int
    bad_checksum: int
    """Corrupt frames that still named this sensor (best effort, see docs).

    This is the one per-meter count of frame errors: the dashboard, ``/metrics``
    and the MQTT ``frame_errors`` field all read it from here."""
    last_seen: datetime | None
    last_seen_age_s: float | None
    watts: float | None
    wh_total: float | None
    vrms: float | None
    rssi_dbm: int | None
    flags: frozenset[Flag]
    labels: Mapping[str, str]
    irms: float | None = None
    power_factor: float | None = None
    current_zero_counts: float | None = None
    """The current zero the last reading used (see :attr:`current_zero_estimated`)."""

    @property
    def current_zero_estimated(self) -> bool:
        """Whether that zero was estimated from the waveform (none is configured)."""
        return Flag.ZERO_ESTIMATED in self.flags


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DaemonSnapshot:
    """Everything the daemon can say about itself right now."""

    version: str
    started_at: datetime
    uptime_s: float
    config_path: str | None
    config_loaded_at: datetime
    last_reload_error: str | None
    ports: tuple[PortSnapshot, ...]
    sinks: tuple[SinkSnapshot, ...]
    sensors: tuple[SensorSnapshot, ...]
    readings_total: int
    state_saved_at: datetime | None
    state_save_error: str | None

    @property
    def frames_per_s(self) -> float:
        """Valid frames per second over all ports."""
        return sum(p.frames_per_s for p in self.ports)

    @property
    def frame_errors(self) -> int:
        """Rejected frame candidates and garbage runs over all ports."""
        return sum(sum(p.rejected.values()) for p in self.ports)

    def sensors_seen(self, within_s: float | None = None) -> int:
        """Sensors heard at all, or within the last ``within_s`` seconds."""
        return sum(
            1
            for s in self.sensors
            if s.last_seen_age_s is not None
            and (within_s is None or s.last_seen_age_s <= within_s)
        )

    def status_line(self, stale_after_s: float = 60.0) -> str:
        """One line for ``systemctl status``."""
        up = sum(1 for p in self.ports if p.connected)
        text = (
            f"{self.frames_per_s:.1f} frames/s; "
            f"{self.sensors_seen(stale_after_s)} of {len(self.sensors)} sensors seen"
            f" in the last {stale_after_s:.0f} s; ports {up}/{len(self.ports)} up"
        )
        dropped = sum(s.dropped for s in self.sinks)
        if dropped:
            text += f"; {dropped} readings dropped"
        return text


__all__ = ["DaemonSnapshot", "PortSnapshot", "SensorSnapshot", "SinkSnapshot"]
