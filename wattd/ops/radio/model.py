"""What wattd knows about an XBee's settings, and how a change is planned and applied.

The AT parameters wattd shows or sets (:data:`SETTINGS`), the receiver's and a
meter's Tweet-a-Watt profiles, and the plan that compares a radio with a
profile. Changes are queued, written to non-volatile memory (WR) and then
applied (AC), in that order: applying first would put a meter radio (SM=4) to
sleep before it could save anything. Nothing is written when no value changes.

Nothing here opens a port: a :class:`Radio` is handed in
(:mod:`wattd.ops.radio.device` opens one).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Final

from wattd.errors import RadioError
from wattd.support.closing import Closeable

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "CHANNELS",
    "DEFAULT_CHANNEL",
    "DEFAULT_PAN_ID",
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
    "plan",
    "read_settings",
    "receiver_settings",
]

# Digi's factory defaults, which the Adafruit kit instructions leave in place on
# the meters; the 2009 X-CTU profile used PAN ID 0x3137 instead.
DEFAULT_CHANNEL: Final = 0x0C
DEFAULT_PAN_ID: Final = 0x3332
# 802.15.4 channels 11-26; XBee-PRO S1 modules only have 0x0C-0x17.
CHANNELS: Final = range(0x0B, 0x1A + 1)
_BAUD_CODES: Final = {0: 1200, 1: 2400, 2: 4800, 3: 9600, 4: 19200, 5: 38400, 6: 57600}
_SLEEP_MODES: Final = {
    0: "no sleep",
    1: "pin hibernate",
    2: "pin doze",
    4: "cyclic sleep",
    5: "cyclic sleep, pin wake",
}
_PIN_MODES: Final = {
    0: "disabled",
    1: "special",
    2: "ADC",
    3: "digital in",
    4: "low",
    5: "high",
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One AT parameter wattd shows or sets."""

    command: str
    label: str
    explain: Callable[[int], str] | None = None
    """Turns a value into words, e.g. SP=C8 into "2.00 s"."""

    def describe(self, value: int) -> str:
        """The value in words, or an empty string."""
        return self.explain(value) if self.explain is not None else ""


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(command="VR", label="firmware version"),
    Setting(command="HV", label="hardware version"),
    Setting(command="SH", label="serial number high"),
    Setting(command="SL", label="serial number low"),
    Setting(command="CH", label="channel", explain=lambda v: f"channel {v}"),
    Setting(command="ID", label="PAN ID"),
    Setting(command="MY", label="16-bit address", explain=lambda v: f"sensor {v}"),
    Setting(command="DH", label="destination high"),
    Setting(command="DL", label="destination low"),
    Setting(command="CE", label="coordinator", explain=lambda v: ("no", "yes")[v & 1]),
    Setting(
        command="AP",
        label="API mode",
        explain=lambda v: {0: "transparent", 1: "API", 2: "API, escaped"}.get(v, "?"),
    ),
    Setting(
        command="BD",
        label="serial speed",
        explain=lambda v: f"{_BAUD_CODES[v]} baud" if v in _BAUD_CODES else f"{v} baud",
    ),
    Setting(
        command="SM", label="sleep mode", explain=lambda v: _SLEEP_MODES.get(v, "?")
    ),
    Setting(command="ST", label="time before sleep", explain=lambda v: f"{v} ms"),
    Setting(command="SP", label="sleep period", explain=lambda v: f"{v / 100:.2f} s"),
    Setting(
        command="D0", label="AD0/DIO0 pin", explain=lambda v: _PIN_MODES.get(v, "?")
    ),
    Setting(
        command="D4", label="AD4/DIO4 pin", explain=lambda v: _PIN_MODES.get(v, "?")
    ),
    Setting(command="IT", label="samples per frame", explain=str),
    Setting(command="IR", label="sample rate", explain=lambda v: f"{v} ms"),
    Setting(
        command="IU",
        label="IO frames to serial",
        explain=lambda v: ("no", "yes")[v & 1],
    ),
    Setting(command="EE", label="encryption", explain=lambda v: ("off", "on")[v & 1]),
    Setting(command="PL", label="power level", explain=str),
)
_BY_COMMAND: Final = {s.command: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RadioInfo:
    """What the radio said about itself when it was opened."""

    port: str
    baud: int
    firmware: int
    hardware: int
    protocol: str
    link: str
    """How wattd talks to it: "API mode 1", "API mode 2" or "AT command mode"."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Value:
    """A setting as read from the radio; ``value`` is None if it does not know it."""

    setting: Setting
    value: int | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One setting of a plan: what the radio has and what it should have."""

    setting: Setting
    old: int | None
    new: int

    @property
    def changed(self) -> bool:
        """True if writing is needed.

        A setting the firmware does not have (EE without encryption support)
        counts as off, so a target of 0 needs no write.
        """
        if self.old is None:
            return self.new != 0
        return self.old != self.new


# -- plans ---------------------------------------------------------------------


def receiver_settings(
    *, channel: int = DEFAULT_CHANNEL, pan_id: int = DEFAULT_PAN_ID, api_mode: int = 1
) -> dict[str, int]:
    """The USB receiver: same channel and PAN as the meters, address 0, awake.

    IU=1 sends the meters' IO samples out of the serial port as API frames; the
    receiver's own sampling and pins are turned off so it reports only meters.
    """
    _check_network(channel, pan_id)
    if api_mode not in (1, 2):
        raise RadioError(f"API mode must be 1 or 2, not {api_mode}")
    return {
        "CH": channel,
        "ID": pan_id,
        "MY": 0,
        "SM": 0,
        "AP": api_mode,
        "IU": 1,
        "D0": 0,
        "D4": 0,
        "IT": 1,
        "IR": 0,
    }


def meter_settings(
    *, address: int, channel: int = DEFAULT_CHANNEL, pan_id: int = DEFAULT_PAN_ID
) -> dict[str, int]:
    """A Tweet-a-Watt transmitter inside a Kill-A-Watt.

    MY is the sensor number; frames go to the receiver (DH/DL 0); it wakes every
    2 s (SM=4, SP=C8) for 3 ms, takes 19 samples (IT=13) of AD0 (voltage) and AD4
    (current) at the fastest rate (IR=1) and sends them unencrypted (EE=0).
    """
    _check_network(channel, pan_id)
    if not 1 <= address <= 0xFFFD:
        raise RadioError(
            f"meter address {address} is out of range: use 1..65533 (0 is the"
            " receiver, 0xFFFE and 0xFFFF switch 16-bit addressing off)"
        )
    return {
        "CH": channel,
        "ID": pan_id,
        "MY": address,
        "DH": 0,
        "DL": 0,
        "SM": 4,
        "ST": 3,
        "SP": 0xC8,
        "D0": 2,
        "D4": 2,
        "IT": 0x13,
        "IR": 1,
        "EE": 0,
    }


def _check_network(channel: int, pan_id: int) -> None:
    if channel not in CHANNELS:
        raise RadioError(
            f"channel 0x{channel:X} does not exist on 802.15.4: use 0x0B..0x1A"
            " (XBee-PRO S1: 0x0C..0x17), the same on the receiver and every meter"
        )
    if not 0 <= pan_id <= 0xFFFF:
        raise RadioError(f"PAN ID 0x{pan_id:X} is out of range: use 0..0xFFFF")


# -- the radio, as the jobs below see it ----------------------------------------


class Radio(Closeable):
    """An open connection to a local XBee; use as a context manager."""

    info: RadioInfo

    @abc.abstractmethod
    def read(self, command: str) -> int | None:
        """Read a setting; None if the firmware does not know it."""

    @abc.abstractmethod
    def queue(self, command: str, value: int) -> None:
        """Set a value without applying it yet."""

    @abc.abstractmethod
    def write_and_apply(self) -> None:
        """Save queued values to non-volatile memory (WR), then apply them (AC)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the port (and leave command mode)."""


# -- the three jobs ---------------------------------------------------------------


def read_settings(radio: Radio) -> list[Value]:
    """Every setting of :data:`SETTINGS`, as the radio reports it."""
    return [Value(setting=s, value=radio.read(s.command)) for s in SETTINGS]


def plan(radio: Radio, target: Mapping[str, int]) -> list[Change]:
    """Compare the radio with ``target``, setting by setting."""
    return [
        Change(setting=_setting(command), old=radio.read(command), new=new)
        for command, new in target.items()
    ]


def apply(radio: Radio, changes: list[Change]) -> int:
    """Queue every changed value, then save and apply; returns how many changed."""
    todo = [c for c in changes if c.changed]
    missing = [c.setting.command for c in todo if c.old is None]
    if missing:
        # Checked before anything is queued, so a refused plan leaves no trace.
        raise RadioError(
            f"{radio.info.port}: this firmware has no {', '.join(missing)}; the radio"
            " cannot be set up as a Tweet-a-Watt part (is it an 802.15.4 radio?)"
        )
    for change in todo:
        radio.queue(change.setting.command, change.new)
    if todo:
        radio.write_and_apply()
    return len(todo)


def _setting(command: str) -> Setting:
    return _BY_COMMAND.get(command) or Setting(command=command, label=command)


# -- text -----------------------------------------------------------------------


def describe_radio(info: RadioInfo) -> str:
    """One line saying which radio this is."""
    return (
        f"XBee on {info.port} at {info.baud} baud: firmware {info.firmware:X},"
        f" hardware {info.hardware:X} ({info.protocol}), talking in {info.link}"
    )


def format_values(values: list[Value]) -> list[str]:
    """Aligned lines ``CH  channel  0C  channel 12``."""
    lines = []
    for v in values:
        if v.value is None:
            shown, words = "n/a", "not supported by this firmware"
        else:
            shown, words = f"{v.value:X}", v.setting.describe(v.value)
        lines.append(
            f"  {v.setting.command}  {v.setting.label:<20} {shown:>8}  {words}".rstrip()
        )
    return lines


def format_changes(changes: list[Change]) -> list[str]:
    """Aligned lines ``ID  PAN ID  3332 -> 3137`` with unchanged ones marked."""
    lines = []
    for c in changes:
        old = "n/a" if c.old is None else f"{c.old:X}"
        mark = "  (unchanged)" if not c.changed else ""
        words = c.setting.describe(c.new)
        words = f"  {words}" if words else ""
        lines.append(
            f"  {c.setting.command}  {c.setting.label:<20} {old:>8} -> {c.new:<8X}"
            f"{mark}{words}".rstrip()
        )
    return lines
