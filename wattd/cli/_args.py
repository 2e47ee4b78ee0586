"""Argument types shared by the commands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Final

__all__ = [
    "EXIT_CONFIG",
    "SYSTEM_CONFIG",
    "add_config",
    "address",
    "config_path",
    "default_config_path",
    "positive_float",
    "positive_int",
]

# sysexits' EX_CONFIG, for every command that refuses a config: the unit file
# lists it in RestartPreventExitStatus=, so a broken config is reported once
# instead of restarting in a loop.
EXIT_CONFIG: Final = 78
SYSTEM_CONFIG: Final = Path("/etc/wattd/wattd.yaml")
CONFIG_HELP: Final = (
    "config file (default: $WATTD_CONFIG, $CONFIGURATION_DIRECTORY/wattd.yaml"
    " or /etc/wattd/wattd.yaml)"
)


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def address(text: str) -> int:
    """A radio address: decimal or 0x-hex, 16 or 64 bits."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address (decimal or 0x-hex)"
        ) from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"address {value} is out of range")
    return value


def default_config_path() -> Path:
    """``$WATTD_CONFIG``, else systemd's ``$CONFIGURATION_DIRECTORY``, else /etc."""
    env = os.environ.get("WATTD_CONFIG")
    if env:
        return Path(env)
    conf_dir = os.environ.get("CONFIGURATION_DIRECTORY")
    if conf_dir:
        return Path(conf_dir.split(":")[0]) / "wattd.yaml"
    return SYSTEM_CONFIG


def add_config(parser: argparse.ArgumentParser, help_text: str = CONFIG_HELP) -> None:
    """The ``--config``/``-c`` option every command that reads the config takes."""
    parser.add_argument(
        "--config", "-c", type=Path, default=None, metavar="FILE", help=help_text
    )


def config_path(args: argparse.Namespace) -> Path:
    """The config file named on the command line, else the default one."""
    given: Path | None = args.config
    return given if given is not None else default_config_path()
