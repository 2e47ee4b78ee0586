"""Read and write the settings of a local XBee: the Tweet-a-Watt receiver or a meter.

This replaces the X-CTU step of the original kit. A radio in API mode (AP=1 or 2)
is driven with digi-xbee. A radio in transparent mode (AP=0, the factory default
and the 2009 receiver profile) is found by digi-xbee's own probe, which cannot
talk to an 802.15.4 radio in that mode; wattd then uses the AT command mode
(``+++``, ``ATxx``) over plain pyserial instead.

Changes are queued, written to non-volatile memory (WR) and then applied (AC),
in that order: applying first would put a meter radio (SM=4) to sleep before it
could save anything. Nothing is written when no value changes.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import errno
import glob
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import serial
from digi.xbee.devices import XBeeDevice
from digi.xbee.exception import (
    ATCommandException,
    InvalidOperatingModeException,
    TimeoutException,
    XBeeException,
)
from digi.xbee.models.mode import OperatingMode
from digi.xbee.models.protocol import XBeeProtocol
from digi.xbee.models.status import ATCommandStatus

from wattd.errors import RadioError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

log = logging.getLogger(__name__)

DEFAULT_BAUD: Final = 9600
DEFAULT_TIMEOUT_S: Final = 2.0
# Digi's factory defaults, which the Adafruit kit instructions leave in place on
# the meters; the 2009 X-CTU profile used PAN ID 0x3137 instead.
DEFAULT_CHANNEL: Final = 0x0C
DEFAULT_PAN_ID: Final = 0x3332
# 802.15.4 channels 11-26; XBee-PRO S1 modules only have 0x0C-0x17.
CHANNELS: Final = range(0x0B, 0x1A + 1)
# The radio needs GT (1 s by default) of silence before "+++" and answers "OK"
# after another GT of silence.
GUARD_TIME_S: Final = 1.1
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


# -- talking to the radio -------------------------------------------------------


class Radio(abc.ABC):
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

    def __enter__(self) -> Radio:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ApiRadio(Radio):
    """A radio in API mode, through digi-xbee."""

    def __init__(self, device: Any, port: str, baud: int, timeout_s: float) -> None:
        self._device = device
        self._port = port
        self._timeout_s = timeout_s
        hardware = self.read("HV") or 0
        mode = device.operating_mode
        self.info = RadioInfo(
            port=port,
            baud=baud,
            firmware=int.from_bytes(device.get_firmware_version() or b"", "big"),
            hardware=hardware,
            protocol=_protocol_name(device.get_protocol()),
            link="API mode 2"
            if mode is OperatingMode.ESCAPED_API_MODE
            else "API mode 1",
        )

    def read(self, command: str) -> int | None:
        try:
            value = self._device.get_parameter(command, apply=False)
        except ATCommandException as exc:
            if exc.status is ATCommandStatus.INVALID_COMMAND:
                return None
            raise self._refused(command, None, exc) from exc
        except TimeoutException as exc:
            raise self._silent(f"reading {command}") from exc
        return int.from_bytes(value, "big")

    def queue(self, command: str, value: int) -> None:
        data = bytearray(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))
        try:
            self._device.set_parameter(command, data, apply=False)
        except ATCommandException as exc:
            raise self._refused(command, value, exc) from exc
        except TimeoutException as exc:
            raise self._silent(f"setting {command}") from exc

    def write_and_apply(self) -> None:
        for what, step in (
            ("WR", self._device.write_changes),
            ("AC", self._device.apply_changes),
        ):
            try:
                step()
            except ATCommandException as exc:
                raise self._refused(what, None, exc) from exc
            except TimeoutException as exc:
                raise self._silent(f"sending {what}") from exc

    def close(self) -> None:
        with contextlib.suppress(XBeeException, serial.SerialException, OSError):
            self._device.close()

    def _refused(
        self, command: str, value: int | None, exc: ATCommandException
    ) -> RadioError:
        status = exc.status.description if exc.status is not None else str(exc)
        return _refused_error(self._port, command, value, status)

    def _silent(self, doing: str) -> RadioError:
        return RadioError(
            f"{self._port}: the radio stopped answering while {doing}"
            f" (waited {self._timeout_s:g} s); check the adapter and run the command"
            " again"
        )


class _CommandModeRadio(Radio):
    """A radio in transparent mode (AP=0), through its AT command mode."""

    def __init__(
        self, port: str, baud: int, *, timeout_s: float, guard_time_s: float
    ) -> None:
        self._port = port
        self._timeout_s = timeout_s
        self._serial = _open_serial(port, baud)
        try:
            self._enter(guard_time_s)
            firmware = self._need("VR")
            hardware = self._need("HV")
        except BaseException:
            self.close()
            raise
        protocol = XBeeProtocol.determine_protocol(
            hardware >> 8, firmware.to_bytes(2, "big")
        )
        self.info = RadioInfo(
            port=port,
            baud=baud,
            firmware=firmware,
            hardware=hardware,
            protocol=_protocol_name(protocol),
            link="AT command mode",
        )

    def _enter(self, guard_time_s: float) -> None:
        time.sleep(guard_time_s)
        self._serial.reset_input_buffer()
        self._serial.write(b"+++")
        reply = self._line(guard_time_s + self._timeout_s)
        if reply != "OK":
            raise RadioError(
                f"{self._port}: the radio did not enter AT command mode (answered"
                f" {reply!r} to +++); check the baud rate (--baud) and that GT and CC"
                " are at their defaults"
            )

    def _line(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        data = bytearray()
        while time.monotonic() < deadline:
            data += self._serial.read(max(1, self._serial.in_waiting))
            if b"\r" in data:
                return data.split(b"\r", 1)[0].decode("ascii", "replace").strip()
        return data.decode("ascii", "replace").strip()

    def _command(self, text: str) -> str:
        self._serial.write(f"AT{text}\r".encode("ascii"))
        reply = self._line(self._timeout_s)
        if not reply:
            raise RadioError(
                f"{self._port}: no answer to AT{text} in command mode within"
                f" {self._timeout_s:g} s; run the command again"
            )
        return reply

    def _need(self, command: str) -> int:
        value = self.read(command)
        if value is None:
            raise RadioError(f"{self._port}: the radio does not know AT{command}")
        return value

    def read(self, command: str) -> int | None:
        reply = self._command(command)
        if reply == "ERROR":
            return None
        try:
            return int(reply, 16)
        except ValueError:
            raise RadioError(
                f"{self._port}: AT{command} answered {reply!r}, not a hex value"
            ) from None

    def queue(self, command: str, value: int) -> None:
        reply = self._command(f"{command}{value:X}")
        if reply != "OK":
            raise _refused_error(self._port, command, value, reply)

    def write_and_apply(self) -> None:
        for command in ("WR", "AC"):
            reply = self._command(command)
            if reply != "OK":
                raise _refused_error(self._port, command, None, reply)

    def close(self) -> None:
        if self._serial.is_open:
            with contextlib.suppress(serial.SerialException, OSError, RadioError):
                self._command("CN")
            self._serial.close()


def _refused_error(
    port: str, command: str, value: int | None, status: str
) -> RadioError:
    what = f"{command}={value:X}" if value is not None else command
    hint = ""
    if command == "D4":
        hint = "; AD4 exists only on Series 1 modules (XBee3 and S2C have AD0-AD3)"
    elif command == "CH":
        hint = "; XBee-PRO S1 modules only have channels 0x0C..0x17"
    elif command == "WR":
        hint = "; the settings are set but not saved, so run the command again"
    return RadioError(f"{port}: the radio refused {what} ({status}){hint}")


def _protocol_name(protocol: Any) -> str:
    if protocol is XBeeProtocol.RAW_802_15_4:
        return "802.15.4"
    return str(getattr(protocol, "description", protocol))


def _open_serial(port: str, baud: int) -> serial.Serial:
    try:
        return serial.Serial(port, baud, timeout=0.05, exclusive=True)
    except serial.SerialException as exc:
        raise _port_error(port, exc) from exc


def _port_error(port: str, exc: BaseException) -> RadioError:
    text = str(exc)
    cause = getattr(exc, "errno", None) or getattr(exc.__cause__, "errno", None)
    if cause == errno.EACCES or "Permission denied" in text:
        return RadioError(
            f"no permission to open {port}: add your user to the dialout group"
            " (sudo usermod -aG dialout $USER, then log in again)"
        )
    if "lock" in text.lower() or cause == errno.EBUSY:
        return RadioError(
            f"{port} is in use: stop the program holding it (a running wattd"
            " daemon, screen, minicom) and try again"
        )
    return RadioError(f"cannot open {port}: {text}")


def serial_candidates() -> list[str]:
    """Serial devices an XBee USB adapter might be, stable names first."""
    found = sorted(glob.glob("/dev/serial/by-id/*"))
    found += sorted(glob.glob("/dev/ttyUSB*")) + sorted(glob.glob("/dev/ttyACM*"))
    return found


def _quiet_digi() -> None:
    # digi-xbee logs its own timeouts and probe failures at ERROR; wattd turns
    # them into one RadioError, so they only show with --log-level debug.
    digi_log = logging.getLogger("digi")
    if not any(isinstance(h, logging.NullHandler) for h in digi_log.handlers):
        digi_log.addHandler(logging.NullHandler())
    digi_log.propagate = log.isEnabledFor(logging.DEBUG)


def open_radio(
    port: str,
    baud: int = DEFAULT_BAUD,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    guard_time_s: float = GUARD_TIME_S,
) -> Radio:
    """Open the local XBee on ``port`` in whatever mode it is in.

    Raises:
        RadioError: the port is missing or busy, nothing answers, or the radio
            does not run 802.15.4 (Series 1) firmware.
    """
    if not Path(port).exists():
        others = serial_candidates()
        seen = f" Serial devices here: {', '.join(others)}." if others else ""
        raise RadioError(
            f"{port} does not exist: is the XBee USB adapter plugged in? It is"
            f" usually /dev/ttyUSB0, or a stable name in /dev/serial/by-id/.{seen}"
        )
    _quiet_digi()
    radio: Radio
    try:
        device = XBeeDevice(port, baud, _sync_ops_timeout=timeout_s)
    except serial.SerialException as exc:
        raise _port_error(port, exc) from exc
    try:
        device.open()
    except InvalidOperatingModeException:
        mode = device.operating_mode
        with contextlib.suppress(XBeeException, serial.SerialException, OSError):
            device.close()
        if mode is not OperatingMode.AT_MODE:
            raise _no_answer(port, baud, timeout_s) from None
        radio = _CommandModeRadio(
            port, baud, timeout_s=timeout_s, guard_time_s=guard_time_s
        )
    except TimeoutException:
        with contextlib.suppress(XBeeException, serial.SerialException, OSError):
            device.close()
        raise _no_answer(port, baud, timeout_s) from None
    except serial.SerialException as exc:
        raise _port_error(port, exc) from exc
    except XBeeException as exc:
        with contextlib.suppress(XBeeException, serial.SerialException, OSError):
            device.close()
        raise RadioError(f"{port}: {exc}") from exc
    else:
        try:
            radio = _ApiRadio(device, port, baud, timeout_s)
        except BaseException:
            with contextlib.suppress(XBeeException, serial.SerialException, OSError):
                device.close()
            raise
    if radio.info.protocol != "802.15.4":
        info = radio.info
        radio.close()
        raise RadioError(
            f"{port}: the radio runs {info.protocol} firmware (VR {info.firmware:X},"
            f" HV {info.hardware:X}); Tweet-a-Watt meters are XBee Series 1 on"
            " 802.15.4 firmware (VR 10xx). Use a Series 1 radio, or load 802.15.4"
            " firmware onto this one with Digi XCTU"
        )
    return radio


def _no_answer(port: str, baud: int, timeout_s: float) -> RadioError:
    return RadioError(
        f"no answer from an XBee on {port} at {baud} baud (waited {timeout_s:g} s,"
        " tried API frames and +++). Check: the radio is seated in the adapter the"
        " right way round; --baud matches its BD (factory default 9600); no other"
        " program uses the port; a radio set up as a meter sleeps (SM=4), so press"
        " the adapter's reset button just before running the command"
    )


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
