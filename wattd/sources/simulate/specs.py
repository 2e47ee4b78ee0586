"""Compact meter specs for the command line: ``ADDR:LOAD[:KEY=VALUE...]``."""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from wattd.errors import ConfigError
from wattd.sources.simulate.loads import (
    IDLE,
    InductiveLoad,
    Load,
    ResistiveLoad,
    SmpsLoad,
    SteadyLoad,
    StepsLoad,
)
from wattd.sources.simulate.meters import MeterModel

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
