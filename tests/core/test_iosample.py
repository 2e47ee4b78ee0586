"""IO sample payloads: differential against digi-xbee and python-xbee, and validation.

digi-xbee builds frames byte for byte and parses the header and the *first*
sample set (its ``IOSample`` stops there); python-xbee parses every sample set.
wattd must agree with both on every frame hypothesis can think of.
"""

from __future__ import annotations

import dataclasses

import pytest
import xbee
from digi.xbee.io import IOLine, IOValue
from digi.xbee.models.address import XBee16BitAddress, XBee64BitAddress
from digi.xbee.models.status import ModemStatus
from digi.xbee.packets.base import XBeePacket
from digi.xbee.packets.common import IODataSampleRxIndicatorPacket, ModemStatusPacket
from digi.xbee.packets.factory import build_frame
from digi.xbee.packets.raw import RX16IOPacket, RX64IOPacket
from hypothesis import given
from hypothesis import strategies as st
from xbee.frame import APIFrame

from tests.fixtures.framebuilder import (
    Io802Fields,
    IoSampleRxFields,
    accepted,
    decode_all,
    hexbytes,
    io_802_fields,
    io_sample_rx_data,
    io_sample_rx_fields,
    modem_status_data,
)
from wattd.core.frames import ApiMode, FrameRejected, RejectReason, encode_frame
from wattd.core.iosample import (
    MAX_SAMPLE_SETS,
    RX16_IO,
    RX64_IO,
    IoSampleFrame,
    ModemStatusFrame,
    OtherFrame,
    PayloadRejection,
    _io_frame,
    encode_rx16_io,
    io_mask,
    parse_frame_data,
)

MODES = (ApiMode.UNESCAPED, ApiMode.ESCAPED)
PY_XBEE = xbee.XBee(None)
PY_ZIGBEE = xbee.ZigBee(None)


def decode_one(
    wire: bytes, mode: ApiMode
) -> IoSampleFrame | ModemStatusFrame | OtherFrame:
    events, decoder = decode_all([wire], mode)
    assert len(events) == 1, events
    (event,) = events
    assert not isinstance(event, FrameRejected), event
    assert decoder.stats.frames_ok == 1
    return event


def pyxbee_samples(frame: IoSampleFrame, *, dio_bits: int) -> list[dict[str, object]]:
    """wattd's decoded samples in python-xbee's dict form."""
    out = []
    for i in range(frame.sample_count):
        sample: dict[str, object] = {}
        if frame.digital is not None:
            for bit in range(dio_bits):
                if frame.digital_mask >> bit & 1:
                    sample[f"dio-{bit}"] = bool(frame.digital[i] >> bit & 1)
        for ch in frame.analog_channels:
            sample[f"adc-{ch}"] = frame.analog[ch][i]
        if frame.supply_voltage is not None:
            sample["adc-7"] = frame.supply_voltage
        out.append(sample)
    return out


def digi_first_set(
    frame: IoSampleFrame,
) -> tuple[dict[IOLine, int], dict[IOLine, IOValue]]:
    """wattd's first sample set in digi-xbee's ``IOSample`` form."""
    analog = {IOLine.get(ch): values[0] for ch, values in frame.analog.items()}
    digital = {}
    if frame.digital is not None:
        for bit in range(16):
            if frame.digital_mask >> bit & 1:
                high = frame.digital[0] >> bit & 1
                digital[IOLine.get(bit)] = IOValue.HIGH if high else IOValue.LOW
    return analog, digital


# -- 0x83 / 0x82 ----------------------------------------------------------------


