"""``wattd.ops.radio`` against a fake XBee on a real pseudo-terminal.

The fake answers with frames built by digi-xbee and keeps RAM and saved
(non-volatile) registers apart, so the tests can tell "set" from "written".
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import pytest
import serial

from tests.fixtures.fakexbee import S1_DEFAULTS, FakeXBee, fake_xbee
from wattd.errors import RadioError
from wattd.ops.radio import (
    SETTINGS,
    Change,
    Setting,
    apply,
    meter_settings,
    open_radio,
    plan,
    read_settings,
    receiver_settings,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from wattd.ops.radio import Radio


def open_fast(path: str) -> Radio:
    """Short timeouts and guard times: the fake answers at once."""
    return open_radio(path, timeout_s=0.5, guard_time_s=0.1)


@pytest.fixture
def radio() -> Iterator[FakeXBee]:
    with fake_xbee() as fx:
        yield fx


def untouched(fx: FakeXBee, before: dict[str, int], changed: set[str]) -> None:
    """Only ``changed`` registers differ from ``before``, in RAM and in flash."""
    for regs in (fx.saved, fx.ram):
        assert {k: v for k, v in regs.items() if k not in changed} == {
            k: v for k, v in before.items() if k not in changed
        }


# -- plans ------------------------------------------------------------------------


def test_meter_plan_is_the_tweetawatt_transmitter_profile() -> None:
    # mflor35/tweetawatt hardware/xbee_wattcherid1.pro and Adafruit's guide:
    # ATMY=1,SM=4,ST=3,SP=C8,D4=2,D0=2,IT=13,IR=1 on the kit's channel/PAN.
    target = meter_settings(address=1, channel=0x0C, pan_id=0x3137)
    assert target == {
        "CH": 0x0C,
        "ID": 0x3137,
        "MY": 1,
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


def test_receiver_plan_matches_the_network_and_stays_awake() -> None:
    target = receiver_settings(channel=0x0D, pan_id=0x3137, api_mode=2)
    assert target["CH"] == 0x0D
    assert target["ID"] == 0x3137
    assert (target["MY"], target["SM"], target["AP"], target["IU"]) == (0, 0, 2, 1)
    assert (target["D0"], target["D4"], target["IR"]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: meter_settings(address=0), "0 is the receiver"),
        (lambda: meter_settings(address=0xFFFE), "out of range"),
        (lambda: meter_settings(address=1, channel=0x30), "0x0B..0x1A"),
        (lambda: receiver_settings(pan_id=0x10000), "PAN ID"),
        (lambda: receiver_settings(api_mode=0), "1 or 2"),
    ],
)
def test_impossible_plans_are_refused_before_touching_a_radio(
    make: object, needle: str
) -> None:
    with pytest.raises(RadioError, match=needle):
        make()  # type: ignore[operator]


def test_a_missing_setting_counts_as_off() -> None:
    ee = Setting(command="EE", label="encryption")
    assert not Change(setting=ee, old=None, new=0).changed
    assert Change(setting=ee, old=None, new=1).changed
    assert Change(setting=ee, old=1, new=0).changed


# -- reading ----------------------------------------------------------------------


@pytest.mark.parametrize("ap", [1, 2])
def test_open_and_show_read_every_setting(ap: int) -> None:
    # SL with 0x7D and 0x13 in it: in mode 2 the answer arrives escaped.
    with fake_xbee(registers={"AP": ap, "SL": 0x407D1311, "ID": 0x7E11}) as fx:
        with open_radio(fx.path, timeout_s=0.5) as radio:
            info = radio.info
            values = read_settings(radio)
        assert (info.firmware, info.hardware, info.protocol) == (
            0x10EF,
            0x1744,
            "802.15.4",
        )
        assert info.link == f"API mode {ap}"
        assert [v.setting for v in values] == list(SETTINGS)
        for v in values:
            assert v.value == fx.ram[v.setting.command], v.setting.command
        assert "SM" in fx.commands  # really asked, not cached
        assert fx.set_commands() == {}
        assert fx.writes == 0


def test_settings_the_firmware_lacks_show_as_missing() -> None:
    with (
        fake_xbee(unknown=frozenset({"EE"})) as fx,
        open_radio(fx.path, timeout_s=0.5) as radio,
    ):
        values = {v.setting.command: v.value for v in read_settings(radio)}
    assert values["EE"] is None
    assert values["CH"] == S1_DEFAULTS["CH"]


# -- writing ----------------------------------------------------------------------


def test_meter_setup_changes_exactly_the_plan(radio: FakeXBee) -> None:
    before = dict(radio.saved)
    target = meter_settings(address=7, channel=0x0F, pan_id=0x3137)
    with open_radio(radio.path, timeout_s=0.5) as r:
        changes = plan(r, target)
        written = apply(r, changes)
    differ = {k for k, v in target.items() if before[k] != v}
    assert written == len(differ) == sum(c.changed for c in changes)
    assert {c.setting.command: c.old for c in changes} == {k: before[k] for k in target}
    # Only what differs is sent; everything is saved, then applied.
    assert radio.set_commands() == {k: target[k] for k in differ}
    assert radio.writes == 1
    commands = radio.commands
    assert commands.index("WR") < commands.index("AC")
    assert max(commands.index(k) for k in differ) < commands.index("WR")
    for k, v in target.items():
        assert (radio.saved[k], radio.ram[k]) == (v, v), k
    untouched(radio, before, set(target))


def test_receiver_setup_can_switch_to_escaped_api_mode(radio: FakeXBee) -> None:
    # PAN ID 7D13 must go out escaped once the radio is in mode 2.
    with open_radio(radio.path, timeout_s=0.5) as r:
        apply(r, plan(r, receiver_settings(pan_id=0x7D13, api_mode=2)))
    assert (radio.saved["AP"], radio.saved["ID"]) == (2, 0x7D13)
    with open_radio(radio.path, timeout_s=0.5) as r:
        assert r.info.link == "API mode 2"
        changes = plan(r, receiver_settings(pan_id=0x7D13, api_mode=2))
        assert apply(r, changes) == 0
    assert not any(c.changed for c in changes)
    assert radio.writes == 1  # nothing to write the second time


def test_planning_alone_writes_nothing(radio: FakeXBee) -> None:
    before = (dict(radio.saved), dict(radio.ram))
    with open_radio(radio.path, timeout_s=0.5) as r:
        changes = plan(r, meter_settings(address=2))
    assert any(c.changed for c in changes)
    assert (radio.saved, radio.ram) == before
    assert radio.set_commands() == {}
    assert "WR" not in radio.commands
    assert "AC" not in radio.commands


def test_a_refused_value_is_a_clear_error_and_nothing_is_saved() -> None:
    with fake_xbee(refuse={"D4": 3}) as fx, open_radio(fx.path, timeout_s=0.5) as r:
        before = dict(fx.saved)
        changes = plan(r, meter_settings(address=1))
        with pytest.raises(
            RadioError, match=r"refused D4=2 \(Invalid parameter\).*Series 1"
        ):
            apply(r, changes)
    assert fx.saved == before
    assert fx.writes == 0


def test_a_refused_write_says_to_run_again() -> None:
    with fake_xbee(refuse={"WR": 1}) as fx, open_radio(fx.path, timeout_s=0.5) as r:
        changes = plan(r, meter_settings(address=1))
        with pytest.raises(RadioError, match=r"refused WR .*run the command again"):
            apply(r, changes)


def test_a_plan_needing_a_missing_setting_is_refused_before_queueing() -> None:
    with (
        fake_xbee(unknown=frozenset({"IU"})) as fx,
        open_radio(fx.path, timeout_s=0.5) as r,
    ):
        changes = plan(r, {"CH": 0x0D, "IU": 1})
        with pytest.raises(RadioError, match="has no IU"):
            apply(r, changes)
    assert fx.set_commands() == {}


def test_a_radio_that_goes_quiet_mid_way(radio: FakeXBee) -> None:
    with open_radio(radio.path, timeout_s=0.5) as r:
        radio.silent = True
        t0 = time.monotonic()
        with pytest.raises(RadioError, match="stopped answering while reading CH"):
            plan(r, meter_settings(address=1))
        assert time.monotonic() - t0 < 3


# -- transparent (AT) mode --------------------------------------------------------


@pytest.mark.slow
def test_factory_fresh_radio_in_transparent_mode_is_set_up_in_command_mode() -> None:
    with fake_xbee(registers={"AP": 0}) as fx:
        before = dict(fx.saved)
        target = meter_settings(address=4)
        with open_fast(fx.path) as r:
            assert r.info.link == "AT command mode"
            assert r.info.firmware == 0x10EF
            shown = {v.setting.command: v.value for v in read_settings(r)}
            assert shown == {s.command: fx.ram[s.command] for s in SETTINGS}
            apply(r, plan(r, target))
        for k, v in target.items():
            assert fx.saved[k] == v, k
        untouched(fx, before, set(target))
        assert fx.saved["AP"] == 0  # a meter needs no API mode
        at_lines = [cmd for how, cmd, _ in fx.log if how == "at"]
        assert at_lines.count("+++") == 2  # digi-xbee's probe, then ours
        assert at_lines[-3:] == ["WR", "AC", "CN"]


@pytest.mark.slow
def test_receiver_from_transparent_mode_ends_in_api_mode() -> None:
    with fake_xbee(registers={"AP": 0}) as fx:
        with open_fast(fx.path) as r:
            apply(r, plan(r, receiver_settings()))
        assert fx.saved["AP"] == 1
        with open_radio(fx.path, timeout_s=0.5) as r:  # now straight to API
            assert r.info.link == "API mode 1"


# -- failures ---------------------------------------------------------------------


@pytest.mark.slow
def test_silent_radio_fails_clearly_within_seconds() -> None:
    with fake_xbee(silent=True) as fx:
        t0 = time.monotonic()
        with pytest.raises(RadioError) as err:
            open_fast(fx.path)
        elapsed = time.monotonic() - t0
    # digi-xbee's probe: the API timeout, then +++ with its own 1 s guard times.
    assert elapsed < 8
    text = str(err.value)
    assert "no answer from an XBee" in text
    assert "--baud" in text
    assert "reset" in text


def test_missing_port_fails_at_once() -> None:
    t0 = time.monotonic()
    with pytest.raises(
        RadioError, match="does not exist: is the XBee USB adapter plugged in"
    ):
        open_radio("/dev/ttyUSB-not-there")
    assert time.monotonic() - t0 < 1


def test_port_in_use_says_who_to_stop(radio: FakeXBee) -> None:
    holder = serial.Serial(radio.path, 9600, exclusive=True)
    try:
        with pytest.raises(RadioError, match="in use: stop the program holding it"):
            open_radio(radio.path, timeout_s=0.5)
    finally:
        holder.close()


def test_port_without_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        # root opens anything; fake the error the way pyserial reports it.
        def deny(*args: object, **kwargs: object) -> None:
            raise serial.SerialException(
                13, "could not open port: [Errno 13] Permission denied"
            )

        monkeypatch.setattr("digi.xbee.serial.XBeeSerialPort.open", deny)
    with fake_xbee() as fx:
        if os.geteuid() != 0:
            os.chmod(fx.path, 0o600)
        with pytest.raises(RadioError, match="dialout"):
            open_radio(fx.path, timeout_s=0.5)


def test_wrong_firmware_family_is_named() -> None:
    # An XBee ZB (Series 2) radio: HV 19xx, firmware 21A7.
    with fake_xbee(registers={"HV": 0x1944, "VR": 0x21A7}) as fx:
        with pytest.raises(
            RadioError, match=r"runs Zigbee firmware \(VR 21A7, HV 1944\).*Series 1"
        ):
            open_radio(fx.path, timeout_s=0.5)
        assert fx.set_commands() == {}
