"""InfluxDB line protocol for readings: one reading becomes one line.

Layout (tag keys sorted, as InfluxDB prefers)::

    power,customer=acme,name=fridge,node=pi4,rack=r1,sensor=1 irms=1.2,pf=0.97,...

A sensor with an ``id`` also gets an ``id`` tag (it is in the sensor's labels),
and every point a ``site`` tag when the config sets ``site``; without them the
lines are what they always were.

Fields are always floats so a series never changes type; a field whose value is
None or not finite is left out, and a reading with no field left gives no line.
With ``influxdb.frame_hash`` one more field follows, always an integer:
``frame_hash=123i``, the hash of the frame's samples, for fleet reports to find
one transmission heard by two coordinators. Without it nothing changes.
Escaping follows the line-protocol reference: commas and spaces in the
measurement; commas, equals signs and spaces in tag keys and values. Newlines
cannot be escaped in tags, so control characters become spaces.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

    from wattd.config import Config
    from wattd.core.readings import Reading

__all__ = [
    "FIELDS",
    "RESERVED_TAG_KEYS",
    "PointEncoder",
    "escape_measurement",
    "escape_tag",
]

FIELDS: Final = ("watts", "va", "vrms", "irms", "pf", "wh_total", "rssi_dbm")
"""Field keys, in the order they are written."""
SERIES_CACHE_SIZE: Final = 4_096
"""Distinct tag sets remembered; far more than any site has sensors, and the
cache starts over rather than grow if labels keep changing."""
RESERVED_TAG_KEYS: Final = frozenset({"time", "sensor", "name", "node"})
"""Tag keys a free-form label cannot take: ``time`` is refused by InfluxDB and the
others are set by wattd itself."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def escape_measurement(name: str) -> str:
    """Escape a measurement name."""
    return _CONTROL.sub(" ", name).translate(_MEASUREMENT_ESCAPES)


def escape_tag(text: str) -> str:
    """Escape a tag key or value (also used for field keys)."""
    out = _CONTROL.sub(" ", text).translate(_TAG_ESCAPES)
    # A trailing backslash would escape the separator after it.
    if out.endswith("\\"):
        out += " "
    return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PointEncoder:
    """Turns readings into line-protocol lines (bytes, without the newline).

    ``sensor_tags`` holds the configured metadata per sensor address (rack,
    customer, location and free-form labels); a reading's own ``labels`` win.
    """

    measurement: str = "power"
    node: str | None = None
    site: str | None = None
    """Set, it tags every point and wins over a free-form ``site`` label."""
    sensor_tags: Mapping[int, Mapping[str, str]] = dataclasses.field(
        default_factory=dict
    )
    frame_hash: bool = False
    """Write the reading's ``frame_hash`` as an integer field."""
    _series_cache: dict[int, tuple[str, Mapping[str, str], str]] = dataclasses.field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """Per sensor: the name and labels a series was built for, and the series."""

    @classmethod
    def from_config(cls, config: Config) -> PointEncoder:
        """The encoder for ``config.influxdb`` and the configured sensors."""
        influx = config.influxdb
        return cls(
            measurement=influx.measurement,
            node=influx.node_id or config.node,
            site=config.site,
            frame_hash=influx.frame_hash,
            sensor_tags={
                address: labels for address, (_, labels) in config.sensor_meta().items()
            },
        )

    def encode(self, reading: Reading) -> bytes | None:
        """One line for ``reading``, or None when it has no finite field."""
        values = (
            reading.watts,
            reading.va,
            reading.vrms,
            reading.irms,
            reading.power_factor,
            reading.wh_total,
            reading.rssi_dbm,
        )
        fields = [
            f"{key}={float.__repr__(number)}"
            for key, value in zip(FIELDS, values, strict=True)
            if value is not None and math.isfinite(number := float(value))
        ]
        if not fields:
            return None
        if self.frame_hash and reading.frame_hash is not None:
            fields.append(f"frame_hash={reading.frame_hash}i")
        return f"{self._series(reading)} {','.join(fields)} {reading.time_ns}".encode()

    def _series(self, reading: Reading) -> str:
        """Measurement and tag set, cached: a sensor's tags rarely change.

        The check allocates nothing: a sensor's readings share one labels
        mapping, so the identity test settles it without comparing contents.
        """
        labels = reading.labels
        hit = self._series_cache.get(reading.sensor)
        if (
            hit is not None
            and hit[0] == reading.name
            and (hit[1] is labels or hit[1] == labels)
        ):
            return hit[2]
        if len(self._series_cache) >= SERIES_CACHE_SIZE:
            self._series_cache.clear()
        tag_text = ",".join(
            f"{escape_tag(k)}={escape_tag(v)}" for k, v in self.tags(reading)
        )
        series = f"{escape_measurement(self.measurement)},{tag_text}"
        self._series_cache[reading.sensor] = (reading.name, labels, series)
        return series

    def tags(self, reading: Reading) -> list[tuple[str, str]]:
        """Sorted (key, value) tag pairs; empty values are left out."""
        merged = {
            key: value
            for source in (self.sensor_tags.get(reading.sensor, {}), reading.labels)
            for key, value in source.items()
            if key and key not in RESERVED_TAG_KEYS and not key.startswith("_")
        }
        merged["sensor"] = str(reading.sensor)
        merged["name"] = reading.name
        if self.node:
            merged["node"] = self.node
        if self.site:
            merged["site"] = self.site
        return sorted((k, v) for k, v in merged.items() if v)
