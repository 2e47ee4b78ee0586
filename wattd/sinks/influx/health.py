"""Node health beside the clock probe: what the central store learns of a host.

With the daemon's snapshot attached, the probe request carries, besides the
``wattd_clock`` line, one :data:`~wattd.costing.fleetstatus.NODE_MEASUREMENT`
line for the host and one :data:`~wattd.costing.fleetstatus.METER_MEASUREMENT`
line per meter it knows, all without a timestamp (the store stamps them on
receipt) and with float fields only, so a series never changes type. The
backlog is the largest the sink saw at the start of a drain since the
previous probe: the probe goes after a drain, when the spool is empty again,
so the spool as it is then would always read zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from wattd.costing.fleetstatus import METER_MEASUREMENT, NODE_MEASUREMENT
from wattd.sinks.influx.lineprotocol import escape_measurement, escape_tag

if TYPE_CHECKING:
    from collections.abc import Mapping

    from wattd.core.snapshot import DaemonSnapshot, SensorSnapshot

__all__ = ["BacklogPeak", "ReadingRate", "health_lines"]


@dataclasses.dataclass(slots=True)
class BacklogPeak:
    """The largest spool backlog seen since it was last taken."""

    depth: float = 0.0
    oldest_age_s: float = 0.0

    def note(self, depth: float, oldest_age_s: float) -> None:
        """Keep the larger of what is held and ``depth``/``oldest_age_s``."""
        self.depth = max(self.depth, depth)
        self.oldest_age_s = max(self.oldest_age_s, oldest_age_s)

    def take(self) -> tuple[float, float]:
        """The peak so far, starting over."""
        peak = (self.depth, self.oldest_age_s)
        self.depth = self.oldest_age_s = 0.0
        return peak


@dataclasses.dataclass(slots=True)
class ReadingRate:
    """Readings per second between one probe and the next."""

    readings: int | None = None
    uptime_s: float = 0.0

    def per_s(self, readings: int, uptime_s: float) -> float:
        """The rate since the previous call (the first: since the start)."""
        before, since = (
            (0, 0.0) if self.readings is None else (self.readings, self.uptime_s)
        )
        self.readings, self.uptime_s = readings, uptime_s
        elapsed = uptime_s - since
        return max(0, readings - before) / elapsed if elapsed > 0 else 0.0


def health_lines(
    snapshot: DaemonSnapshot,
    *,
    node: str,
    site: str | None,
    backlog: tuple[float, float],
    readings_per_s: float,
) -> list[bytes]:
    """The node's line and one line per meter, without timestamps."""
    tags = _node_tags(node, site)
    depth, oldest_age_s = backlog
    values = {
        "readings_total": snapshot.readings_total,
        "readings_per_s": readings_per_s,
        "frames_per_s": snapshot.frames_per_s,
        "decode_errors_total": snapshot.frame_errors,
        "spool_depth": depth,
        "oldest_pending_age_s": oldest_age_s,
        "sensors": len(snapshot.sensors),
        "sensors_seen": snapshot.sensors_seen(),
        "ports": len(snapshot.ports),
        "ports_connected": sum(1 for p in snapshot.ports if p.connected),
        "uptime_s": snapshot.uptime_s,
    }
    lines = [_line(NODE_MEASUREMENT, tags, values)]
    lines.extend(
        _line(METER_MEASUREMENT, _meter_tags(sensor, node, site), _meter_values(sensor))
        for sensor in snapshot.sensors
    )
    return lines


def _node_tags(node: str, site: str | None) -> dict[str, str]:
    return {"node": node, **({"site": site} if site else {})}


def _meter_tags(sensor: SensorSnapshot, node: str, site: str | None) -> dict[str, str]:
    """The identity tags of the meter's power points, so the two join."""
    tags = {
        key: sensor.labels[key]
        for key in ("id", "rack", "customer", "location")
        if sensor.labels.get(key)
    }
    return {**tags, "name": sensor.name, "sensor": str(sensor.sensor)} | _node_tags(
        node, site
    )


def _meter_values(sensor: SensorSnapshot) -> dict[str, float | int | None]:
    return {
        "frames_total": sensor.frames,
        "readings_total": sensor.readings,
        "bad_checksum_total": sensor.bad_checksum,
        "last_seen_age_s": sensor.last_seen_age_s,
    }


def _line(
    measurement: str, tags: Mapping[str, str], values: Mapping[str, float | int | None]
) -> bytes:
    tag_text = "".join(
        f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v
    )
    fields = ",".join(
        f"{key}={float.__repr__(float(value))}"
        for key, value in values.items()
        if value is not None and math.isfinite(value)
    )
    return f"{escape_measurement(measurement)}{tag_text} {fields}".encode()
