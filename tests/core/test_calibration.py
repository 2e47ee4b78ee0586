"""The calibration value type refuses settings no meter can have."""

from __future__ import annotations

import math
from typing import Any

import pytest

from wattd.core.calibration import Calibration
from wattd.errors import CalibrationError


@pytest.mark.parametrize(
    "changes",
    [
        {"counts_per_amp": 0.0},
        {"counts_per_amp": math.nan},
        {"nominal_vrms": -120.0},
        {"counts_per_volt": 0.0},
        {"mains_hz": 0.0},
        {"sample_interval_ms": 0.01},
        {"current_zero": math.inf},
        {"max_amps": 0.0},
    ],
)
def test_calibration_rejects_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(CalibrationError, match=next(iter(changes))):
        Calibration(**changes)
