"""``wattd run``: the daemon in the foreground (systemd runs exactly this)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from wattd.cli._args import EXIT_CONFIG, add_config, config_path
from wattd.errors import ConfigError

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("wattd")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd run``."""
    parser = subparsers.add_parser(
        "run",
        help="run the daemon (reads ports, writes sinks) until stopped",
        description=(
            "Run the daemon in the foreground. SIGTERM or SIGINT stops it after"
            " flushing every sink and saving the state; SIGHUP reloads the config"
            " (a bad new config is logged and the old one keeps running)."
        ),
    )
    add_config(parser)
    parser.add_argument(
        "--flush-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds the sinks get to flush at shutdown (default: 10)",
    )
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Load the config and run the supervisor until a stop signal."""
    from wattd.config import load_config
    from wattd.daemon.supervisor import Supervisor
    from wattd.support.logsetup import setup_logging

    path = config_path(args)
    try:
        config = load_config(path)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    if not config.ports:
        log.error(
            "%s: no ports configured, so there is nothing to read; add a serial"
            " port under ports: (see config/wattd.example.yaml)",
            path,
        )
        return EXIT_CONFIG
    setup_logging(
        args.log_level or config.logging.level, config.logging.format, reconfigure=True
    )

    async def main() -> None:
        supervisor = Supervisor(
            config,
            config_path=path,
            flush_timeout_s=args.flush_timeout,
            handle_signals=True,
            log_level=args.log_level,
        )
        await supervisor.run()

    try:
        asyncio.run(main())
    except ConfigError as exc:
        # A sink section that validated but cannot be used (missing module...).
        log.error("%s", exc)
        return EXIT_CONFIG
    return 0
