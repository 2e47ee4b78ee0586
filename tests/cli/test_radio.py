"""``wattd radio show | setup-receiver | setup-meter`` end to end, on a fake XBee."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest

from tests.fixtures.fakexbee import fake_xbee
from wattd.cli import main

FAST = ["--timeout", "0.5"]


def lines_of(text: str) -> dict[str, str]:
    """Setting lines keyed by their AT command."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^  ([A-Z][A-Z0-9])  ", line)
        if m:
            out[m.group(1)] = line
    return out


def test_show_prints_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_xbee(registers={"MY": 5, "SP": 0xC8}) as fx:
        assert main(["radio", "show", fx.path, *FAST]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"XBee on {fx.path} at 9600 baud: firmware 10EF, hardware 1744"
    )
    shown = lines_of(out)
    assert {
        "VR",
        "HV",
        "CH",
        "ID",
        "MY",
        "DH",
        "DL",
        "AP",
        "BD",
        "SM",
        "ST",
        "SP",
    } <= set(shown)
    assert {"D0", "D4", "IT", "IR", "IU", "EE"} <= set(shown)
    assert re.search(r"\bMY\b.*\b5\b.*sensor 5", shown["MY"])
    assert re.search(r"\bSP\b.*\bC8\b.*2\.00 s", shown["SP"])
    assert fx.set_commands() == {}
    assert fx.writes == 0


def test_setup_receiver_prints_old_and_new_and_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_xbee(registers={"ID": 0x3137, "IR": 0x14, "D0": 2}) as fx:
        argv = [
            "radio",
            "setup-receiver",
            fx.path,
            "--pan-id",
            "3137",
            "--api-mode",
            "2",
        ]
        assert main([*argv, *FAST]) == 0
    out = capsys.readouterr().out
    shown = lines_of(out)
    assert re.search(r"3137 -> 3137\s+\(unchanged\)", shown["ID"])
    assert re.search(r"\b14 -> 0\b", shown["IR"])
    assert re.search(r"\b2 -> 0\b", shown["D0"])
    assert re.search(r"\b1 -> 2\b", shown["AP"])
    assert "(unchanged)" in shown["MY"]
    assert "(unchanged)" not in shown["AP"]
    assert "Changed 3 of 10 settings, saved them (WR)" in out
    assert "set serial.api_mode to match" in out
    assert "This coordinator uses PAN ID 3137. More than one coordinator" in out
    assert fx.set_commands() == {"IR": 0, "D0": 0, "AP": 2}
    assert (fx.saved["IR"], fx.saved["D0"], fx.saved["AP"]) == (0, 0, 2)


def test_setup_meter_dry_run_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_xbee() as fx:
        before = (dict(fx.saved), dict(fx.ram))
        argv = ["radio", "setup-meter", fx.path, "--address", "12", "--dry-run", *FAST]
        assert main(argv) == 0
        assert (fx.saved, fx.ram) == before
        assert fx.set_commands() == {}
        assert "WR" not in fx.commands
    out = capsys.readouterr().out
    shown = lines_of(out)
    assert re.search(r"\b0 -> C\b.*sensor 12", shown["MY"])
    assert re.search(r"\b1 -> 13\b.*19", shown["IT"])
    assert "Dry run: 8 of 13 settings would change; nothing written." in out


def test_setup_meter_writes_the_transmitter_profile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_xbee() as fx:
        argv = [
            "radio",
            "setup-meter",
            fx.path,
            "--address",
            "0x3",
            "--channel",
            "0x0e",
        ]
        assert main([*argv, *FAST]) == 0
        expected = {
            "CH": 0x0E,
            "MY": 3,
            "SM": 4,
            "ST": 3,
            "SP": 0xC8,
            "D0": 2,
            "D4": 2,
            "IT": 0x13,
            "IR": 1,
        }
        assert fx.set_commands() == expected
        assert {k: fx.saved[k] for k in expected} == expected
    out = capsys.readouterr().out
    assert "Changed 9 of 13 settings" in out
    # Running it again finds nothing to do.
    with fake_xbee(registers=expected) as fx:
        assert main([*argv, *FAST]) == 0
        assert fx.writes == 0
    assert "All 13 settings already match; nothing to write." in capsys.readouterr().out


def test_errors_exit_1_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="wattd")
    assert main(["radio", "show", "/dev/ttyUSB-not-there"]) == 1
    assert "does not exist" in caplog.text
    caplog.clear()
    assert main(["radio", "setup-receiver", "/dev/null", "--channel", "30"]) == 1
    assert "channel 0x30 does not exist on 802.15.4" in caplog.text
    caplog.clear()
    with fake_xbee(refuse={"SM": 1}) as fx:
        assert main(["radio", "setup-meter", fx.path, "--address", "1", *FAST]) == 1
        assert fx.writes == 0
    assert "refused SM=4 (Status Error)" in caplog.text


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["radio", "setup-meter", "/dev/null", "--channel", "zz", "--address", "1"])
    assert exc.value.code == 2
    assert "'zz' is not a hex number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["radio", "setup-meter", "/dev/null"])  # --address is required
    assert "--address" in capsys.readouterr().err


@pytest.mark.slow
def test_silent_radio_through_the_console_script() -> None:
    with fake_xbee(silent=True) as fx:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "wattd",
                "radio",
                "show",
                fx.path,
                "--timeout",
                "0.5",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 1
    assert "no answer from an XBee" in proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
