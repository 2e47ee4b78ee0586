"""Simulated Tweet-a-Watt meters: known waveforms in, XBee wire bytes out.

- :mod:`~wattd.sources.simulate.loads`: what a load draws; its true power and energy
- :mod:`~wattd.sources.simulate.meters`: one Kill-A-Watt with its XBee and unit quirks
- :mod:`~wattd.sources.simulate.specs`: compact ``ADDR:LOAD`` meter specs for the CLI
- :mod:`~wattd.sources.simulate.simulator`: many meters, frames out in time order
- :mod:`~wattd.sources.simulate.pacing`: frames handed out at their simulated times
- :mod:`~wattd.sources.simulate.pty`: paced frames on a pseudo-terminal
"""

from __future__ import annotations

from wattd.sources.simulate.loads import (
    IDLE,
    IdleLoad,
    InductiveLoad,
    Load,
    ResistiveLoad,
    SmpsLoad,
    SteadyLoad,
    StepsLoad,
    active_load,
    load_energy_ws,
)
from wattd.sources.simulate.meters import SAMPLES_PER_FRAME, MeterModel, varied_meters
from wattd.sources.simulate.pacing import SimRunStats, pace_frames
from wattd.sources.simulate.pty import SimPty, open_pty, run_on_pty
from wattd.sources.simulate.simulator import LineNoise, SimFrame, Simulator
from wattd.sources.simulate.specs import METER_SPEC_HELP, MeterSpec, parse_meter_spec

__all__ = [
    "IDLE",
    "METER_SPEC_HELP",
    "SAMPLES_PER_FRAME",
    "IdleLoad",
    "InductiveLoad",
    "LineNoise",
    "Load",
    "MeterModel",
    "MeterSpec",
    "ResistiveLoad",
    "SimFrame",
    "SimPty",
    "SimRunStats",
    "Simulator",
    "SmpsLoad",
    "SteadyLoad",
    "StepsLoad",
    "active_load",
    "load_energy_ws",
    "open_pty",
    "pace_frames",
    "parse_meter_spec",
    "run_on_pty",
    "varied_meters",
]
