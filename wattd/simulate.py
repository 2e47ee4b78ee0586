"""Simulated Tweet-a-Watt meters: known waveforms in, XBee wire bytes out.

Model. Every meter sees the mains voltage ``v(t) = Vrms*sqrt(2)*sin(2*pi*f*t)``
(one shared grid phase) and draws the current of its load. Every ~2.08 s its
radio takes 19 sample pairs (AD0 voltage, AD4 current) 1.2-1.4 ms apart, with
sample 0 taken early (the gap before sample 1 is 12-18 % longer), adds ADC
noise, rounds to 10 bits, clips at 0/1023 and sends one 0x83 frame. Per-unit
quirks (current zero, voltage gain and offset, interval, noise, RSSI) are drawn
from the seed, as the real units in the public captures differ.

Truth. The true real power, Vrms, Irms and energy come from the continuous
waveforms, never from samples: sine loads are exact by construction, and the
switch-mode pulse shape is normalised by fine numerical integration. Tests can
check both against their own integration of :meth:`MeterModel.voltage_volts`
and :meth:`MeterModel.current_amps`.

Determinism. Each meter has its own random stream seeded from ``(seed,
address)``, and drops, line garbage and bit flips each have their own stream,
so adding noise does not change the samples of any frame, and the output does
not depend on how :meth:`Simulator.advance` calls are chunked. The cost of a
frame does not grow with the number of meters (a heap picks the next one).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import math
import os
import random
import re
import termios
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import ClassVar, Final

from wattd.errors import ConfigError, SourceError
from wattd.frames import ApiMode, encode_frame
from wattd.iosample import encode_rx16_io

TAU: Final = 2.0 * math.pi
SQRT2: Final = math.sqrt(2.0)
ADC_MAX: Final = 1023
SAMPLES_PER_FRAME: Final = 19
VOLTAGE_CHANNEL: Final = 0
CURRENT_CHANNEL: Final = 4
MEAN_FRAME_PERIOD_S: Final = 2.08
# Last sample to the end of the frame on the host's UART: radio turnaround plus
# 88 bytes at 9600 baud (~92 ms).
TX_DELAY_S: Final = 0.1
# A Kill-A-Watt's plug is rated 15 A; more than this is a typo, not a load.
MAX_LOAD_WATTS: Final = 10_000.0


# -- loads --------------------------------------------------------------------

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


# -- meters -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MeterModel:
    """One simulated Kill-A-Watt with its XBee: load, supply and analogue quirks.

    ``voltage_amplitude_counts`` is the sine amplitude the voltage channel shows
    at ``nominal_vrms``; the supply actually runs at ``vrms``.
    """

    address: int
    load: Load
    mains_hz: float = 60.0
    vrms: float = 120.0
    nominal_vrms: float = 120.0
    current_zero_counts: float = 492.0
    counts_per_amp: float = 15.5
    voltage_zero_counts: float = 515.0
    voltage_amplitude_counts: float = 340.0
    sample_interval_ms: float = 1.3
    first_gap_extra: float = 0.15
    """Sample 0 is early: the gap to sample 1 is ``1 + first_gap_extra`` intervals."""
    noise_counts: float = 0.7
    rssi_dbm: int = -60
    frame_period_s: float = MEAN_FRAME_PERIOD_S

    def __post_init__(self) -> None:
        checks = (
            (
                0 <= self.address <= 0xFFFD,
                "address must be 0..0xFFFD (0xFFFE/F are reserved)",
            ),
            (self.mains_hz in (50.0, 60.0), "mains_hz must be 50 or 60"),
            (20.0 <= self.vrms <= 480.0, "vrms must be 20..480"),
            (20.0 <= self.nominal_vrms <= 480.0, "nominal_vrms must be 20..480"),
            (
                0.2 <= self.sample_interval_ms <= 5.0,
                "sample_interval_ms must be 0.2..5",
            ),
            (0.0 <= self.first_gap_extra < 1.0, "first_gap_extra must be 0..1"),
            (self.noise_counts >= 0.0, "noise_counts must be >= 0"),
            (-100 <= self.rssi_dbm <= 0, "rssi_dbm must be -100..0"),
            (0.5 <= self.frame_period_s <= 60.0, "frame_period_s must be 0.5..60"),
            (self.counts_per_amp > 0, "counts_per_amp must be > 0"),
        )
        for ok, what in checks:
            if not ok:
                raise ConfigError(f"meter {self.address}: {what}")

    @property
    def counts_per_volt(self) -> float:
        """Voltage-channel gain in ADC counts per volt."""
        return self.voltage_amplitude_counts / (self.nominal_vrms * SQRT2)

    def sample_offsets_s(self) -> tuple[float, ...]:
        """Time of each sample relative to sample 0, in seconds."""
        dt = self.sample_interval_ms / 1000.0
        first = (1.0 + self.first_gap_extra) * dt
        return (0.0, *(first + k * dt for k in range(SAMPLES_PER_FRAME - 1)))

    def voltage_volts(self, t_s: float) -> float:
        """The continuous mains voltage at ``t_s``."""
        return SQRT2 * self.vrms * math.sin(TAU * ((t_s * self.mains_hz) % 1.0))

    def current_amps(self, t_s: float) -> float:
        """The continuous load current at ``t_s``."""
        load = active_load(self.load, t_s)
        return load.shape(self.vrms)((t_s * self.mains_hz) % 1.0)

    def true_watts(self, t_s: float) -> float:
        """True real power at ``t_s``."""
        return active_load(self.load, t_s).watts

    def true_irms(self, t_s: float) -> float:
        """True RMS current at ``t_s``."""
        return active_load(self.load, t_s).irms(self.vrms)

    def true_energy_wh(self, t0_s: float, t1_s: float) -> float:
        """Exact energy drawn between two simulated times, in Wh."""
        return load_energy_ws(self.load, t0_s, t1_s) / 3600.0

    def calibration_values(self) -> dict[str, float | int]:
        """This unit's true calibration, keyed like the ``sensors`` config entries."""
        return {
            "address": self.address,
            "current_zero": self.current_zero_counts,
            "counts_per_amp": self.counts_per_amp,
            "counts_per_volt": self.counts_per_volt,
            "voltage_zero": self.voltage_zero_counts,
            "nominal_vrms": self.nominal_vrms,
            "mains_hz": int(self.mains_hz),
        }

    @classmethod
    def with_quirks(
        cls,
        address: int,
        load: Load,
        *,
        seed: int | str = 0,
        mains_hz: float = 60.0,
        nominal_vrms: float = 120.0,
        vrms: float | None = None,
        rssi_dbm: int | None = None,
    ) -> MeterModel:
        """A meter whose per-unit quirks are drawn (deterministically) from the seed.

        Ranges follow the public captures: current zero 470-507 counts, voltage
        amplitude 260-390 counts, voltage offset 505-525, interval 1.2-1.4 ms.
        """
        rng = random.Random(f"wattd-sim-unit:{seed}:{address}")
        return cls(
            address=address,
            load=load,
            mains_hz=mains_hz,
            vrms=vrms if vrms is not None else nominal_vrms * rng.uniform(0.98, 1.02),
            nominal_vrms=nominal_vrms,
            current_zero_counts=rng.uniform(470.0, 507.0),
            counts_per_amp=15.5,
            voltage_zero_counts=rng.uniform(505.0, 525.0),
            voltage_amplitude_counts=rng.uniform(260.0, 390.0),
            sample_interval_ms=rng.uniform(1.2, 1.4),
            first_gap_extra=rng.uniform(0.12, 0.18),
            noise_counts=rng.uniform(0.5, 1.0),
            rssi_dbm=rssi_dbm if rssi_dbm is not None else rng.randint(-82, -40),
            frame_period_s=rng.uniform(2.05, 2.09),
        )


