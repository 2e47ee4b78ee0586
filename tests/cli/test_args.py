from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pytest

from wattd.cli import main
from wattd.cli._args import (
    SYSTEM_CONFIG,
    address,
    config_path,
    default_config_path,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from pathlib import Path


def test_default_config_prefers_wattd_config_then_systemd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("WATTD_CONFIG", raising=False)
    monkeypatch.delenv("CONFIGURATION_DIRECTORY", raising=False)
    assert default_config_path() == SYSTEM_CONFIG
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", f"{tmp_path}/etc:/other")
    assert default_config_path() == tmp_path / "etc" / "wattd.yaml"
    monkeypatch.setenv("WATTD_CONFIG", str(tmp_path / "mine.yaml"))
    assert default_config_path() == tmp_path / "mine.yaml"
    given = argparse.Namespace(config=tmp_path / "given.yaml")
    assert config_path(given) == tmp_path / "given.yaml"
    assert config_path(argparse.Namespace(config=None)) == tmp_path / "mine.yaml"


@pytest.mark.parametrize("command", ["mqtt-test", "influx-test", "report", "spool"])
def test_commands_find_the_default_config(
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = tmp_path / "nowhere.yaml"
    monkeypatch.setenv("WATTD_CONFIG", str(missing))
    argv = [command, "status"] if command == "spool" else [command]
    assert main(argv) != 0
    assert str(missing) in caplog.text


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_int, "0", "at least 1"),
        (positive_int, "x", "not a whole number"),
        (positive_float, "inf", "finite number > 0"),
        (positive_float, "-1", "finite number > 0"),
        (address, "0xZZ", "not an address"),
        (address, "-1", "out of range"),
    ],
)
def test_bad_values_are_explained(parse: object, text: str, message: str) -> None:
    assert callable(parse)
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def test_good_values_parse() -> None:
    assert positive_int("3") == 3
    assert positive_float("0.5") == 0.5
    assert address("0x10") == 16
    assert address("17") == 17
