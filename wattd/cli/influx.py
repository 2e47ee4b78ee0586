"""``wattd influx-test``: can wattd reach InfluxDB and write to the bucket?

Two steps, each with a message that says what to fix: ``GET /ping`` (is the URL
an InfluxDB at all?), then a write of one tiny point (are the token and the
bucket right?). The point is ``wattd_check,node=<node> ok=1`` at the current
time; ``--ping-only`` skips it.

With a bucket, wattd writes through the InfluxDB 2.x API, which 1.x servers
have from 1.8 on. An older 1.x server answers the ping (with its version) and
then 404 to the write, which is reported as what it is rather than as a missing
bucket. With a database (``api: v1``, or ``auto``), the point goes through 1.x's
own ``/write``, and a missing database is named with the ``CREATE DATABASE``
that makes it.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Final

from wattd.cli import EXIT_ERROR, EXIT_OK
from wattd.cli._args import add_config, config_path
from wattd.clients.influx import InfluxNotFound, InfluxTarget, InfluxWriter
from wattd.config import load_config
from wattd.errors import SinkError
from wattd.sinks.influx.lineprotocol import PointEncoder, escape_tag

if TYPE_CHECKING:
    import argparse

CHECK_MEASUREMENT = "wattd_check"
V2_API_SINCE: Final = (1, 8)
"""The first InfluxDB 1.x release with the 2.x write API (/api/v2/write)."""
_RELEASE: Final = re.compile(r"v?(\d+)\.(\d+)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``influx-test`` command."""
    p = subparsers.add_parser(
        "influx-test",
        help="check the InfluxDB connection, credentials and write permission",
        description=(
            "Ping the InfluxDB server of the config's influxdb section, then write"
            f" one point ({CHECK_MEASUREMENT},node=<node> ok=1) to check the token"
            " and bucket (or database). Exits 0 when both work."
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
        print("FAIL: set influxdb.bucket (InfluxDB 2.x/3.x) or influxdb.database (1.x)")
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
        old_1x = target.api == "v2" and lacks_v2_api(version)
        if ping_only:
            if old_1x:
                print(f"note: {_old_1x_text(target, version)}")
            return EXIT_OK
        line = f"{CHECK_MEASUREMENT},node={escape_tag(node)} ok=1 {time.time_ns()}"
        try:
            await writer.write(line.encode())
        except InfluxNotFound as exc:
            if old_1x:
                print(f"FAIL: {_old_1x_text(target, version)}")
            else:
                print(f"FAIL: {_text(exc)}")
            return EXIT_ERROR
        except SinkError as exc:
            print(f"FAIL: {_text(exc)}")
            return EXIT_ERROR
        print(f"ok: wrote a test point to {target.describe()}")
        return EXIT_OK
    finally:
        await writer.close()


def lacks_v2_api(version: str) -> bool:
    """True for an InfluxDB 1.x version older than 1.8 (``1.6.7~rc0``, ``v1.7.11``)."""
    found = _RELEASE.match(version.strip())
    if found is None:
        return False
    release = (int(found[1]), int(found[2]))
    return release[0] == 1 and release < V2_API_SINCE


def _old_1x_text(target: InfluxTarget, version: str) -> str:
    if target.database:
        fix = "Set influxdb.api to v1 (or auto) to write through its native /write API"
    else:
        fix = (
            "Set influxdb.database instead of bucket (with username and password if"
            " auth is on) to write through its native /write API"
        )
    return (
        f"{target.safe_url} is InfluxDB {version}, a 1.x server without the v2 API"
        " that wattd writes through with api v2 (/api/v2/write answers 404;"
        f" InfluxDB 1.8 and later have it). {fix}, or point url at InfluxDB 2.x,"
        " 3.x or Cloud"
    )


def _text(exc: SinkError) -> str:
    prefix = f"{exc.sink}: "
    text = str(exc)
    return text.removeprefix(prefix)