def varied_meters(
    count: int,
    *,
    seed: int | str = 0,
    first_address: int = 1,
    mains_hz: float = 60.0,
    nominal_vrms: float = 120.0,
) -> list[MeterModel]:
    """``count`` meters with a realistic mix of loads, all different."""
    rng = random.Random(f"wattd-sim-fleet:{seed}")
    meters = []
    for k in range(count):
        roll = rng.random()
        load: Load
        if roll < 0.3:
            load = ResistiveLoad(watts=round(rng.uniform(25.0, 1500.0)))
        elif roll < 0.5:
            load = InductiveLoad(
                watts=round(rng.uniform(60.0, 600.0)),
                power_factor=round(rng.uniform(0.55, 0.9), 2),
            )
        elif roll < 0.75:
            load = SmpsLoad(watts=round(rng.uniform(10.0, 250.0)))
        elif roll < 0.85:
            load = IDLE
        else:
            on_s = round(rng.uniform(120.0, 900.0))
            off_s = round(rng.uniform(300.0, 1800.0))
            motor = InductiveLoad(
                watts=round(rng.uniform(90.0, 180.0)),
                power_factor=round(rng.uniform(0.7, 0.85), 2),
            )
            load = StepsLoad(steps=((0.0, IDLE), (off_s, motor)), period_s=off_s + on_s)
        meters.append(
            MeterModel.with_quirks(
                first_address + k,
                load,
                seed=seed,
                mains_hz=mains_hz,
                nominal_vrms=nominal_vrms,
            )
        )
    return meters