@given(fields=io_802_fields(), mode=st.sampled_from(MODES))
def test_802_io_frames_agree_with_both_oracles(
    fields: Io802Fields, mode: ApiMode
) -> None:
    data = fields.frame_data()
    wire = encode_frame(data, mode)
    escaped = mode is ApiMode.ESCAPED
    rssi_raw = -fields.rssi_dbm
    payload = bytearray(data[fields.header_len :])  # count, mask, sample sets

    # Byte for byte: digi-xbee and python-xbee build the same wire frame.
    packet: RX16IOPacket | RX64IOPacket
    if fields.api_id == RX16_IO:
        addr = XBee16BitAddress(bytearray(fields.address.to_bytes(2, "big")))
        packet = RX16IOPacket(addr, rssi_raw, fields.options, payload)
    else:
        addr64 = XBee64BitAddress(bytearray(fields.address64.to_bytes(8, "big")))
        packet = RX64IOPacket(addr64, rssi_raw, fields.options, payload)
    assert bytes(packet.output(escaped=escaped)) == wire
    assert APIFrame(data, escaped=escaped).output() == wire

    frame = decode_one(wire, mode)
    assert isinstance(frame, IoSampleFrame)

    # Sample for sample, every set: python-xbee.
    parsed = PY_XBEE._split_response(data)
    long_addr = fields.api_id == RX64_IO
    assert parsed["id"] == ("rx_io_data_long_addr" if long_addr else "rx_io_data")
    assert parsed["samples"] == pyxbee_samples(frame, dio_bits=9)
    assert parsed["rssi"] == bytes((rssi_raw,))
    assert parsed["options"] == bytes((frame.options,))

    # Header fields and the first set: digi-xbee parsing the unescaped frame.
    unescaped = bytes(XBeePacket.unescape_data(bytearray(wire))) if escaped else wire
    theirs = build_frame(bytearray(unescaped))
    assert type(theirs) is type(packet)
    assert frame.rssi_dbm == -theirs.rssi
    assert theirs.receive_options == frame.options
    if long_addr:
        their_addr = int.from_bytes(theirs.x64bit_source_addr.address, "big")
        assert (their_addr, frame.address16) == (frame.address64, None)
    else:
        their_addr = int.from_bytes(theirs.x16bit_source_addr.address, "big")
        assert (their_addr, frame.address64) == (frame.address16, None)
    analog, digital = digi_first_set(frame)
    assert theirs.io_sample.analog_values == analog
    assert theirs.io_sample.digital_values == digital

    # And wattd's own view is the one it was built from.
    assert frame.analog == fields.analog
    assert frame.digital == fields.digital
    assert frame.digital_mask == fields.digital_mask
    assert frame.raw == wire


def test_python_xbee_stream_reader_agrees_on_a_mixed_escaped_stream() -> None:
    """python-xbee's own serial reader (unescaping included) sees the same frames."""
    datas = [
        encode_rx16_io(
            address=0x7D13, rssi_dbm=-0x11, analog={0: [0x7E, 0x7D], 4: [0x11, 0x13]}
        ),
        modem_status_data(0x00),
        encode_rx16_io(
            address=1, rssi_dbm=-60, analog={1: [5]}, digital=[0x13], digital_mask=0x1FF
        ),
    ]
    wire = b"".join(encode_frame(d, ApiMode.ESCAPED) for d in datas)

    class BytesSerial:
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def inWaiting(self) -> int:
            return len(self.data) - self.pos

        def read(self, n: int = 1) -> bytes:
            piece = self.data[self.pos : self.pos + n]
            self.pos += len(piece)
            return piece

    reader = xbee.XBee(BytesSerial(wire), escaped=True)
    theirs = [reader.wait_read_frame() for _ in datas]
    events, _ = decode_all([wire], ApiMode.ESCAPED)
    ours = accepted(events)
    assert len(ours) == 3
    assert isinstance(ours[0], IoSampleFrame)
    assert theirs[0]["samples"] == pyxbee_samples(ours[0], dio_bits=9)
    assert isinstance(ours[1], ModemStatusFrame)
    assert theirs[1] == {"id": "status", "status": b"\x00"}
    assert isinstance(ours[2], IoSampleFrame)
    assert theirs[2]["samples"] == pyxbee_samples(ours[2], dio_bits=9)


# -- 0x92 -----------------------------------------------------------------------


@given(fields=io_sample_rx_fields(), mode=st.sampled_from(MODES))
def test_0x92_frames_agree_with_both_oracles(
    fields: IoSampleRxFields, mode: ApiMode
) -> None:
    data = fields.frame_data()
    wire = encode_frame(data, mode)
    escaped = mode is ApiMode.ESCAPED
    packet = IODataSampleRxIndicatorPacket(
        XBee64BitAddress(bytearray(fields.address64.to_bytes(8, "big"))),
        XBee16BitAddress(bytearray(fields.address16.to_bytes(2, "big"))),
        fields.options,
        rf_data=bytearray(data[12:]),
    )
    assert bytes(packet.output(escaped=escaped)) == wire
    assert APIFrame(data, escaped=escaped).output() == wire

    frame = decode_one(wire, mode)
    assert isinstance(frame, IoSampleFrame)
    assert frame.address64 == fields.address64
    assert frame.address16 == fields.address16
    assert frame.supply_voltage == fields.supply_voltage
    assert {ch: v[0] for ch, v in frame.analog.items()} == fields.analog
    assert frame.digital == ((fields.digital,) if fields.digital_mask else None)

    parsed = PY_ZIGBEE._split_response(data)
    assert parsed["id"] == "rx_io_data_long_addr"
    assert parsed["samples"] == pyxbee_samples(frame, dio_bits=13)

    unescaped = bytes(XBeePacket.unescape_data(bytearray(wire))) if escaped else wire
    theirs = build_frame(bytearray(unescaped))
    assert isinstance(theirs, IODataSampleRxIndicatorPacket)
    assert int.from_bytes(theirs.x64bit_source_addr.address, "big") == frame.address64
    assert int.from_bytes(theirs.x16bit_source_addr.address, "big") == frame.address16
    assert theirs.receive_options == frame.options
    analog, digital = digi_first_set(frame)
    assert theirs.io_sample.analog_values == analog
    assert theirs.io_sample.digital_values == digital
    if frame.supply_voltage is not None:
        assert theirs.io_sample.power_supply_value == frame.supply_voltage


