"""XBee frame payloads: IO samples (0x83, 0x82, 0x92), modem status, the rest.

Layout of an 802.15.4 IO payload (0x83 shown; 0x82 has an 8-byte address)::

    83 | ADDR(2) | RSSI | OPTIONS | N | MASK(2) | N sample sets

MASK bits 0-8 are DIO0-DIO8 and bits 9-14 are ADC0-ADC5. Each sample set holds
a 2-byte digital word first (only if any DIO bit is set), then one 2-byte word per
enabled ADC in channel order. The payload length must equal the header plus
N x set size; anything else is rejected rather than guessed at. Tweet-a-Watt
meters send mask 0x2200 (AD0 voltage, AD4 current) and N = 19.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

RX64_IO: Final = 0x82
RX16_IO: Final = 0x83
MODEM_STATUS: Final = 0x8A
IO_SAMPLE_RX: Final = 0x92

ENCRYPTED_COUNT: Final = 0xFF
_DIO_BITS: Final = 0x01FF
_ADC_SHIFT: Final = 9
_ADC_BITS_S1: Final = 0x7E00
_SUPPLY_VOLTAGE_BIT: Final = 0x80
# An S1 radio's RF payload is at most 100 bytes, so no real frame carries more
# sample sets than this; the bound also keeps struct format strings small.
MAX_SAMPLE_SETS: Final = 100

_U16: Final = struct.Struct(">H")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IoSampleFrame:
    """One IO sample frame with every sample set decoded.

    ``analog`` maps an ADC channel number to its values, one per sample set;
    ``digital`` holds the digital word of each set when any DIO line is enabled.
    """

    api_id: int
    address16: int | None
    address64: int | None
    rssi_dbm: int | None
    options: int
    sample_count: int
    digital_mask: int
    analog_channels: tuple[int, ...]
    analog: dict[int, tuple[int, ...]]
    digital: tuple[int, ...] | None
    supply_voltage: int | None
    raw: bytes

    @property
    def sensor_id(self) -> int:
        """The sensor's identity: its 16-bit address, else its 64-bit one."""
        if self.address16 is not None and self.address16 != 0xFFFE:
            return self.address16
        return self.address64 if self.address64 is not None else 0xFFFE

    def channel(self, adc: int) -> tuple[int, ...]:
        """Values of one ADC channel, or an empty tuple if it is not enabled."""
        return self.analog.get(adc, ())


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ModemStatusFrame:
    """0x8A: the local radio reports a reset, association change and so on."""

    api_id: int
    status: int
    raw: bytes

    @property
    def description(self) -> str:
        """Human text for the status code."""
        return MODEM_STATUS_TEXT.get(self.status, f"status 0x{self.status:02X}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OtherFrame:
    """A valid frame of a type wattd does not interpret; passed on untouched."""

    api_id: int
    data: bytes
    raw: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class PayloadRejection:
    """A checksum-valid frame whose payload does not hold together."""

    detail: str
    encrypted: bool = False


MODEM_STATUS_TEXT: Final = {
    0x00: "hardware reset",
    0x01: "watchdog timer reset",
    0x02: "associated",
    0x03: "disassociated",
    0x04: "synchronization lost",
    0x05: "coordinator realignment",
    0x06: "coordinator started",
}

ParsedFrame = IoSampleFrame | ModemStatusFrame | OtherFrame | PayloadRejection


@dataclasses.dataclass(frozen=True, slots=True)
class _Layout:
    """How the sample sets of one (count, mask) pair sit in an 802.15.4 payload."""

    body_len: int
    words: struct.Struct
    per_set: int
    digital_mask: int
    channels: tuple[int, ...]
    slots: tuple[tuple[int, int], ...]
    """(ADC channel, index of its first word) pairs."""


# Every meter repeats the same (count, mask) in every frame, so the layout is
# worked out once. The cache is bounded because the key comes off the air.
_LAYOUTS: dict[int, _Layout] = {}
_MAX_LAYOUTS: Final = 256


def _layout(count: int, mask: int) -> _Layout | PayloadRejection:
    """Work out (and cache) the layout of ``count`` sets with channel ``mask``."""
    if count == ENCRYPTED_COUNT:
        return PayloadRejection(
            "sample count 0xFF: the sender encrypts (EE=1); set EE=0 on it",
            encrypted=True,
        )
    digital_mask = mask & _DIO_BITS
    adc = (mask & _ADC_BITS_S1) >> _ADC_SHIFT
    channels = tuple(ch for ch in range(6) if adc >> ch & 1)
    if count == 0 or (not digital_mask and not channels):
        return PayloadRejection(f"no samples (count {count}, mask 0x{mask:04X})")
    if mask & 0x8000:
        return PayloadRejection(f"channel mask 0x{mask:04X} sets reserved bit 15")
    if count > MAX_SAMPLE_SETS:
        return PayloadRejection(
            f"sample count {count} is more than the {MAX_SAMPLE_SETS} sets an"
            " 802.15.4 frame can carry"
        )
    first = 1 if digital_mask else 0
    per_set = len(channels) + first
    layout = _Layout(
        body_len=2 * per_set * count,
        words=struct.Struct(f">{count * per_set}H"),
        per_set=per_set,
        digital_mask=digital_mask,
        channels=channels,
        slots=tuple((ch, first + k) for k, ch in enumerate(channels)),
    )
    if len(_LAYOUTS) >= _MAX_LAYOUTS:
        _LAYOUTS.clear()
    _LAYOUTS[(count << 16) | mask] = layout
    return layout


# One IoSampleFrame is built per radio frame, and the keyword-only __init__ of a
# frozen dataclass (argument parsing plus one object.__setattr__ per field) costs
# about as much as the rest of the decode. The hot path fills the slots directly,
# which is what that __init__ does minus the argument parsing; test_iosample
# checks that both build equal frames and that the setters follow field order.
_new_object: Final = object.__new__
_FIELD_SETTERS: Final = tuple(
    getattr(IoSampleFrame, field.name).__set__
    for field in dataclasses.fields(IoSampleFrame)
)
(
    _set_api_id,
    _set_address16,
    _set_address64,
    _set_rssi_dbm,
    _set_options,
    _set_sample_count,
    _set_digital_mask,
    _set_analog_channels,
    _set_analog,
    _set_digital,
    _set_supply_voltage,
    _set_raw,
) = _FIELD_SETTERS


def _io_frame(
    api_id: int,
    address16: int | None,
    address64: int | None,
    rssi_dbm: int | None,
    options: int,
    sample_count: int,
    digital_mask: int,
    analog_channels: tuple[int, ...],
    analog: dict[int, tuple[int, ...]],
    digital: tuple[int, ...] | None,
    supply_voltage: int | None,
    raw: bytes,
    /,
) -> IoSampleFrame:
    frame: IoSampleFrame = _new_object(IoSampleFrame)
    _set_api_id(frame, api_id)
    _set_address16(frame, address16)
    _set_address64(frame, address64)
    _set_rssi_dbm(frame, rssi_dbm)
    _set_options(frame, options)
    _set_sample_count(frame, sample_count)
    _set_digital_mask(frame, digital_mask)
    _set_analog_channels(frame, analog_channels)
    _set_analog(frame, analog)
    _set_digital(frame, digital)
    _set_supply_voltage(frame, supply_voltage)
    _set_raw(frame, raw)
    return frame


def _io_layout(data: bytes, header: int) -> _Layout | PayloadRejection:
    """Find the sample layout of an 802.15.4 IO payload and check its length."""
    n = len(data)
    if n < header:
        return PayloadRejection(f"IO frame of {n} bytes is shorter than its header")
    count = data[header - 3]
    mask = (data[header - 2] << 8) | data[header - 1]
    layout = _LAYOUTS.get((count << 16) | mask)
    if layout is None:
        found = _layout(count, mask)
        if isinstance(found, PayloadRejection):
            return found
        layout = found
    if n - header != layout.body_len:
        return PayloadRejection(
            f"IO payload is {n} bytes; count {count} x {2 * layout.per_set}-byte"
            f" sets (mask 0x{mask:04X}) needs {header + layout.body_len}"
        )
    return layout


def _parse_rx16_io(data: bytes, raw: bytes) -> ParsedFrame:
    """0x83: 16-bit source address, RSSI, options, sample sets."""
    layout = _io_layout(data, 8)
    if isinstance(layout, PayloadRejection):
        return layout
    words = layout.words.unpack_from(data, 8)
    per_set = layout.per_set
    return _io_frame(
        RX16_IO,
        (data[1] << 8) | data[2],
        None,
        -data[3],
        data[4],
        data[5],
        layout.digital_mask,
        layout.channels,
        {ch: words[i::per_set] for ch, i in layout.slots},
        words[0::per_set] if layout.digital_mask else None,
        None,
        raw,
    )


def _parse_rx64_io(data: bytes, raw: bytes) -> ParsedFrame:
    """0x82: 64-bit source address, RSSI, options, sample sets."""
    layout = _io_layout(data, 14)
    if isinstance(layout, PayloadRejection):
        return layout
    words = layout.words.unpack_from(data, 14)
    per_set = layout.per_set
    return _io_frame(
        RX64_IO,
        None,
        int.from_bytes(data[1:9], "big"),
        -data[9],
        data[10],
        data[11],
        layout.digital_mask,
        layout.channels,
        {ch: words[i::per_set] for ch, i in layout.slots},
        words[0::per_set] if layout.digital_mask else None,
        None,
        raw,
    )


def _parse_io_sample_rx(data: bytes, raw: bytes) -> ParsedFrame:
    """0x92: one sample set, 64+16-bit source, separate masks, supply voltage."""
    n = len(data)
    if n < 16:
        return PayloadRejection(f"0x92 frame of {n} bytes is shorter than its header")
    count = data[12]
    dmask = (data[13] << 8) | data[14]
    amask = data[15]
    channels = tuple(ch for ch in range(4) if amask >> ch & 1)
    has_supply = bool(amask & _SUPPLY_VOLTAGE_BIT)
    if count != 1:
        return PayloadRejection(f"0x92 frame claims {count} sample sets; it carries 1")
    if amask & 0x70:
        return PayloadRejection(f"analog mask 0x{amask:02X} sets reserved bits")
    if not dmask and not amask:
        return PayloadRejection("0x92 frame with empty digital and analog masks")
    expected = 16 + (2 if dmask else 0) + 2 * (len(channels) + has_supply)
    if n != expected:
        return PayloadRejection(
            f"0x92 payload is {n} bytes; masks 0x{dmask:04X}/0x{amask:02X} need"
            f" {expected}"
        )
    offset = 16
    digital: tuple[int, ...] | None = None
    if dmask:
        digital = (_U16.unpack_from(data, offset)[0],)
        offset += 2
    analog: dict[int, tuple[int, ...]] = {}
    for ch in channels:
        analog[ch] = (_U16.unpack_from(data, offset)[0],)
        offset += 2
    supply = _U16.unpack_from(data, offset)[0] if has_supply else None
    return IoSampleFrame(
        api_id=IO_SAMPLE_RX,
        address16=(data[9] << 8) | data[10],
        address64=int.from_bytes(data[1:9], "big"),
        rssi_dbm=None,
        options=data[11],
        sample_count=1,
        digital_mask=dmask,
        analog_channels=channels,
        analog=analog,
        digital=digital,
        supply_voltage=supply,
        raw=raw,
    )


def _parse_modem_status(data: bytes, raw: bytes) -> ParsedFrame:
    if len(data) != 2:
        return PayloadRejection(f"modem status frame of {len(data)} bytes, expected 2")
    return ModemStatusFrame(api_id=MODEM_STATUS, status=data[1], raw=raw)


PARSERS: Final[dict[int, Callable[[bytes, bytes], ParsedFrame]]] = {
    RX16_IO: _parse_rx16_io,
    RX64_IO: _parse_rx64_io,
    IO_SAMPLE_RX: _parse_io_sample_rx,
    MODEM_STATUS: _parse_modem_status,
}


def parse_frame_data(data: bytes, raw: bytes) -> ParsedFrame:
    """Interpret checksum-valid frame data (API id .. last payload byte)."""
    parser = PARSERS.get(data[0])
    if parser is None:
        return OtherFrame(api_id=data[0], data=data, raw=raw)
    return parser(data, raw)


# -- encoding (simulator and tests) -------------------------------------------


def io_mask(analog_channels: tuple[int, ...] | list[int], digital_mask: int = 0) -> int:
    """Build an 802.15.4 channel mask from ADC channel numbers and DIO bits."""
    mask = digital_mask & _DIO_BITS
    for ch in analog_channels:
        if not 0 <= ch <= 5:
            msg = f"ADC channel {ch} does not exist on an 802.15.4 radio (0..5)"
            raise ValueError(msg)
        mask |= 1 << (ch + _ADC_SHIFT)
    return mask


def encode_rx16_io(
    *,
    address: int,
    rssi_dbm: int,
    analog: dict[int, list[int]] | dict[int, tuple[int, ...]],
    digital: list[int] | tuple[int, ...] | None = None,
    digital_mask: int = 0,
    options: int = 0,
    api_id: int = RX16_IO,
    address64: int = 0,
) -> bytes:
    """Build 0x83 (or 0x82) frame data from sample values, ready for framing.

    ``analog`` maps ADC channel to one value per sample set; ``digital`` gives
    one word per set and is required when ``digital_mask`` is non-zero.
    """
    channels = tuple(sorted(analog))
    counts = {len(v) for v in analog.values()}
    if digital_mask:
        if digital is None:
            msg = "digital words are required when digital_mask is set"
            raise ValueError(msg)
        counts.add(len(digital))
    if len(counts) != 1:
        msg = f"every channel needs the same number of samples, got {sorted(counts)}"
        raise ValueError(msg)
    count = counts.pop()
    if not 1 <= count < ENCRYPTED_COUNT:
        msg = f"sample count must be 1..254, got {count}"
        raise ValueError(msg)
    mask = io_mask(channels, digital_mask)
    out = bytearray((api_id,))
    if api_id == RX16_IO:
        out += _U16.pack(address)
    elif api_id == RX64_IO:
        out += address64.to_bytes(8, "big")
    else:
        msg = f"api_id must be 0x82 or 0x83, got 0x{api_id:02X}"
        raise ValueError(msg)
    out += bytes((-rssi_dbm & 0xFF, options, count))
    out += _U16.pack(mask)
    for i in range(count):
        if digital_mask:
            assert digital is not None  # noqa: S101 - checked above
            out += _U16.pack(digital[i] & digital_mask)
        for ch in channels:
            out += _U16.pack(analog[ch][i])
    return bytes(out)