# -- compact meter specs (CLI) --------------------------------------------------

METER_SPEC_HELP: Final = """\
meter SPEC syntax: ADDR:LOAD[:KEY=VALUE...]
  ADDR   radio address (MY), decimal or 0x-hex, 0..0xFFFD
  LOAD   idle                   nothing plugged in
         resistive:W            heater/lamp drawing W watts
         inductive:W:PF         motor drawing W watts, current lagging (PF 0.05..1)
         smps:W                 switch-mode supply: current pulses at the peaks
         steps:STEP[,STEP...]   a schedule; STEP is LOAD@SECONDS, where LOAD is
                                a number (resistive watts) or idle, inductive/W/PF,
                                smps/W; the meter is idle before the first step
  KEY    hz=50|60 (mains), vrms=V (supply), nominal=V (voltage scaling of the
         unit), rssi=-DBM, period=S (steps: repeat the schedule every S s)
examples: 1:resistive:100  2:inductive:300:0.7  3:smps:150  4:idle
          5:steps:60@0,120@30  6:steps:idle@0,inductive/150/0.8@600:period=1500
          7:resistive:1000:hz=50:vrms=230:nominal=230"""

_NUMBER: Final = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MeterSpec:
    """A parsed meter spec: address, load and optional supply settings."""

    address: int
    load: Load
    mains_hz: float | None = None
    vrms: float | None = None
    nominal_vrms: float | None = None
    rssi_dbm: int | None = None

    def build(
        self,
        *,
        seed: int | str = 0,
        mains_hz: float = 60.0,
        nominal_vrms: float = 120.0,
    ) -> MeterModel:
        """The meter, with quirks from ``seed`` and unset settings from the defaults."""
        nominal = self.nominal_vrms or nominal_vrms
        return MeterModel.with_quirks(
            self.address,
            self.load,
            seed=seed,
            mains_hz=self.mains_hz or mains_hz,
            nominal_vrms=nominal,
            vrms=self.vrms,
            rssi_dbm=self.rssi_dbm,
        )


def parse_meter_spec(text: str) -> MeterSpec:
    """Parse ``ADDR:LOAD[:KEY=VALUE...]`` (see :data:`METER_SPEC_HELP`).

    Raises:
        ConfigError: naming the spec and what is wrong with it.
    """
    try:
        return _parse_spec(text.strip())
    except ConfigError as exc:
        raise ConfigError(exc.message, key=f"meter spec {text!r}") from None


def _parse_spec(text: str) -> MeterSpec:
    fields = text.split(":")
    if len(fields) < 2 or not fields[1]:
        msg = "expected ADDR:LOAD, e.g. 1:resistive:100"
        raise ConfigError(msg)
    address = _parse_address(fields[0])
    positional = [f for f in fields[1:] if "=" not in f]
    options = [f for f in fields[1:] if "=" in f]
    if fields[1 : len(positional) + 1] != positional:
        msg = "KEY=VALUE options must come after the load"
        raise ConfigError(msg)
    opts: dict[str, str] = {}
    for item in options:
        key, _, value = item.partition("=")
        if key in opts:
            raise ConfigError(f"option {key!r} given twice")
        opts[key] = value
    known = {"hz", "vrms", "nominal", "rssi", "period"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(known)}")
    period = _number(opts["period"], "period") if "period" in opts else None
    load = _parse_load(positional, period)
    hz = _number(opts["hz"], "hz") if "hz" in opts else None
    if hz is not None and hz not in (50.0, 60.0):
        raise ConfigError(f"hz must be 50 or 60, got {opts['hz']}")
    rssi = None
    if "rssi" in opts:
        rssi = int(_number(opts["rssi"], "rssi"))
        rssi = -abs(rssi)
    return MeterSpec(
        address=address,
        load=load,
        mains_hz=hz,
        vrms=_number(opts["vrms"], "vrms") if "vrms" in opts else None,
        nominal_vrms=_number(opts["nominal"], "nominal") if "nominal" in opts else None,
        rssi_dbm=rssi,
    )


