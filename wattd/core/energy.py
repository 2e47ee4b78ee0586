"""Energy: integrate one sensor's watts over monotonic time into a Wh total.

Sans-IO: the caller passes each reading's watts and its monotonic timestamp in
seconds; nothing here reads a clock. Why it works the way it does:

* Trapezoids between successive readings: a reading is a sample of power at
  one instant, so the best estimate between two of them is their average.
* A silence longer than ``max_gap_s`` (lost frames, an unplugged meter, a
  stalled reader) is not integrated and is reported as a gap. Stretching one
  reading over minutes would invent energy; the caller can count the gaps.
* The published total never decreases, because consumers (Home Assistant's
  ``total_increasing``, InfluxDB counters) read any drop as a meter reset.
  Energy goes into a signed register and the total is the register's running
  maximum: per-frame noise around 0 W cancels instead of piling up as it
  would if negative readings were clipped, and back-feed (negative power)
  must be repaid before the total rises again.
* A timestamp that goes backwards, or a non-finite reading, is ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Final

from wattd.errors import ConfigError, StateError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DEFAULT_MAX_GAP_S", "EnergyIntegrator", "EnergyState", "EnergyStep"]

# Tweet-a-Watt frames arrive every ~2.08 s and ~2 % are lost, so a few missing
# frames in a row still count as continuous; longer silences are gaps.
DEFAULT_MAX_GAP_S: Final = 10.0
_SECONDS_PER_HOUR: Final = 3600.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnergyState:
    """A snapshot of one integrator, for saving and restoring.

    ``wh_total`` is the published total and ``wh_register`` the signed energy
    (never above the total). ``last_watts`` and ``last_at_s`` are the previous
    reading on the monotonic clock; they mean nothing to another process, so
    :meth:`to_json_dict` leaves them out.
    """

    wh_total: float = 0.0
    wh_register: float = 0.0
    last_watts: float | None = None
    last_at_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("wh_total", "wh_register", "last_watts", "last_at_s"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                msg = f"energy state {name} must be a finite number, got {value!r}"
                raise StateError(msg)
        if self.wh_register > self.wh_total:
            msg = (
                f"energy state wh_register {self.wh_register!r} exceeds wh_total"
                f" {self.wh_total!r}; the total is the register's running maximum"
            )
            raise StateError(msg)
        if (self.last_watts is None) != (self.last_at_s is None):
            msg = "energy state last_watts and last_at_s must be both set or both unset"
            raise StateError(msg)

    def to_json_dict(self) -> dict[str, float]:
        """The totals as plain JSON values (no monotonic timestamps)."""
        return {"wh_total": self.wh_total, "wh_register": self.wh_register}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> EnergyState:
        """Rebuild a state saved by :meth:`to_json_dict`.

        Raises:
            StateError: a field is missing or not a finite number.
        """
        values: dict[str, float] = {}
        for name in ("wh_total", "wh_register"):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                msg = (
                    f"saved energy state field {name!r} must be a number, got"
                    f" {value!r}; delete the state file to start from zero"
                )
                raise StateError(msg)
            values[name] = float(value)
        return cls(wh_total=values["wh_total"], wh_register=values["wh_register"])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnergyStep:
    """What one reading did to the total.

    ``wh_delta`` (never negative) is how much the published total rose;
    ``gap_s`` is set when the time since the previous reading was too long to
    integrate.
    """

    wh_delta: float
    wh_total: float
    gap_s: float | None = None


class EnergyIntegrator:
    """One sensor's energy counter fed with (watts, monotonic seconds)."""

    def __init__(
        self,
        *,
        max_gap_s: float = DEFAULT_MAX_GAP_S,
        state: EnergyState | None = None,
    ) -> None:
        if not (math.isfinite(max_gap_s) and max_gap_s > 0.0):
            msg = f"must be a positive number of seconds, got {max_gap_s!r}"
            raise ConfigError(msg, key="energy.max_gap_s")
        self.max_gap_s = max_gap_s
        start = state or EnergyState()
        self._total = start.wh_total
        self._register = start.wh_register
        self._last_watts = start.last_watts
        self._last_at_s = start.last_at_s

    @property
    def wh_total(self) -> float:
        """The published total in watt-hours."""
        return self._total

    @property
    def state(self) -> EnergyState:
        """A snapshot to save; pass it back as ``state`` to resume."""
        return EnergyState(
            wh_total=self._total,
            wh_register=self._register,
            last_watts=self._last_watts,
            last_at_s=self._last_at_s,
        )

    def update(self, watts: float, at_s: float) -> EnergyStep:
        """Add one reading taken at monotonic time ``at_s`` (seconds)."""
        if not (math.isfinite(watts) and math.isfinite(at_s)):
            return EnergyStep(wh_delta=0.0, wh_total=self._total)
        last_at = self._last_at_s
        last_watts = self._last_watts
        if last_at is None or last_watts is None:
            self._remember(watts, at_s)
            return EnergyStep(wh_delta=0.0, wh_total=self._total)
        elapsed = at_s - last_at
        if elapsed < 0.0:
            return EnergyStep(wh_delta=0.0, wh_total=self._total)
        self._remember(watts, at_s)
        if elapsed > self.max_gap_s:
            return EnergyStep(wh_delta=0.0, wh_total=self._total, gap_s=elapsed)
        increment = 0.5 * (last_watts + watts) * elapsed / _SECONDS_PER_HOUR
        if not math.isfinite(increment + self._register):
            # Absurd (overflowing) watts must not poison the saved total.
            return EnergyStep(wh_delta=0.0, wh_total=self._total)
        self._register += increment
        before = self._total
        if self._register > before:
            self._total = self._register
        return EnergyStep(wh_delta=self._total - before, wh_total=self._total)

    def _remember(self, watts: float, at_s: float) -> None:
        self._last_watts = watts
        self._last_at_s = at_s
