"""Hints name wattd the way it was started, so they work when pasted."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from wattd.cli._invocation import wattd_command


def script(directory: Path) -> Path:
    directory.mkdir(parents=True)
    path = directory / "wattd"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_wattd_not_on_path_is_named_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(tmp_path / ".venv" / "bin")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [".venv/bin/wattd", "demo"])
    assert wattd_command() == ".venv/bin/wattd"


def test_the_wattd_on_path_is_named_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = script(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [str(installed), "demo"])
    assert wattd_command() == "wattd"


def test_another_wattd_on_path_is_not_mistaken_for_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(tmp_path / "other")
    mine = script(tmp_path / "my venv" / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'other'}:/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [str(mine), "demo"])
    command = wattd_command()
    assert shlex.split(command) == [str(mine)]  # quoted: the path has a space


def test_python_dash_m_is_named_with_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    main = Path(__file__).parents[2] / "wattd" / "__main__.py"
    monkeypatch.setattr(sys, "argv", [str(main), "demo"])
    assert shlex.split(wattd_command()) == [sys.executable, "-m", "wattd"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest"])
    assert shlex.split(wattd_command()) == [sys.executable, "-m", "wattd"]