def _parse_address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ConfigError(
            f"address {text!r} is not a number (decimal or 0x-hex)"
        ) from None
    if not 0 <= value <= 0xFFFD:
        raise ConfigError(f"address {value} is outside 0..0xFFFD")
    return value


def _number(text: str, what: str) -> float:
    if not _NUMBER.match(text):
        raise ConfigError(f"{what} {text!r} is not a number")
    return float(text)


def _parse_load(fields: list[str], period_s: float | None) -> Load:
    kind, args = fields[0], fields[1:]
    if kind == "steps":
        if len(args) != 1:
            raise ConfigError("steps takes one comma-separated list: steps:60@0,120@30")
        steps = tuple(_parse_step(item) for item in args[0].split(","))
        return StepsLoad(steps=steps, period_s=period_s)
    if period_s is not None:
        raise ConfigError("period= only applies to a steps load")
    return _steady(kind, args)


def _parse_step(item: str) -> tuple[float, SteadyLoad]:
    load_text, at, start = item.partition("@")
    if not at:
        raise ConfigError(f"step {item!r} needs LOAD@SECONDS, e.g. 120@30")
    parts = load_text.split("/")
    if len(parts) == 1 and _NUMBER.match(parts[0]):
        parts = ["resistive", parts[0]]
    return _number(start, "step start"), _steady(parts[0], parts[1:])


def _steady(kind: str, args: list[str]) -> SteadyLoad:
    arity = {"idle": 0, "resistive": 1, "inductive": 2, "smps": 1}
    if kind not in arity:
        raise ConfigError(
            f"unknown load {kind!r}; use idle, resistive, inductive, smps, steps"
        )
    if len(args) != arity[kind]:
        raise ConfigError(f"{kind} takes {arity[kind]} value(s), got {len(args)}")
    nums = [_number(a, f"{kind} value") for a in args]
    if kind == "idle":
        return IDLE
    if kind == "resistive":
        return ResistiveLoad(watts=nums[0])
    if kind == "inductive":
        return InductiveLoad(watts=nums[0], power_factor=nums[1])
    return SmpsLoad(watts=nums[0])


# -- the simulator ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LineNoise:
    """Serial-line trouble, each as a probability per frame.

    ``garbage_rate``: random bytes (1-24) arrive before the frame.
    ``flip_rate``: one bit of the frame is flipped on the wire.
    """

    garbage_rate: float = 0.0
    flip_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("garbage_rate", "flip_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability 0..1")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SimFrame:
    """One transmission of one meter, with the truth at that moment.

    ``data`` is exactly what reaches the serial port (garbage, then the frame,
    possibly with a flipped bit); it is empty when the frame was dropped.
    ``frame`` is the clean frame the radio meant to send.
    """

    time_s: float
    """Simulated arrival time of the frame's last byte."""
    address: int
    seq: int
    data: bytes
    frame: bytes
    garbage: int
    corrupted: bool
    dropped: bool
    rssi_dbm: int
    voltage_counts: tuple[int, ...]
    current_counts: tuple[int, ...]
    sample_times_s: tuple[float, ...]
    true_watts: float
    true_vrms: float
    true_irms: float


class _MeterRun:
    """Mutable per-meter state inside a simulator."""

    __slots__ = ("model", "next_s", "offsets", "rng", "seq", "shapes")

    def __init__(self, model: MeterModel, seed: int | str) -> None:
        self.model = model
        self.rng = random.Random(f"wattd-sim-meter:{seed}:{model.address}")
        self.offsets = model.sample_offsets_s()
        self.seq = 0
        # Radios power up at random moments, so meters are never in lockstep.
        self.next_s = self.rng.uniform(0.05, model.frame_period_s)
        self.shapes: dict[SteadyLoad, CurrentShape] = {}