# -- 0x8A -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [s.code for s in ModemStatus if s.code <= 0xFF])
@pytest.mark.parametrize("mode", MODES)
def test_modem_status_agrees_with_both_oracles(status: int, mode: ApiMode) -> None:
    data = modem_status_data(status)
    wire = encode_frame(data, mode)
    packet = ModemStatusPacket(ModemStatus.get(status))
    assert bytes(packet.output(escaped=mode is ApiMode.ESCAPED)) == wire
    assert APIFrame(data, escaped=mode is ApiMode.ESCAPED).output() == wire
    frame = decode_one(wire, mode)
    assert isinstance(frame, ModemStatusFrame)
    assert frame.status == status
    assert PY_XBEE._split_response(data) == {"id": "status", "status": bytes((status,))}
    assert frame.description  # known codes get text, others their number


# -- payload validation ---------------------------------------------------------


def test_digital_word_comes_before_the_adc_words_of_each_set() -> None:
    # Mask 0x2208 (DIO3 + AD0 + AD4), 3 sets: the layout the 2009 wattcher
    # parser got wrong (it skipped the digital word when locating ADC words).
    data = hexbytes(
        "83 00 01 28 00 03 22 08"
        " 00 08 00 64 00 C8"  # set 0: DIO3 high, AD0 100, AD4 200
        " 00 00 01 2C 01 90"  # set 1: DIO3 low, AD0 300, AD4 400
        " 00 08 01 F4 02 58"  # set 2: DIO3 high, AD0 500, AD4 600
    )
    frame = parse_frame_data(data, b"")
    assert isinstance(frame, IoSampleFrame)
    assert frame.digital == (8, 0, 8)
    assert frame.analog == {0: (100, 300, 500), 4: (200, 400, 600)}
    assert PY_XBEE._split_response(data)["samples"] == pyxbee_samples(frame, dio_bits=9)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        # one byte short, one byte long, one whole set short, one set too many
        (
            encode_rx16_io(address=1, rssi_dbm=-40, analog={0: [1, 2], 4: [3, 4]})[:-1],
            "16",
        ),
        (
            encode_rx16_io(address=1, rssi_dbm=-40, analog={0: [1, 2], 4: [3, 4]})
            + b"\0",
            "16",
        ),
        (
            encode_rx16_io(address=1, rssi_dbm=-40, analog={0: [1, 2], 4: [3, 4]})[:-4],
            "16",
        ),
        (
            encode_rx16_io(address=1, rssi_dbm=-40, analog={0: [1, 2], 4: [3, 4]})
            + bytes(4),
            "16",
        ),
    ],
)
def test_payload_length_must_match_count_times_set_size(
    data: bytes, words: str
) -> None:
    parsed = parse_frame_data(data, b"")
    assert isinstance(parsed, PayloadRejection)
    assert not parsed.encrypted
    assert f"needs {words}" in parsed.detail
    events, decoder = decode_all([encode_frame(data)])
    # The frame's bytes after its start byte are scanned again: garbage here.
    assert [
        ev.reason
        for ev in events
        if isinstance(ev, FrameRejected) and ev.reason is not RejectReason.GARBAGE
    ] == [RejectReason.BAD_PAYLOAD]
    assert decoder.stats.bad_payload == 1
    assert decoder.stats.frames_ok == 0


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (hexbytes("83 00 01 28 00 00 22 00"), "no samples"),  # count 0
        (hexbytes("83 00 01 28 00 01 00 00"), "no samples"),  # empty mask
        (hexbytes("83 00 01 28 00 01 82 00 00 05"), "reserved bit 15"),
        (hexbytes("83 00 01 28 00"), "shorter than its header"),
        (hexbytes("82 00 00 00 00 00 00 00 01 28 00 01 02"), "shorter than its header"),
        (hexbytes("8A"), "modem status frame of 1 bytes"),
        (hexbytes("8A 00 00"), "modem status frame of 3 bytes"),
        (
            hexbytes("92 00 13 A2 00 40 52 2B AA FF FE 01 01 00"),
            "shorter than its header",
        ),
        (
            io_sample_rx_data(address64=1, analog={1: 5}, count=2),
            "claims 2 sample sets",
        ),
        (io_sample_rx_data(address64=1, analog={4: 5}), "reserved bits"),
        (io_sample_rx_data(address64=1), "empty digital and analog masks"),
        (io_sample_rx_data(address64=1, analog={1: 5}) + b"\0", "need 18"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(
    data: bytes, needle: str
) -> None:
    parsed = parse_frame_data(data, b"")
    assert isinstance(parsed, PayloadRejection)
    assert needle in parsed.detail


def test_encrypted_count_is_its_own_rejection() -> None:
    data = hexbytes("83 00 10 2C 00 FF 04 B5 47 01 02 00 01 CC")
    parsed = parse_frame_data(data, b"")
    assert isinstance(parsed, PayloadRejection)
    assert parsed.encrypted
    assert "EE=0" in parsed.detail


def test_sample_set_limit_at_and_past_its_edge() -> None:
    at_limit = encode_rx16_io(
        address=1, rssi_dbm=-40, analog={0: list(range(MAX_SAMPLE_SETS))}
    )
    frame = parse_frame_data(at_limit, b"")
    assert isinstance(frame, IoSampleFrame)
    assert frame.sample_count == MAX_SAMPLE_SETS
    assert frame.analog[0] == tuple(range(MAX_SAMPLE_SETS))

    past = encode_rx16_io(
        address=1, rssi_dbm=-40, analog={0: list(range(MAX_SAMPLE_SETS + 1))}
    )
    parsed = parse_frame_data(past, b"")
    assert isinstance(parsed, PayloadRejection)
    assert f"{MAX_SAMPLE_SETS + 1}" in parsed.detail
    # python-xbee would happily read it: the limit is wattd's own sanity bound.
    assert len(PY_XBEE._split_response(past)["samples"]) == MAX_SAMPLE_SETS + 1


def test_layout_cache_stays_bounded_and_correct() -> None:
    # Many distinct (count, mask) pairs, as corrupt frames could produce.
    from wattd.core import iosample

    for count in range(1, 60):
        for mask_bits in range(1, 8):
            data = encode_rx16_io(
                address=2,
                rssi_dbm=-50,
                analog={ch: [count] * count for ch in range(3) if mask_bits >> ch & 1},
            )
            frame = parse_frame_data(data, b"")
            assert isinstance(frame, IoSampleFrame)
            assert all(v == (count,) * count for v in frame.analog.values())
    assert len(iosample._LAYOUTS) <= iosample._MAX_LAYOUTS


# -- value objects --------------------------------------------------------------


def test_fast_constructor_builds_the_same_frame_as_the_dataclass() -> None:
    # Distinct values per field, so a swapped pair of setters shows.
    frame = _io_frame(0x83, 7, 9, -40, 2, 1, 0x8, (0,), {0: (5,)}, (8,), 3300, b"raw")
    assert frame == IoSampleFrame(
        api_id=0x83,
        address16=7,
        address64=9,
        rssi_dbm=-40,
        options=2,
        sample_count=1,
        digital_mask=0x8,
        analog_channels=(0,),
        analog={0: (5,)},
        digital=(8,),
        supply_voltage=3300,
        raw=b"raw",
    )
    assert [f.name for f in dataclasses.fields(IoSampleFrame)][::11] == [
        "api_id",
        "raw",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(frame, "options", 3)  # noqa: B010 - the point is the runtime check


def test_sensor_id_prefers_the_16_bit_address() -> None:
    base = parse_frame_data(hexbytes("83 00 05 28 00 01 02 00 01 00"), b"")
    assert isinstance(base, IoSampleFrame)
    assert base.sensor_id == 5
    assert base.channel(0) == (256,)
    assert base.channel(4) == ()
    zb = parse_frame_data(
        io_sample_rx_data(address64=0x0013A200DEADBEEF, analog={1: 9}), b""
    )
    assert isinstance(zb, IoSampleFrame)
    assert zb.sensor_id == 0x0013A200DEADBEEF  # 16-bit 0xFFFE means "unknown"


def test_encoder_refuses_what_no_radio_sends() -> None:
    with pytest.raises(ValueError, match="same number"):
        encode_rx16_io(address=1, rssi_dbm=-1, analog={0: [1], 4: [1, 2]})
    with pytest.raises(ValueError, match="digital words are required"):
        encode_rx16_io(address=1, rssi_dbm=-1, analog={0: [1]}, digital_mask=1)
    with pytest.raises(ValueError, match=r"1\.\.254"):
        encode_rx16_io(address=1, rssi_dbm=-1, analog={0: [1] * 255})
    with pytest.raises(ValueError, match="does not exist"):
        io_mask([6])
    assert io_mask([0, 4]) == 0x2200
