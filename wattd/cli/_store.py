"""The central-store options of the fleet commands (``--source`` and its company).

``wattd report --source`` and ``wattd fleet status`` read the same store the
same way: ``--source KIND=URL``, InfluxDB's database and retention policy,
and a user whose password comes from a file or the environment, never from
the command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from wattd.errors import TsdbError

if TYPE_CHECKING:
    from wattd.clients.tsdb import TsdbReader
    from wattd.config import Config

__all__ = [
    "MAX_PASSWORD_BYTES",
    "PASSWORD_ENV",
    "SOURCE_HELP",
    "Source",
    "add_store_options",
    "open_store",
    "source_arg",
    "store_password",
    "store_usage",
]

PASSWORD_ENV: Final = "WATTD_SOURCE_PASSWORD"  # noqa: S105 - a variable's name
"""Where the store's password comes from without --password-file."""
MAX_PASSWORD_BYTES: Final = 64 * 1024
SOURCE_HELP: Final = (
    "the fleet's central store: victoriametrics=URL or influxdb=URL"
    " (InfluxDB 1.x or 3, InfluxQL)"
)


class Source(NamedTuple):
    """A central store given as ``--source KIND=URL``."""

    kind: str
    url: str


def source_arg(text: str) -> Source:
    """``victoriametrics=URL`` or ``influxdb=URL`` (argparse type)."""
    from wattd.clients.tsdb import KINDS

    kind, sep, url = text.partition("=")
    if not sep or kind not in KINDS or not url:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KIND=URL with KIND one of {', '.join(KINDS)}"
            " (for example victoriametrics=http://vm:8428)"
        )
    return Source(kind, url)


def add_store_options(parser: argparse.ArgumentParser, title: str) -> None:
    """``--database``, ``--retention-policy``, ``--username``, ``--password-file``."""
    group = parser.add_argument_group(title)
    group.add_argument(
        "--database",
        metavar="NAME",
        help="InfluxDB database (default: influxdb.database of the config)",
    )
    group.add_argument(
        "--retention-policy",
        metavar="NAME",
        help="InfluxDB retention policy (default: influxdb.retention_policy of the"
        " config, else the database's default)",
    )
    group.add_argument(
        "--username", metavar="NAME", help="user for HTTP basic auth on the store"
    )
    group.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the user's password (default: ${PASSWORD_ENV})",
    )


def store_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with the central-store options, if anything."""
    given = [
        option
        for option, value in (
            ("--database", args.database),
            ("--retention-policy", args.retention_policy),
            ("--username", args.username),
            ("--password-file", args.password_file),
        )
        if value is not None
    ]
    if args.source is None:
        return f"{given[0]} goes with --source" if given else None
    if args.source.kind != "influxdb":
        for option in ("--database", "--retention-policy"):
            if option in given:
                return f"{option} is for --source influxdb=URL"
    if args.password_file is not None and args.username is None:
        return "--password-file goes with --username"
    return None


def open_store(config: Config, args: argparse.Namespace) -> TsdbReader:
    """The reader of ``--source``, with the config's InfluxDB settings as defaults.

    Raises:
        TsdbError: a bad URL, no database for InfluxDB, or no password.
    """
    from wattd.clients.tsdb import open_reader

    source: Source = args.source
    return open_reader(
        source.kind,
        source.url,
        measurement=config.influxdb.measurement,
        database=args.database or config.influxdb.database,
        retention_policy=args.retention_policy or config.influxdb.retention_policy,
        username=args.username,
        password=store_password(args) if args.username is not None else None,
    )


def store_password(args: argparse.Namespace) -> str:
    """The store password from --password-file, else from the environment.

    Raises:
        TsdbError: neither is there, or the file is unreadable or blank.
    """
    path: Path | None = args.password_file
    if path is None:
        secret = os.environ.get(PASSWORD_ENV, "").strip()
        if not secret:
            raise TsdbError(
                f"--username {args.username} needs a password: give --password-file"
                f" FILE or set ${PASSWORD_ENV}"
            )
        return secret
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TsdbError(f"cannot read --password-file {path}: {reason}") from None
    text = data.decode("utf-8", "replace").strip()
    if len(data) > MAX_PASSWORD_BYTES or not text or "\n" in text:
        raise TsdbError(
            f"--password-file {path} should hold just the password on one line"
        )
    return text
