"""The ``wattd`` command line.

Each module in this package is one command group. A module exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` to a callable
taking the parsed arguments and returning an exit code. Modules are found by
scanning the package, so a new command needs no edit here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from wattd import __version__
from wattd.errors import WattdError

log = logging.getLogger("wattd")

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser.

    With ``command``, only the module named like it (``check-config`` ->
    ``check_config``, ``influx-test`` -> ``influx``) is imported, if it
    registers that command; otherwise, and without ``command``, every command
    module is. Importing all of them would load every command's libraries
    (InfluxDB client, MQTT, report rendering...) into the long-running daemon.
    """
    names = [
        info.name
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
        if not info.name.startswith("_")
    ]
    if command is not None:
        for guess in dict.fromkeys((command.replace("-", "_"), command.split("-")[0])):
            if guess in names:
                parser, sub = _new_parser()
                _register(sub, guess)
                if command in sub.choices:
                    return parser
    parser, sub = _new_parser()
    for name in names:
        _register(sub, name)
    return parser


def _new_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="wattd",
        description="Energy telemetry for Tweet-a-Watt power meters.",
    )
    parser.add_argument("--version", action="version", version=f"wattd {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="override the log level (default: from the config, else info)",
    )
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def _register(sub: Any, name: str) -> None:
    module = importlib.import_module(f"{__name__}.{name}")
    register = getattr(module, "register", None)
    if register is not None:
        register(sub)


def _command_word(argv: Sequence[str]) -> str | None:
    """The first argument that is not a top-level option (or its value)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-level":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wattd`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_word(words))
    args = parser.parse_args(words)
    func = cast("Handler | None", getattr(args, "func", None))
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from wattd.support.logsetup import setup_logging

    setup_logging(args.log_level or "info", reconfigure=False)
    try:
        return func(args)
    except WattdError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `wattd replay ... | head` closes stdout early; that is not an error.
        return EXIT_OK
