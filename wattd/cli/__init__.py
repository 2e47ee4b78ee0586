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
from typing import cast

from wattd import __version__
from wattd.errors import WattdError

log = logging.getLogger("wattd")

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every command registered."""
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wattd`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = cast("Handler | None", getattr(args, "func", None))
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from wattd.logsetup import setup_logging  # noqa: PLC0415 - after parsing

    setup_logging(args.log_level or "info", reconfigure=False)
    try:
        return func(args)
    except WattdError as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `wattd replay ... | head` closes stdout early; that is not an error.
        return EXIT_OK
