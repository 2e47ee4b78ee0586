"""``wattd influx-test``: can wattd reach InfluxDB and write to the bucket?

Two steps, each with a message that says what to fix: ``GET /ping`` (is the URL
an InfluxDB at all?), then a write of one tiny point (are the token and the
bucket right?). The point is ``wattd_check,node=<node> ok=1`` at the current
time; ``--ping-only`` skips it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from wattd.cli import EXIT_ERROR, EXIT_OK
from wattd.cli._args import add_config, config_path
from wattd.config import load_config
from wattd.errors import SinkError
from wattd.lineprotocol import PointEncoder, escape_tag
from wattd.sinks.influx import InfluxTarget, InfluxWriter

if TYPE_CHECKING:
    import argparse

CHECK_MEASUREMENT = "wattd_check"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``influx-test`` command."""
    p = subparsers.add_parser(
        "influx-test",
        help="check the InfluxDB connection, credentials and write permission",
        description=(
            "Ping the InfluxDB server of the config's influxdb section, then write"
            f" one point ({CHECK_MEASUREMENT},node=<node> ok=1) to check the token"
            " and bucket. Exits 0 when both work."
        ),
    )
    add_config(p)
    p.add_argument(
        "--ping-only", action="store_true", help="only check that the server answers"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the check and print one line per step."""
    config = load_config(config_path(args))
    target = InfluxTarget.from_config(config.influxdb)
    node = PointEncoder.from_config(config).node or "wattd"
    if not config.influxdb.enabled:
        print("note: influxdb.enabled is false; checking the settings anyway")
    if config.influxdb.bucket is None and config.influxdb.database is None:
        print(
            "FAIL: set influxdb.bucket (InfluxDB 2.x/3.x) or influxdb.database (1.8+)"
        )
        return EXIT_ERROR
    return asyncio.run(_check(target, node, ping_only=args.ping_only))


async def _check(target: InfluxTarget, node: str, *, ping_only: bool) -> int:
    writer = InfluxWriter(target)
    try:
        try:
            version = await writer.ping()
        except SinkError as exc:
            print(f"FAIL: {_text(exc)}")
            return EXIT_ERROR
        shown = f" (version {version})" if version else ""
        print(f"ok: {target.safe_url} answers{shown}")
        if ping_only:
            return EXIT_OK
        line = f"{CHECK_MEASUREMENT},node={escape_tag(node)} ok=1 {time.time_ns()}"
        try:
            await writer.write(line.encode())
        except SinkError as exc:
            print(f"FAIL: {_text(exc)}")
            return EXIT_ERROR
        print(f"ok: wrote a test point to {target.describe()}")
        return EXIT_OK
    finally:
        await writer.close()


def _text(exc: SinkError) -> str:
    prefix = f"{exc.sink}: "
    text = str(exc)
    return text.removeprefix(prefix)