class Simulator:
    """Many meters sharing one receiver; frames come out in time order.

    Args:
        meters: the meters (addresses must be unique).
        seed: makes everything reproducible.
        api_mode: 1 (unescaped) or 2 (escaped) framing on the wire.
        noise: a :class:`LineNoise`, or one rate used for both garbage and flips.
        drop_rate: probability that a frame never arrives.
    """

    def __init__(
        self,
        meters: Iterable[MeterModel],
        *,
        seed: int | str = 0,
        api_mode: ApiMode | int = ApiMode.UNESCAPED,
        noise: LineNoise | float = 0.0,
        drop_rate: float = 0.0,
    ) -> None:
        self.api_mode = ApiMode(api_mode)
        self.noise = (
            noise
            if isinstance(noise, LineNoise)
            else LineNoise(garbage_rate=noise, flip_rate=noise)
        )
        if not 0.0 <= drop_rate <= 1.0:
            raise ConfigError(
                f"drop rate must be a probability 0..1, got {drop_rate:g}"
            )
        self.drop_rate = drop_rate
        self.seed = seed
        self._runs: dict[int, _MeterRun] = {}
        for model in meters:
            if model.address in self._runs:
                raise ConfigError(f"two meters share address {model.address}")
            self._runs[model.address] = _MeterRun(model, seed)
        self._heap = [(run.next_s, addr) for addr, run in self._runs.items()]
        heapq.heapify(self._heap)
        self._drop_rng = random.Random(f"wattd-sim-drop:{seed}")
        self._garbage_rng = random.Random(f"wattd-sim-garbage:{seed}")
        self._flip_rng = random.Random(f"wattd-sim-flip:{seed}")
        self.now_s = 0.0

    @property
    def meters(self) -> Mapping[int, MeterModel]:
        """The meters by address."""
        return {addr: run.model for addr, run in self._runs.items()}

    def meter(self, address: int) -> MeterModel:
        """One meter by address.

        Raises:
            ConfigError: if no meter has that address.
        """
        run = self._runs.get(address)
        if run is None:
            raise ConfigError(f"no simulated meter has address {address}")
        return run.model

    def next_time_s(self) -> float | None:
        """When the next frame arrives, or None without meters."""
        return self._heap[0][0] if self._heap else None

    def next_frame(self) -> SimFrame:
        """Produce the next frame in time order.

        Raises:
            ConfigError: if the simulator has no meters.
        """
        if not self._heap:
            raise ConfigError("the simulator has no meters")
        t_s, address = heapq.heappop(self._heap)
        run = self._runs[address]
        frame = self._make_frame(run, t_s)
        model = run.model
        run.next_s = t_s + model.frame_period_s + run.rng.uniform(-0.012, 0.012)
        heapq.heappush(self._heap, (run.next_s, address))
        self.now_s = max(self.now_s, t_s)
        return frame

    def advance(self, until_s: float) -> list[SimFrame]:
        """All frames arriving up to ``until_s`` (inclusive), in time order."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= until_s:
            out.append(self.next_frame())
        self.now_s = max(self.now_s, until_s)
        return out

    def frames(self) -> Iterator[SimFrame]:
        """Endless frames in time order."""
        while True:
            yield self.next_frame()

    def true_watts(self, address: int, t_s: float) -> float:
        """True real power of one meter at ``t_s``."""
        return self.meter(address).true_watts(t_s)

    def true_energy_wh(self, address: int, t0_s: float, t1_s: float) -> float:
        """Exact energy one meter drew between two simulated times, in Wh."""
        return self.meter(address).true_energy_wh(t0_s, t1_s)

    def _make_frame(self, run: _MeterRun, t_s: float) -> SimFrame:
        model = run.model
        rng = run.rng
        gauss = rng.gauss
        offsets = run.offsets
        # The radio's sample clock wanders a little from frame to frame.
        scale = 1.0 + gauss(0.0, 0.002)
        t0 = t_s - TX_DELAY_S - offsets[-1] * scale
        load = active_load(model.load, t0)
        shape = run.shapes.get(load)
        if shape is None:
            shape = run.shapes[load] = load.shape(model.vrms)
        hz = model.mains_hz
        vpk = SQRT2 * model.vrms
        cpv = model.counts_per_volt
        cpa = model.counts_per_amp
        vz = model.voltage_zero_counts
        iz = model.current_zero_counts
        sigma = model.noise_counts
        sin = math.sin
        times = []
        volts = []
        amps = []
        for off in offsets:
            t = t0 + off * scale
            ph = (t * hz) % 1.0
            v = round(vz + cpv * vpk * sin(TAU * ph) + gauss(0.0, sigma))
            i = round(iz + cpa * shape(ph) + gauss(0.0, sigma))
            times.append(t)
            volts.append(0 if v < 0 else ADC_MAX if v > ADC_MAX else v)
            amps.append(0 if i < 0 else ADC_MAX if i > ADC_MAX else i)
        rssi = max(-100, min(-23, model.rssi_dbm + rng.randint(-2, 2)))
        vt = tuple(volts)
        it = tuple(amps)
        payload = encode_rx16_io(
            address=model.address,
            rssi_dbm=rssi,
            analog={VOLTAGE_CHANNEL: vt, CURRENT_CHANNEL: it},
        )
        frame = encode_frame(payload, self.api_mode)
        data, garbage, corrupted, dropped = self._line(frame)
        seq = run.seq
        run.seq += 1
        return SimFrame(
            time_s=t_s,
            address=model.address,
            seq=seq,
            data=data,
            frame=frame,
            garbage=garbage,
            corrupted=corrupted,
            dropped=dropped,
            rssi_dbm=rssi,
            voltage_counts=vt,
            current_counts=it,
            sample_times_s=tuple(times),
            true_watts=load.watts,
            true_vrms=model.vrms,
            true_irms=load.irms(model.vrms),
        )

    def _line(self, frame: bytes) -> tuple[bytes, int, bool, bool]:
        """Apply drops, garbage and bit flips; every stream draws on every frame."""
        dropped = self._drop_rng.random() < self.drop_rate
        g_roll = self._garbage_rng.random()
        g_bytes = self._garbage_rng.randbytes(self._garbage_rng.randint(1, 24))
        f_roll = self._flip_rng.random()
        f_pos = self._flip_rng.randrange(len(frame))
        f_bit = self._flip_rng.randrange(8)
        if dropped:
            return b"", 0, False, True
        garbage = g_bytes if g_roll < self.noise.garbage_rate else b""
        corrupted = f_roll < self.noise.flip_rate
        if corrupted:
            buf = bytearray(frame)
            buf[f_pos] ^= 1 << f_bit
            frame = bytes(buf)
        return garbage + frame, len(garbage), corrupted, False


# -- pacing frames onto a port ---------------------------------------------------


@dataclasses.dataclass(slots=True)
class SimRunStats:
    """What a paced run produced."""

    frames: int = 0
    dropped: int = 0
    corrupted: int = 0
    bytes_written: int = 0
    overrun_bytes: int = 0
    """Bytes discarded because nobody read the port (real-time runs only)."""
    sim_time_s: float = 0.0

    def add(self, frame: SimFrame) -> None:
        """Count one frame."""
        self.frames += 1
        self.dropped += frame.dropped
        self.corrupted += frame.corrupted
        self.bytes_written += len(frame.data)
        self.sim_time_s = frame.time_s


Sleep = Callable[[float], Awaitable[None]]


async def pace_frames(
    sim: Simulator,
    emit: Callable[[SimFrame], Awaitable[None]],
    *,
    speed: float = 1.0,
    until_s: float | None = None,
    max_frames: int | None = None,
    stop_event: asyncio.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep | None = None,
) -> SimRunStats:
    """Hand frames to ``emit`` at their simulated times, scaled by ``speed``.

    ``speed`` 1 is real time, N is N times faster, 0 is as fast as ``emit``
    goes. Stops at ``until_s`` of simulated time (waiting it out when paced),
    after ``max_frames`` frames (dropped ones count), or when ``stop_event`` is
    set. ``clock`` and ``sleep`` can be replaced to test pacing without waiting.
    """
    if speed < 0:
        raise ConfigError(f"speed must be >= 0, got {speed:g}")
    stats = SimRunStats()
    start_real = clock()
    start_sim = sim.now_s

    async def pause(delay: float) -> None:
        if sleep is not None:
            await sleep(delay)
        elif stop_event is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop_event.wait()

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    while not stopped():
        if max_frames is not None and stats.frames >= max_frames:
            break
        t_next = sim.next_time_s()
        if t_next is None or (until_s is not None and t_next > until_s):
            if until_s is not None and speed > 0:
                delay = start_real + (until_s - start_sim) / speed - clock()
                if delay > 0:
                    await pause(delay)
            break
        if speed > 0:
            delay = start_real + (t_next - start_sim) / speed - clock()
            if delay > 0:
                await pause(delay)
                continue  # re-check the stop event and the clock
        elif stats.frames % 32 == 0:
            await asyncio.sleep(0)  # let the reader run when going flat out
        frame = sim.next_frame()
        await emit(frame)
        stats.add(frame)
    return stats


class _FdWriter:
    """Non-blocking writes to a pty master, with a policy for a full buffer."""

    def __init__(
        self,
        fd: int,
        *,
        wait_forever: bool,
        stall_limit_s: float,
        stop_event: asyncio.Event | None,
        slave_fd: int | None,
    ) -> None:
        self.fd = fd
        self.wait_forever = wait_forever
        self.stall_limit_s = stall_limit_s
        self.stop_event = stop_event
        self.slave_fd = slave_fd
        self.overrun_bytes = 0

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        stalled_at: float | None = None
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise SourceError(
                    f"writing to the pty failed: {exc}", source="simulator"
                ) from exc
            view = view[n:]
            if not view:
                return
            if self.stop_event is not None and self.stop_event.is_set():
                self.overrun_bytes += len(view)
                return
            now = time.monotonic()
            stalled_at = stalled_at if stalled_at is not None else now
            if not self.wait_forever and now - stalled_at > self.stall_limit_s:
                # Nobody reads the port: drop what does not fit, as a UART with
                # no host would, and discard the stale backlog so that a reader
                # who attaches later gets current data.
                self.overrun_bytes += len(view)
                if self.slave_fd is not None:
                    with contextlib.suppress(OSError):
                        termios.tcflush(self.slave_fd, termios.TCIFLUSH)
                return
            await _wait_writable(self.fd, 0.05)


async def _wait_writable(fd: int, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await asyncio.wait([ready], timeout=timeout_s)
    finally:
        loop.remove_writer(fd)


async def run_on_pty(
    sim: Simulator,
    master_fd: int,
    *,
    speed: float = 1.0,
    until_s: float | None = None,
    max_frames: int | None = None,
    stop_event: asyncio.Event | None = None,
    slave_fd: int | None = None,
    on_frame: Callable[[SimFrame], None] | None = None,
    stall_limit_s: float = 0.25,
) -> SimRunStats:
    """Write the simulator's frames to a pty master until a limit or the stop event.

    At ``speed`` 0 a full pty buffer makes the writer wait for the reader. When
    paced (speed > 0) it waits at most ``stall_limit_s`` and then discards,
    so real time is kept with or without a reader; given ``slave_fd`` it also
    flushes the unread backlog. ``on_frame`` sees every frame after writing.
    """
    writer = _FdWriter(
        master_fd,
        wait_forever=speed == 0,
        stall_limit_s=stall_limit_s,
        stop_event=stop_event,
        slave_fd=slave_fd,
    )

    async def emit(frame: SimFrame) -> None:
        if frame.data:
            await writer.write(frame.data)
        if on_frame is not None:
            on_frame(frame)

    was_blocking = os.get_blocking(master_fd)
    os.set_blocking(master_fd, False)
    try:
        stats = await pace_frames(
            sim,
            emit,
            speed=speed,
            until_s=until_s,
            max_frames=max_frames,
            stop_event=stop_event,
        )
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(master_fd, was_blocking)
    stats.overrun_bytes = writer.overrun_bytes
    stats.bytes_written -= writer.overrun_bytes
    return stats


__all__ = [
    "IDLE",
    "METER_SPEC_HELP",
    "IdleLoad",
    "InductiveLoad",
    "LineNoise",
    "Load",
    "MeterModel",
    "MeterSpec",
    "ResistiveLoad",
    "SimFrame",
    "SimRunStats",
    "Simulator",
    "SmpsLoad",
    "SteadyLoad",
    "StepsLoad",
    "active_load",
    "load_energy_ws",
    "pace_frames",
    "parse_meter_spec",
    "run_on_pty",
    "varied_meters",
]
