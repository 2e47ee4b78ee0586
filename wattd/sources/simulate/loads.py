"""Simulated loads: the current a meter's load draws, and its true power and energy.

Truth comes from the continuous waveforms, never from samples: sine loads are
exact by construction, and the switch-mode pulse shape is normalised by fine
numerical integration.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import ClassVar, Final

from wattd.errors import ConfigError

TAU: Final = 2.0 * math.pi
SQRT2: Final = math.sqrt(2.0)
# A Kill-A-Watt's plug is rated 15 A; more than this is a typo, not a load.
MAX_LOAD_WATTS: Final = 10_000.0

CurrentShape = Callable[[float], float]
"""Load current in amps as a function of the mains phase in cycles (0..1)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IdleLoad:
    """Nothing plugged in: zero current."""

    kind: ClassVar[str] = "idle"
    watts: ClassVar[float] = 0.0

    @property
    def spec(self) -> str:
        """Compact spec form (see :data:`METER_SPEC_HELP`)."""
        return "idle"

    def irms(self, vrms: float) -> float:
        """True RMS current at supply voltage ``vrms``."""
        return 0.0

    def shape(self, vrms: float) -> CurrentShape:
        """The current waveform at supply voltage ``vrms``."""
        return _zero


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ResistiveLoad:
    """A heater or lamp: current in phase with the voltage, ``watts`` at any Vrms."""

    kind: ClassVar[str] = "resistive"
    watts: float

    def __post_init__(self) -> None:
        _check_watts(self.watts)

    @property
    def spec(self) -> str:
        """Compact spec form."""
        return f"resistive:{self.watts:g}"

    def irms(self, vrms: float) -> float:
        """True RMS current at supply voltage ``vrms``."""
        return self.watts / vrms

    def shape(self, vrms: float) -> CurrentShape:
        """The current waveform: ``v(t) / R`` with ``R = Vrms^2 / watts``."""
        ipk = SQRT2 * self.watts / vrms

        def current(phase: float) -> float:
            return ipk * math.sin(TAU * phase)

        return current


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InductiveLoad:
    """A motor: sinusoidal current lagging the voltage by ``acos(power_factor)``."""

    kind: ClassVar[str] = "inductive"
    watts: float
    power_factor: float

    def __post_init__(self) -> None:
        _check_watts(self.watts)
        if not 0.05 <= self.power_factor <= 1.0:
            msg = f"power factor must be 0.05..1, got {self.power_factor:g}"
            raise ConfigError(msg)

    @property
    def spec(self) -> str:
        """Compact spec form."""
        return f"inductive:{self.watts:g}:{self.power_factor:g}"

    def irms(self, vrms: float) -> float:
        """True RMS current: ``watts / (Vrms * pf)``."""
        return self.watts / (vrms * self.power_factor)

    def shape(self, vrms: float) -> CurrentShape:
        """The current waveform."""
        ipk = SQRT2 * self.irms(vrms)
        lag = math.acos(self.power_factor)

        def current(phase: float) -> float:
            return ipk * math.sin(TAU * phase - lag)

        return current


# A rectifier-capacitor input draws a raised-cosine pulse shortly before each
# voltage peak: conduction angle 2 * _SMPS_HALF_WIDTH cycles (54 degrees),
# centred _SMPS_LEAD cycles (9 degrees) ahead of the peak.
_SMPS_HALF_WIDTH: Final = 0.075
_SMPS_CENTRE: Final = 0.25 - 0.025


def _smps_unit(phase: float) -> float:
    """Pulse shape with peak 1; positive in the first half cycle."""
    sign = 1.0
    if phase >= 0.5:
        phase -= 0.5
        sign = -1.0
    d = phase - _SMPS_CENTRE
    if -_SMPS_HALF_WIDTH < d < _SMPS_HALF_WIDTH:
        c = math.cos(math.pi * d / (2.0 * _SMPS_HALF_WIDTH))
        return sign * c * c
    return 0.0


def _smps_integrals(points: int = 40_000) -> tuple[float, float]:
    """Mean of ``sin * pulse`` and of ``pulse^2`` over a cycle (midpoint rule)."""
    vi = 0.0
    ii = 0.0
    for k in range(points):
        ph = (k + 0.5) / points
        g = _smps_unit(ph)
        vi += math.sin(TAU * ph) * g
        ii += g * g
    return vi / points, ii / points


