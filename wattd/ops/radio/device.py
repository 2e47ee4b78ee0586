"""Talking to a local XBee over its serial port: the receiver or a meter's radio.

This replaces the X-CTU step of the original kit. A radio in API mode (AP=1 or 2)
is driven with digi-xbee. A radio in transparent mode (AP=0, the factory default
and the 2009 receiver profile) is found by digi-xbee's own probe, which cannot
talk to an 802.15.4 radio in that mode; wattd then uses the AT command mode
(``+++``, ``ATxx``) over plain pyserial instead.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import time
from pathlib import Path
from typing import Any, Final

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
from wattd.ops.radio.model import Radio, RadioInfo

__all__ = [
    "DEFAULT_BAUD",
    "DEFAULT_TIMEOUT_S",
    "GUARD_TIME_S",
    "open_radio",
    "serial_candidates",
]

log = logging.getLogger(__name__)

DEFAULT_BAUD: Final = 9600
DEFAULT_TIMEOUT_S: Final = 2.0
# The radio needs GT (1 s by default) of silence before "+++" and answers "OK"
# after another GT of silence.
GUARD_TIME_S: Final = 1.1


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
