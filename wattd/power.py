"""Kill-A-Watt power maths: ADC samples plus calibration in, true power out.

(Interface only: the implementation is being written.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from wattd.readings import Flag

DEFAULT_CURRENT_ZERO: Final = 492.0
DEFAULT_COUNTS_PER_AMP: Final = 15.5


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """Per-sensor calibration."""

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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PowerResult:
    """Figures computed from one frame's samples."""

    watts: float
    va: float
    vrms: float
    irms: float
    power_factor: float | None
    sample_interval_ms: float | None
    interval_measured: bool
    cycles: float
    flags: frozenset[Flag]
    current_mean_counts: float
    current_ac_rms_counts: float
    vi_correlation: float


def compute_power(
    voltage: Sequence[int],
    current: Sequence[int],
    cal: Calibration,
    *,
    fallback_interval_ms: float | None = None,
) -> PowerResult:
    """Compute power figures from one frame's voltage and current samples."""
    raise NotImplementedError
