"""The reading: what one meter frame becomes, and what every sink receives."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wattd.core.iosample import IoSampleFrame


class Flag(enum.StrEnum):
    """Data-quality marks on a reading. A flagged reading is kept, never dropped."""

    CLIPPED = "clipped"
    """A sample sat at 0 or 1023 counts: the ADC saturated."""
    FLAT_VOLTAGE = "flat_voltage"
    """No mains waveform on the voltage channel; watts cannot be trusted."""
    OVERCURRENT = "overcurrent"
    """The current is beyond what a Kill-A-Watt can carry: a wiring or zero fault."""
    PARTIAL_CYCLE = "partial_cycle"
    """The samples span less than one mains cycle; figures come from a sine fit."""
    INTERVAL_FALLBACK = "interval_fallback"
    """The sample interval could not be measured and a previous value was used."""
    NEGATIVE_POWER = "negative_power"
    """Real power is clearly negative: current channel reversed, or back-feed."""
    ENERGY_GAP = "energy_gap"
    """Too long since the previous reading: the gap was not integrated."""
    UNKNOWN_SENSOR = "unknown_sensor"
    """The address is not in the config; default calibration was used."""
    DRIFT_CORRECTED = "drift_corrected"
    """The tracked current-zero drift was subtracted."""
    ZERO_ESTIMATED = "zero_estimated"
    """No ``current_zero`` is configured; the zero was estimated from the waveform."""
    LEGACY = "legacy"
    """Computed the 2009 wattcher way (mean |v*i|), for comparison only."""
    MISSING_CHANNEL = "missing_channel"
    """The frame lacks the configured voltage or current channel."""
    TOO_FEW_SAMPLES = "too_few_samples"
    """The frame holds too few samples for any figure; all figures are zero."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """Electrical figures of one sensor at one frame.

    ``time`` is the wall-clock arrival time of the frame (UTC); ``monotonic_s``
    is the monotonic clock at arrival, used only for integration and staleness.
    """

    sensor: int
    name: str
    time: datetime
    monotonic_s: float
    watts: float
    va: float
    vrms: float
    irms: float
    power_factor: float | None
    wh_total: float
    wh_delta: float
    rssi_dbm: int | None
    flags: frozenset[Flag] = frozenset()
    sample_interval_ms: float | None = None
    cycles: float | None = None
    gap_s: float | None = None
    current_zero_drift_counts: float | None = None
    current_zero_counts: float | None = None
    """The current zero the figures used, in counts (configured or estimated)."""
    port: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    price_band: str | None = None
    price_per_kwh: float | None = None
    currency: str | None = None
    cost_per_hour: float | None = None
    """What the current power costs per hour at the current band (PUE included)."""
    cost_today: float | None = None
    """Cost of the sensor's energy since local midnight in its tariff's timezone."""
    frame_hash: int | None = None
    """Hash of the frame's samples and sender (:func:`~wattd.core.pipeline.frame_hash`):
    equal on every coordinator that heard the same transmission."""

    @property
    def time_ns(self) -> int:
        """Arrival time as integer nanoseconds since the Unix epoch."""
        delta = self.time - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + (
            delta.microseconds * 1000
        )

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form; the keys are wattd's public output contract."""
        out: dict[str, Any] = {
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "sensor": self.sensor,
            "name": self.name,
            "watts": round_finite(self.watts, 3),
            "va": round_finite(self.va, 3),
            "vrms": round_finite(self.vrms, 3),
            "irms": round_finite(self.irms, 5),
            "pf": round_finite(self.power_factor, 4),
            "wh_total": round_finite(self.wh_total, 6),
            "rssi_dbm": self.rssi_dbm,
            "flags": sorted(self.flags),
        }
        if self.sample_interval_ms is not None:
            out["sample_interval_ms"] = round_finite(self.sample_interval_ms, 4)
        if self.gap_s is not None:
            out["gap_s"] = round_finite(self.gap_s, 3)
        if self.current_zero_drift_counts is not None:
            out["zero_drift_counts"] = round_finite(self.current_zero_drift_counts, 3)
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.price_per_kwh is not None:
            out["price_band"] = self.price_band
            out["price_per_kwh"] = self.price_per_kwh
            out["currency"] = self.currency
            out["cost_per_hour"] = round_finite(self.cost_per_hour, 6)
            out["cost_today"] = round_finite(self.cost_today, 6)
        return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def round_finite(value: float | None, digits: int) -> float | None:
    """``value`` rounded to ``digits``; None when it is None, NaN or infinite."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FrameRecord:
    """One frame (or rejected run of bytes) as it arrived, for the raw archive.

    ``kind`` is ``io`` for IO sample frames, ``other`` for other valid frames and
    the reject reason (``bad_checksum``, ``garbage``...) otherwise.
    """

    time: datetime
    port: str
    api_mode: int
    kind: str
    raw: bytes
    sensor: int | None = None
    io_frame: IoSampleFrame | None = None
    """For ``io`` records: the frame as the decoder parsed it, samples and all,
    so that no reader of the record has to parse ``raw`` again."""

    @property
    def time_ns(self) -> int:
        """Arrival time as integer nanoseconds since the Unix epoch."""
        delta = self.time - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + (
            delta.microseconds * 1000
        )
