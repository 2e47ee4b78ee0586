"""A meter's calibration: the settings the power maths turns counts into units with.

:class:`Calibration` is a frozen value checked when it is built, so the power
maths never meets a zero gain or an impossible interval. The config builds one
per sensor; ``wattd calibrate`` measures what goes into it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final

from wattd.errors import CalibrationError

__all__ = [
    "DEFAULT_COUNTS_PER_AMP",
    "DEFAULT_CURRENT_ZERO",
    "MAX_INTERVAL_MS",
    "MIN_INTERVAL_MS",
    "Calibration",
]

DEFAULT_CURRENT_ZERO: Final = 492.0
DEFAULT_COUNTS_PER_AMP: Final = 15.5
# Pinned or fallback intervals outside this range are configuration mistakes
# (the config accepts the same range).
MIN_INTERVAL_MS: Final = 0.2
MAX_INTERVAL_MS: Final = 5.0
MIN_MAINS_HZ: Final = 10.0
MAX_MAINS_HZ: Final = 1000.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """Per-sensor calibration.

    ``current_zero`` is the current channel's reading at no load (counts) and
    ``zero_drift_counts`` a tracked correction subtracted on top of it. Voltage
    is scaled so its RMS reads ``nominal_vrms`` unless ``counts_per_volt`` is
    set, in which case it is measured (about ``voltage_zero`` if set, else the
    waveform's own DC level). ``sample_interval_ms`` pins the interval instead
    of measuring it per frame.
    """

    current_zero: float = DEFAULT_CURRENT_ZERO
    counts_per_amp: float = DEFAULT_COUNTS_PER_AMP
    nominal_vrms: float = 120.0
    counts_per_volt: float | None = None
    voltage_zero: float | None = None
    mains_hz: float = 60.0
    sample_interval_ms: float | None = None
    voltage_channel: int = 0
    current_channel: int = 4
    max_amps: float = 20.0
    legacy: bool = False
    zero_drift_counts: float = 0.0

    def __post_init__(self) -> None:
        positive = {
            "counts_per_amp": self.counts_per_amp,
            "nominal_vrms": self.nominal_vrms,
            "mains_hz": self.mains_hz,
            "max_amps": self.max_amps,
            "counts_per_volt": self.counts_per_volt,
            "sample_interval_ms": self.sample_interval_ms,
        }
        for name, value in positive.items():
            if value is not None and not (math.isfinite(value) and value > 0.0):
                msg = f"calibration {name} must be a positive number, got {value!r}"
                raise CalibrationError(msg)
        finite = {
            "current_zero": self.current_zero,
            "voltage_zero": self.voltage_zero,
            "zero_drift_counts": self.zero_drift_counts,
        }
        for name, value in finite.items():
            if value is not None and not math.isfinite(value):
                msg = f"calibration {name} must be a finite number, got {value!r}"
                raise CalibrationError(msg)
        if not MIN_MAINS_HZ <= self.mains_hz <= MAX_MAINS_HZ:
            msg = (
                f"calibration mains_hz {self.mains_hz!r} is outside"
                f" {MIN_MAINS_HZ:g}-{MAX_MAINS_HZ:g} Hz; use 50 or 60"
            )
            raise CalibrationError(msg)
        interval = self.sample_interval_ms
        if interval is not None and not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
            msg = (
                f"calibration sample_interval_ms {interval!r} is outside"
                f" {MIN_INTERVAL_MS:g}-{MAX_INTERVAL_MS:g} ms; leave it unset to"
                " measure it from the voltage waveform"
            )
            raise CalibrationError(msg)
