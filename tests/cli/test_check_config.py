from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fixtures.paths import REPO_ROOT
from wattd.cli import main

EXAMPLE = REPO_ROOT / "config" / "wattd.example.yaml"


def test_valid_config_prints_the_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTD_TEST_SECRET", "pa55-w0rd-xyz")
    path = tmp_path / "c.yaml"
    path.write_text(
        "ports: [{device: /dev/ttyUSB0}]\n"
        "mqtt: {enabled: true, username: u, password: '${WATTD_TEST_SECRET}'}\n"
    )
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"# effective config of {path}")
    effective = yaml.safe_load(out)
    assert effective["ports"][0] == {
        "device": "/dev/ttyUSB0",
        "baud": 9600,
        "api_mode": 1,
        "name": None,
    }
    assert effective["mqtt"]["password"] == "**********"
    assert "pa55-w0rd-xyz" not in out + err
    assert (
        "/dev/ttyUSB0 does not exist right now" in err or Path("/dev/ttyUSB0").exists()
    )


def test_example_config_checks_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--quiet", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == ""


def test_invalid_config_lists_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "ports:\n  - device: /dev/x\n    baudrate: 9600\nsave_interval_s: fast\n"
    )
    assert main(["check-config", str(path)]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}: 2 problems:" in err
    assert (
        f"{path}:3: ports[0].baudrate: unknown key 'baudrate'; did you mean 'baud'?"
        in err
    )
    assert f"{path}:4: save_interval_s:" in err


def test_single_problem_is_printed_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ports: [{device: /dev/x, api_mode: 5}]\n")
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert err.strip().startswith(f"{path}:1: ports[0].api_mode:")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 78
    assert "config file not found" in capsys.readouterr().err
