"""Read and write the settings of a local XBee: the Tweet-a-Watt receiver or a meter.

- :mod:`~wattd.ops.radio.model`: the settings wattd knows, the receiver and
  meter profiles, and how a plan of changes is made, applied and printed
- :mod:`~wattd.ops.radio.device`: opening the radio on a serial port, in API
  mode through digi-xbee or in AT command mode
"""

from __future__ import annotations

from wattd.ops.radio.device import (
    DEFAULT_BAUD,
    DEFAULT_TIMEOUT_S,
    GUARD_TIME_S,
    open_radio,
    serial_candidates,
)
from wattd.ops.radio.model import (
    CHANNELS,
    DEFAULT_CHANNEL,
    DEFAULT_PAN_ID,
    SETTINGS,
    Change,
    Radio,
    RadioInfo,
    Setting,
    Value,
    apply,
    describe_radio,
    format_changes,
    format_values,
    meter_settings,
    plan,
    read_settings,
    receiver_settings,
)

__all__ = [
    "CHANNELS",
    "DEFAULT_BAUD",
    "DEFAULT_CHANNEL",
    "DEFAULT_PAN_ID",
    "DEFAULT_TIMEOUT_S",
    "GUARD_TIME_S",
    "SETTINGS",
    "Change",
    "Radio",
    "RadioInfo",
    "Setting",
    "Value",
    "apply",
    "describe_radio",
    "format_changes",
    "format_values",
    "meter_settings",
    "open_radio",
    "plan",
    "read_settings",
    "receiver_settings",
    "serial_candidates",
]
