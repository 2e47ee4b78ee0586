"""``wattd check-config``: validate a config and show what it amounts to."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from wattd.cli._args import EXIT_CONFIG
from wattd.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd check-config``."""
    parser = subparsers.add_parser(
        "check-config",
        help="validate a config file and print the effective config",
        description=(
            "Validate FILE. If it is valid, print the effective config (every"
            " default filled in, secrets masked) and exit 0; otherwise print each"
            " problem with file, line and key and exit 78 (EX_CONFIG), as `run` does."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the YAML config")
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="print nothing when the config is valid",
    )
    parser.set_defaults(func=check_config_command)


def check_config_command(args: argparse.Namespace) -> int:
    """Validate, then print the effective config or the errors."""
    from wattd.config import dump_effective, load_config

    path: Path = args.file
    try:
        config = load_config(path)
    except ConfigErrors as exc:
        print(f"{path}: {len(exc.errors)} problems:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    if not config.ports:
        # Valid for the commands that only read the store; `run` refuses it.
        what = "configures no ports" if config.model_fields_set else "sets nothing"
        print(
            f"warning: {path} {what}, so `wattd run` has nothing to read and exits"
            " with status 78; add a serial port under ports: (see"
            " config/wattd.example.yaml)",
            file=sys.stderr,
        )
    for device in (p.device for p in config.ports):
        # Not an error: the daemon waits for an adapter that is unplugged now.
        if not os.path.exists(device):
            print(
                f"note: {device} does not exist right now; wattd will wait for it",
                file=sys.stderr,
            )
    if not args.quiet:
        print(f"# effective config of {path} (secrets masked)")
        sys.stdout.write(dump_effective(config))
    return 0