_SMPS_VI, _SMPS_I2 = _smps_integrals()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SmpsLoad:
    """A switch-mode supply: narrow current pulses near the voltage peaks.

    The pulses are rich in odd harmonics (3rd ~0.9, 5th ~0.7 of the
    fundamental), so ``mean(|v*i|)`` or a sine fit both misread it.
    """

    kind: ClassVar[str] = "smps"
    watts: float

    def __post_init__(self) -> None:
        _check_watts(self.watts)

    @property
    def spec(self) -> str:
        """Compact spec form."""
        return f"smps:{self.watts:g}"

    def _peak(self, vrms: float) -> float:
        return self.watts / (SQRT2 * vrms * _SMPS_VI)

    def irms(self, vrms: float) -> float:
        """True RMS current (from the integrated pulse shape)."""
        return self._peak(vrms) * math.sqrt(_SMPS_I2)

    def shape(self, vrms: float) -> CurrentShape:
        """The current waveform."""
        ipk = self._peak(vrms)

        def current(phase: float) -> float:
            return ipk * _smps_unit(phase)

        return current


SteadyLoad = IdleLoad | ResistiveLoad | InductiveLoad | SmpsLoad


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StepsLoad:
    """A schedule: each steady load runs from its start time to the next one.

    Before the first start the meter is idle. With ``period_s`` the schedule
    repeats (a fridge compressor cycling on and off).
    """

    kind: ClassVar[str] = "steps"
    steps: tuple[tuple[float, SteadyLoad], ...]
    period_s: float | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            msg = "a steps load needs at least one LOAD@SECONDS step"
            raise ConfigError(msg)
        starts = [s for s, _ in self.steps]
        if starts[0] < 0 or any(b <= a for a, b in itertools.pairwise(starts)):
            msg = f"step start times must be >= 0 and increasing, got {starts}"
            raise ConfigError(msg)
        if self.period_s is not None and not starts[-1] < self.period_s:
            msg = (
                f"period {self.period_s:g} s must exceed the last step start"
                f" {starts[-1]:g} s"
            )
            raise ConfigError(msg)

    @property
    def spec(self) -> str:
        """Compact spec form."""
        parts = []
        for start, load in self.steps:
            text = f"{load.watts:g}" if isinstance(load, ResistiveLoad) else load.spec
            parts.append(f"{text.replace(':', '/')}@{start:g}")
        out = "steps:" + ",".join(parts)
        return out if self.period_s is None else f"{out}:period={self.period_s:g}"

    def active(self, t_s: float) -> SteadyLoad:
        """The steady load running at simulated time ``t_s``."""
        if self.period_s is not None and t_s >= 0:
            t_s %= self.period_s
        current: SteadyLoad = IDLE
        for start, load in self.steps:
            if start > t_s:
                break
            current = load
        return current

    def energy_ws(self, t_s: float) -> float:
        """Energy in watt-seconds from time 0 to ``t_s`` (0 for ``t_s <= 0``)."""
        if t_s <= 0:
            return 0.0
        if self.period_s is None:
            return self._within(t_s)
        cycles, rest = divmod(t_s, self.period_s)
        return cycles * self._within(self.period_s) + self._within(rest)

    def _within(self, t_s: float) -> float:
        total = 0.0
        for k, (start, load) in enumerate(self.steps):
            if start >= t_s:
                break
            end = self.steps[k + 1][0] if k + 1 < len(self.steps) else math.inf
            total += load.watts * (min(end, t_s) - start)
        return total


Load = SteadyLoad | StepsLoad
IDLE: Final = IdleLoad()


def _zero(phase: float) -> float:
    return 0.0


def _check_watts(watts: float) -> None:
    if not 0.0 <= watts <= MAX_LOAD_WATTS:
        msg = f"load watts must be 0..{MAX_LOAD_WATTS:g}, got {watts:g}"
        raise ConfigError(msg)


def active_load(load: Load, t_s: float) -> SteadyLoad:
    """The steady load in effect at ``t_s``."""
    return load.active(t_s) if isinstance(load, StepsLoad) else load


def load_energy_ws(load: Load, t0_s: float, t1_s: float) -> float:
    """Exact energy of a load between two simulated times, in watt-seconds."""
    if isinstance(load, StepsLoad):
        return load.energy_ws(t1_s) - load.energy_ws(t0_s)
    return load.watts * (t1_s - t0_s)
